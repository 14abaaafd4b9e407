"""A storage URL's password is never printed: every command shows the URL through one helper
(``autotune.cli.common.shown_url``), with the password masked.

SQLite takes no password, so the commands get a PostgreSQL URL with one while the store they
open is redirected to a real SQLite database: what is printed is the URL given, what is read and
written is real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autotune import cli, store
from autotune.store.db.session import ensure_schema

SECRET = "s3cret-pw"
URL = f"postgresql+psycopg://tuner:{SECRET}@db.example:5432/autotune"


@pytest.fixture
def sqlite_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Every storage the commands open is this SQLite file, whatever URL they were given."""
    real = f"sqlite:///{tmp_path / 'real.db'}"
    open_catalog, upgrade = store.open_catalog, store.upgrade_schema
    monkeypatch.setattr(store, "open_catalog", lambda _url: open_catalog(real))
    monkeypatch.setattr(store, "upgrade_schema", lambda _url: upgrade(real))
    return real


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args))


def test_shown_url_masks_the_password_only() -> None:
    from autotune.cli.common import shown_url

    assert shown_url(URL) == "postgresql+psycopg://tuner:***@db.example:5432/autotune"
    assert shown_url("sqlite:///autotune.db") == "sqlite:///autotune.db"


def test_db_upgrade_does_not_print_the_password(sqlite_behind: str) -> None:
    result = _run("db", "upgrade", "--storage", URL)
    assert result.exit_code == 0, result.output
    assert "tuner:***@db.example" in result.output and SECRET not in result.output


def test_study_list_does_not_print_the_password(sqlite_behind: str) -> None:
    result = _run("study", "list", "--storage", URL)
    assert result.exit_code == 0, result.output
    assert "tuner:***@db.example" in result.output and SECRET not in result.output
    ensure_schema(sqlite_behind)
    result = _run("study", "list", "--storage", URL)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output


def test_worker_for_an_unknown_study_does_not_print_the_password(sqlite_behind: str) -> None:
    ensure_schema(sqlite_behind)
    result = _run("worker", "--study", "nope", "--storage", URL)
    assert result.exit_code != 0
    assert "no study named 'nope'" in result.output
    assert "tuner:***@db.example" in result.output and SECRET not in result.output


def test_dashboard_does_not_print_the_password(sqlite_behind: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: None)
    result = _run("dashboard", "--storage", URL)
    assert result.exit_code == 0, result.output
    assert "tuner:***@db.example" in result.output and SECRET not in result.output
