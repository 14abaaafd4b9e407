"""Fixtures shared by the unit tests that drive the mock OpenAI server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from autotune.testing.mock_openai import MockOpenAI


@pytest.fixture(scope="module")
def module_server() -> Iterator[MockOpenAI]:
    """One mock server per test module (starting one per test would dominate the run)."""
    with MockOpenAI() as server:
        yield server


@pytest.fixture
def server(module_server: MockOpenAI) -> MockOpenAI:
    """The module's mock server, its behaviour and records reset for this test (a module may
    define its own ``server`` instead)."""
    module_server.reset()
    return module_server
