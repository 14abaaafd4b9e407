"""The dashboard never writes to the storage, Optuna's figure helpers included: after every page,
every endpoint and every figure of every study, the SQLite file is byte for byte the same."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from autotune.store import open_catalog
from tests.support.dashboard import MIXED


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _row_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


@pytest.mark.parametrize("source", ["quickstart_url", "studies_url"])
def test_rendering_every_figure_writes_nothing(source, request, tmp_path, client_for):
    original = Path(request.getfixturevalue(source).removeprefix("sqlite:///"))
    path = tmp_path / "copy.db"
    shutil.copy(original, path)
    url = f"sqlite:///{path}"
    before, counts = _digest(path), _row_counts(path)
    client = client_for(url)

    drawn = 0
    for study in open_catalog(url).list_studies():
        base = f"/api/studies/{study.id}"
        for route in ("", "/trials", "/front", "/trials/0"):
            assert client.get(base + route).status_code in (200, 404), route
        assert client.get(f"/studies/{study.id}").status_code == 200
        figures = client.get(base + "/figures").json()
        drawn += (figures["history"] is not None) + (figures["importance"] is not None)
        if study.name == MIXED:  # the hypervolume history and importance both ran
            assert figures["history"] is not None and figures["importance"] is not None
    assert drawn >= 1  # the quickstart has no feasible trial: importance only
    assert client.get("/").status_code == 200
    client.close()

    assert _row_counts(path) == counts
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db"]  # no journal left behind
