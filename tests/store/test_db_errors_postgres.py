"""Database errors on a real PostgreSQL server: a cut connection is retried, missing tables fail
at once saying what to do, and NUL bytes in a log excerpt do not break the write."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from autotune.errors import StorageError
from autotune.store.db import repository
from autotune.store.db.session import get_engine
from autotune.study import recording
from autotune.study.executor import Executor
from autotune.testing.store_suite import facts, opened, outcome, space

pytestmark = pytest.mark.postgres


def _started(url: str):  # type: ignore[no-untyped-def]
    store = opened(url)
    store.save_facts(facts())
    suggestion = store.ask(space())
    store.start(suggestion)
    return store, suggestion.number


def test_nul_bytes_in_text_and_json_columns_are_written(postgres_url: str) -> None:
    store, number = _started(postgres_url)
    result = recording.measured(space(), outcome(300.0))
    result.reason = "engine died: \x00bad"
    result.columns.update(
        log_excerpt="INFO ok\n\x00\x00garbage from a crashed writer\nERROR boom",
        failure_line="ERROR \x00boom", engine_flags={"served-model-name": "m\x00x"},
    )
    store.finish(number, result)
    row = repository.get_trial(url=postgres_url, study_name="s", number=number)
    assert row.state == "complete"
    assert "\x00" not in row.log_excerpt
    assert row.log_excerpt.startswith("INFO ok\n") and row.log_excerpt.endswith("ERROR boom")
    assert "garbage from a crashed writer" in row.log_excerpt
    assert "\x00" not in row.failure_line and row.failure_line.endswith("boom")
    assert "\x00" not in row.failure_reason and "\x00" not in row.engine_flags["served-model-name"]


def test_a_cut_connection_is_retried(postgres_url: str) -> None:
    notices: list[str] = []
    calls: list[int] = []

    def cut_once() -> int:
        with get_engine(postgres_url).connect() as conn:
            if not calls:
                calls.append(1)
                conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            return conn.execute(text("SELECT 1")).scalar_one()

    executor = Executor(threading.Event(), notices.append, db_retry_s=30, url=postgres_url)
    assert executor.with_db_retry("reading", cut_once) == 1
    assert len(notices) == 1 and notices[0].startswith("database unreachable while reading")


def test_missing_tables_fail_at_once_saying_run_db_upgrade(postgres_url: str) -> None:
    store, number = _started(postgres_url)
    with get_engine(postgres_url).begin() as conn:
        conn.execute(text("DROP TABLE autotune_trials"))
    notices: list[str] = []
    started = time.monotonic()
    executor = Executor(threading.Event(), notices.append, db_retry_s=8, url=postgres_url)
    with pytest.raises(StorageError) as raised:
        executor.with_db_retry("recording the trial", lambda: store.finish(
            number, recording.measured(space(), outcome(300.0))))
    assert time.monotonic() - started < 3 and notices == []
    assert "tables are missing" in str(raised.value)
    assert "autotune db upgrade" in str(raised.value)
