"""The dashboard never writes to the storage, Optuna's figure helpers included: after every page,
every endpoint and every figure of every study, the SQLite file is byte for byte the same, and
every PostgreSQL table holds the same rows."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from autotune.store.synthetic import write_study
from tests.support.dashboard import MIXED


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _row_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def _render_everything(client) -> int:
    """Every page, endpoint and figure of every study; how many Optuna figures were drawn."""
    drawn = 0
    for study in client.get("/api/studies").json():
        base = f"/api/studies/{study['id']}"
        for route in ("", "/trials", "/front", "/trials/0"):
            assert client.get(base + route).status_code in (200, 404), route
        assert client.get(f"/studies/{study['id']}").status_code == 200
        figures = client.get(base + "/figures").json()
        drawn += (figures["history"] is not None) + (figures["importance"] is not None)
        if study["name"] == MIXED:  # the hypervolume history and importance both ran
            assert figures["history"] is not None and figures["importance"] is not None
    assert client.get("/").status_code == 200
    return drawn


@pytest.mark.parametrize("source", ["quickstart_url", "studies_url"])
def test_rendering_every_figure_writes_nothing(source, request, tmp_path, client_for):
    original = Path(request.getfixturevalue(source).removeprefix("sqlite:///"))
    path = tmp_path / "copy.db"
    shutil.copy(original, path)
    before, counts = _digest(path), _row_counts(path)
    client = client_for(f"sqlite:///{path}")
    assert _render_everything(client) >= 1  # the quickstart has no feasible trial: importance
    client.close()

    assert _row_counts(path) == counts
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db"]  # no journal left behind


ROWS_DIGEST = "SELECT count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), ''))"


def _contents(url: str) -> dict[str, tuple[int, str]]:
    """Each table's row count and a digest of its rows."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            return {t: tuple(db.execute(sa.text(f'{ROWS_DIGEST} FROM "{t}" r')).one())
                    for t in sa.inspect(db).get_table_names()}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_rendering_every_figure_writes_nothing_to_postgres(postgres_url, client_for):
    write_study(postgres_url, MIXED, "FVFFXFVF", seed=3)
    before = _contents(postgres_url)
    client = client_for(postgres_url)
    assert _render_everything(client) == 2
    client.close()
    assert _contents(postgres_url) == before
