"""Storages for the dashboard tests: the recorded CPU quickstart and synthetic studies written
through autotune's repository and Optuna (autotune/store/synthetic.py); their names are
in tests/support/dashboard.py. The browser fixtures (``context``, ``page``) drive Debian's
headless Chromium through Playwright; screenshots go to test-output/dashboard/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from autotune.dashboard import create_app
from autotune.store import open_catalog, upgrade_schema
from autotune.store.synthetic import write_study
from autotune.testing.live_server import CHROMIUM, CHROMIUM_ARGS
from tests.support.dashboard import (
    HOSTILE,
    HOSTILE_PARAM,
    MIXED,
    MIXED_KINDS,
    ONLY_FAILED,
    QUICKSTART_DB,
)

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "dashboard"


@pytest.fixture(scope="session")
def quickstart_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("quickstart") / "quickstart.db"
    shutil.copy(QUICKSTART_DB, path)
    url = f"sqlite:///{path}"
    upgrade_schema(url)
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

    def make(url: str, token: str | None = None, log_dir: Path | None = None,
             **kwargs: object) -> TestClient:
        client = TestClient(create_app(open_catalog(url), token, log_dir=log_dir), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def context() -> Iterator:
    """One browser context for the module, so plotly.js is fetched and compiled once."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                      accept_downloads=True)
        context.problems = []

        def offline(route) -> None:  # noqa: ANN001
            if urlparse(route.request.url).hostname != "127.0.0.1":
                context.problems.append(f"request to another host: {route.request.url}")
                route.abort()
            else:
                route.continue_()

        context.route("**/*", offline)
        yield context
        browser.close()


@pytest.fixture
def page(context, request) -> Iterator:
    page = context.new_page()
    problems = context.problems
    problems.clear()
    page.on("pageerror", lambda error: problems.append(f"JavaScript error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"),
                                      dialog.dismiss()))
    shots = 0

    def shot(name: str) -> None:
        nonlocal shots
        shots += 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SHOTS / f"{request.node.name}-{shots}-{name}.png", full_page=True)

    page.shot = shot
    yield page
    page.close()
    assert problems == []
