from __future__ import annotations

import os
from pathlib import Path

import pytest

import tests.support.processes  # noqa: F401  (marks this session's processes: see there)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (see tests/support/pg_server.py)."""
    from tests.support.pg_server import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The quickstart's demo model, built once (cached in ~/.cache/autotune).

    AUTOTUNE_TEST_MODEL=DIR runs the engine tests on another local model directory instead
    (e.g. while the demo model's recipe is being changed)."""
    from autotune.demo_model import build_demo_model

    override = os.environ.get("AUTOTUNE_TEST_MODEL")
    if override:
        return Path(override)
    return build_demo_model(os.path.expanduser("~/.cache/autotune/demo-llama"))
