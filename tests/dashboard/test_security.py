"""What the dashboard refuses: logs outside the folder it was told about, writes through Optuna's
storage, an unbounded cache of fronts, and an open address without a token."""

from __future__ import annotations

import html
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from autotune.cli.dashboard import dashboard
from autotune.dashboard import create_app
from autotune.store import open_catalog
from autotune.store.synthetic import point_log, write_study
from tests.support.dashboard import MIXED, MIXED_KINDS, study_id

FAILED = MIXED_KINDS.index("X")


@pytest.fixture
def study(tmp_path: Path) -> tuple[str, int]:
    url = f"sqlite:///{tmp_path / 'sec.db'}"
    write_study(url, MIXED, MIXED_KINDS, seed=3)
    return url, study_id(url, MIXED)


def test_a_log_outside_the_dashboards_log_folder_is_refused(study, tmp_path):
    url, sid = study
    logs = tmp_path / "logs"
    (logs / MIXED).mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret = elsewhere / "secret.log"
    secret.write_text("SECRET\n")  # a *.log, alone in its own folder: allowed before
    point_log(url, MIXED, FAILED, str(secret))
    with TestClient(create_app(open_catalog(url), log_dir=logs)) as client:
        page = html.unescape(client.get(f"/studies/{sid}/trials/{FAILED}").text)
        assert "SECRET" not in page
        assert "outside the dashboard's log folder" in page
        assert client.get(f"/api/studies/{sid}/trials/{FAILED}").json()["log_tail"] is None
        refused = client.get(f"/api/studies/{sid}/trials/{FAILED}/log")
        assert refused.status_code == 404
        assert "outside the dashboard's log folder" in refused.json()["detail"]
        assert "--log-dir" in refused.json()["detail"]
    inside = logs / MIXED / "trial-0004.log"
    inside.write_text("INFO served\n")
    point_log(url, MIXED, FAILED, str(inside))  # a settled trial: a new app reads it again
    with TestClient(create_app(open_catalog(url), log_dir=logs)) as client:
        served = client.get(f"/api/studies/{sid}/trials/{FAILED}/log")
        assert served.status_code == 200 and served.text == "INFO served"


def test_trial_pages_never_create_optuna_tables(study, monkeypatch):
    url, sid = study
    calls: list[Any] = []
    create_all = sqlalchemy.MetaData.create_all

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(args)
        create_all(self, *args, **kwargs)

    with TestClient(create_app(open_catalog(url))) as client:
        monkeypatch.setattr(sqlalchemy.MetaData, "create_all", spy)
        for number in range(3):
            assert client.get(f"/studies/{sid}/trials/{number}").status_code == 200
        assert client.get(f"/api/studies/{sid}/figures").status_code == 200
    assert calls == []


def test_the_fronts_kept_per_study_are_bounded(study):
    url, sid = study
    app = create_app(open_catalog(url))
    with TestClient(app) as client:
        names = client.get(f"/api/studies/{sid}").json()["metrics"]
        picks = [c for k in (1, 2, 3) for c in combinations(names, k)][:150]
        assert len(picks) > 100
        for pick in picks:
            assert client.get(f"/api/studies/{sid}/front",
                              params={"metrics": ",".join(pick)}).status_code == 200
        snapshot = app.state.data.study(sid)
        assert len(snapshot.fronts) <= 65  # 64 picked, and the objectives'
        assert tuple(snapshot.report.metrics) in snapshot.fronts


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(dashboard)
    return app


def test_an_open_address_without_a_token_is_refused(study, monkeypatch):
    url, _ = study
    served: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: served.update(app=app))
    monkeypatch.delenv("AUTOTUNE_DASHBOARD_TOKEN", raising=False)
    result = CliRunner().invoke(cli(), ["--storage", url, "--host", "0.0.0.0"])
    assert result.exit_code == 2, result.output
    assert "--token-file" in result.output and served == {}
    loopback = CliRunner().invoke(cli(), ["--storage", url, "--host", "127.0.0.1"])
    assert loopback.exit_code == 0, loopback.output
