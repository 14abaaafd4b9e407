"""Storages for the dashboard tests: the recorded CPU quickstart and synthetic studies written
through autotune's repository and Optuna (tests/fixtures/dashboard/dashboard_studies.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from autotune.dashboard import create_app
from autotune.db.repository import list_studies
from autotune.db.session import upgrade
from tests.fixtures.dashboard.dashboard_studies import write_study

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dashboard"
# A real study recorded by `autotune study start` on the CPU quickstart: 3 complete trials, all
# over the TTFT SLO. Stored at the revision it was written with; tests upgrade a copy.
QUICKSTART_DB = FIXTURES / "quickstart-cpu.db"
QUICKSTART = "quickstart-cpu"
# One letter per trial (F feasible, V violates an SLO, X failed, R running); trial 0 is the
# vLLM-default one.
MIXED_KINDS = "FVFFXFVFFXFFVFR"
MIXED = "mixed"
ONLY_FAILED = "only-failed"
HOSTILE = "<script>alert('study')</script>"
HOSTILE_PARAM = "<img src=x onerror=alert('param')>"


def study_id(url: str, name: str) -> int:
    return next(s.id for s in list_studies(url=url) if s.name == name)


@pytest.fixture(scope="session")
def quickstart_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("quickstart") / "quickstart.db"
    shutil.copy(QUICKSTART_DB, path)
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def studies_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A mixed study, a study whose every trial failed, and one named to attack the page."""
    url = f"sqlite:///{tmp_path_factory.mktemp('studies') / 'studies.db'}"
    write_study(url, MIXED, MIXED_KINDS, seed=3)
    write_study(url, ONLY_FAILED, "XXX", seed=4)
    write_study(url, HOSTILE, "FFV", seed=5, model="<b>model</b>", param_note=HOSTILE_PARAM)
    return url


@pytest.fixture
def empty_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
def client_for() -> Iterator:
    """``client_for(url, token=None)``: a TestClient over a fresh app (closed afterwards)."""
    clients: list[TestClient] = []

    def make(url: str, token: str | None = None, **kwargs: object) -> TestClient:
        client = TestClient(create_app(url, token), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
