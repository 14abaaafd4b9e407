from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import autotune.testing.processes  # noqa: F401  (marks this session's processes: see there)
from autotune.testing.mock_openai import MockOpenAI


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (see autotune/testing/pg_server.py)."""
    from autotune.testing.pg_server import PostgresServer

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
    from autotune.model.demo import build_demo_model

    override = os.environ.get("AUTOTUNE_TEST_MODEL")
    if override:
        return Path(override)
    return build_demo_model(os.path.expanduser("~/.cache/autotune/demo-llama"))


# The engine shared by the tests that only need a serving demo engine (tests/support/
# shared_engine.py): started on first use, its users run one after another, stopped after the
# last of them.
_shared_engines = []


@pytest.fixture(scope="session")
def shared_engines(tmp_path_factory):
    from tests.support.shared_engine import SharedEngines

    engines = SharedEngines(tmp_path_factory.mktemp("shared-engine"))
    _shared_engines.append(engines)
    yield engines
    engines.stop()
    _shared_engines.remove(engines)


@pytest.fixture(scope="module")
def shared_engine(shared_engines, demo_model: Path):
    """The running shared engine, its prefix cache emptied for this module."""
    running = shared_engines.get(demo_model)
    running.reset_prefix_cache()
    return running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from tests.support.shared_engine import FIXTURE

    users = [item for item in items if FIXTURE in getattr(item, "fixturenames", ())]
    if users:
        first, moved = items.index(users[0]), set(users)
        rest = [item for item in items if item not in moved]
        items[:] = rest[:first] + users + rest[first:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    yield
    from tests.support.shared_engine import FIXTURE

    if (_shared_engines and FIXTURE in getattr(item, "fixturenames", ())
            and (nextitem is None or FIXTURE not in getattr(nextitem, "fixturenames", ()))):
        _shared_engines[0].stop()


# The mock OpenAI server of the driver's tests (tests/bench, tests/trial).
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
