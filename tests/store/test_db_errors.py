"""Database errors on a real SQLite file: only a lost connection (a busy or locked database) is
worth retrying; a full disk or missing tables fail at once, saying what to do."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from autotune.errors import StorageError
from autotune.store import open_catalog
from autotune.store.db import repository
from autotune.store.db.session import get_engine
from autotune.study import recording
from autotune.study.executor import Executor
from autotune.testing.store_suite import facts, opened, outcome, space

RETRY_S = 8.0  # the retry's deadline here: a wrongly retried error takes this long to surface


def _started(url: str) -> Any:
    store = opened(url)
    store.save_facts(facts())
    suggestion = store.ask(space())
    store.start(suggestion)
    return store, suggestion.number


def _executor(url: str, notices: list[str]) -> Executor:
    return Executor(threading.Event(), notices.append, db_retry_s=RETRY_S, url=url)


def test_a_full_disk_fails_at_once_saying_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "autotune.db"
    url = f"sqlite:///{path}"
    store, number = _started(url)
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    engine = get_engine(url)

    @event.listens_for(engine, "connect")
    def no_room(dbapi_conn: Any, _record: Any) -> None:  # the disk fills up: no page to add
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

    engine.dispose()
    notices: list[str] = []
    result = recording.measured(space(), outcome(300.0))
    result.columns["log_excerpt"] = "x" * 2_000_000
    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        _executor(url, notices).with_db_retry(
            "recording the trial", lambda: store.finish(number, result))
    assert time.monotonic() - started < 3 and notices == []  # not retried
    message = str(raised.value)
    assert "recording the trial" in message and str(path) in message
    assert "is full" in message and "free space" in message and "resume" in message


def test_missing_tables_fail_at_once_saying_run_db_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "autotune.db"
    url = f"sqlite:///{path}"
    store, number = _started(url)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE autotune_trials")
    notices: list[str] = []
    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        _executor(url, notices).with_db_retry("recording the trial", lambda: store.finish(
            number, recording.measured(space(), outcome(300.0))))
    assert time.monotonic() - started < 3 and notices == []
    assert "tables are missing" in str(raised.value)
    assert "autotune db upgrade" in str(raised.value)


def test_a_locked_database_is_retried_until_it_is_free(tmp_path: Path) -> None:
    """SQLite's one transient error: another process holds the write lock past the busy
    timeout (here cut to 0.2 s); once it lets go, the write goes through."""
    path = tmp_path / "autotune.db"
    url = f"sqlite:///{path}"
    store, number = _started(url)
    engine = get_engine(url)

    @event.listens_for(engine, "connect")
    def short_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=200")

    engine.dispose()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(1.5, holder.rollback).start()
    notices: list[str] = []
    _executor(url, notices).with_db_retry("writing a row", lambda: repository.update_trial(
        url=url, study_name="s", number=number, failure_reason="late"))
    holder.close()
    assert notices and "database is locked" in notices[0]
    [row] = open_catalog(url).list_trials("s")
    assert row.failure_reason == "late"
