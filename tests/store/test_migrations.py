"""Every Alembic revision we ship has a committed database asset (tests/fixtures/migrations/
REV.db, made by make_asset.py); each is upgraded to head on SQLite and on PostgreSQL, and its
rows must survive."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, insert, inspect, select

from autotune.results.report import load_report
from autotune.store import open_catalog
from autotune.store.db.session import (
    alembic_config,
    current_revision,
    get_engine,
    head_revision,
    upgrade,
)

ASSETS = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"
REVISIONS = [s.revision for s in
             ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()]


def test_every_revision_has_an_asset() -> None:
    assert sorted(REVISIONS) == sorted(p.stem for p in ASSETS.glob("*.db"))


def _check_upgraded(url: str) -> None:
    assert current_revision(url) == head_revision()
    columns = {c["name"] for c in inspect(get_engine(url)).get_columns("autotune_trials")}
    assert {"retry_of", "failure_kind", "engine_command"} <= columns
    report = load_report(open_catalog(url), "asset")
    assert [t.state for t in report.trials] == ["complete", "failed"]
    assert report.trials[0].metrics == {"output_throughput": 900.0}
    assert report.trials[1].failure_kind == "unsupported"


@pytest.mark.parametrize("revision", REVISIONS)
def test_upgrade_asset_on_sqlite(revision: str, tmp_path: Path) -> None:
    db = tmp_path / "asset.db"
    shutil.copy(ASSETS / f"{revision}.db", db)
    url = f"sqlite:///{db}"
    assert current_revision(url) == revision
    upgrade(url)
    _check_upgraded(url)


@pytest.mark.postgres
@pytest.mark.parametrize("revision", REVISIONS)
def test_upgrade_asset_on_postgres(revision: str, postgres_url: str) -> None:
    """The asset's schema is made on PostgreSQL by the same revisions, its rows copied in,
    then the database is upgraded to head."""
    upgrade(postgres_url, revision)
    source = get_engine(f"sqlite:///{ASSETS / f'{revision}.db'}")
    meta = MetaData()
    meta.reflect(source, only=["autotune_studies", "autotune_trials"])
    target_meta = MetaData()
    target_meta.reflect(get_engine(postgres_url), only=["autotune_studies", "autotune_trials"])
    with source.connect() as src, get_engine(postgres_url).begin() as dst:
        for name in ("autotune_studies", "autotune_trials"):
            for row in src.execute(select(meta.tables[name])).mappings():
                dst.execute(insert(target_meta.tables[name]).values(dict(row)))
    upgrade(postgres_url)
    _check_upgraded(postgres_url)
