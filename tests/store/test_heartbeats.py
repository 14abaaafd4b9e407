"""Heartbeats on a real PostgreSQL server: they survive cut connections and last through the
recording, so a healthy trial is never failed as stale by another worker's watchdog; a trial
that really went silent is failed, retried, and its late result never overwrites the verdict."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import psycopg
import pytest
from sqlalchemy.engine import make_url

from autotune.replay import Grid, ReplayTrialRunner
from autotune.store import StudyStore, TrialResult, open_store
from autotune.store.attrs import STATE_ATTR
from autotune.store.db import repository
from autotune.study import SilentReporter, StudyRunner, recording
from autotune.study.executor import DB_ERRORS
from autotune.testing.replay_grid import write_grid
from autotune.testing.store_suite import facts, opened, outcome, space
from autotune.trial import TrialOutcome

pytestmark = pytest.mark.postgres

INTERVAL_S, GRACE_S = 1, 3


@contextmanager
def connections_cut(url: str) -> Iterator[None]:
    """No connection to the study's database: new ones refused, open ones terminated (from a
    separate admin connection, every 0.1 s) until the block ends."""
    parts = make_url(url)
    admin = psycopg.connect(host=parts.host, port=parts.port, user=parts.username,
                            dbname="postgres", autocommit=True)
    done = threading.Event()

    def cut() -> None:
        while not done.wait(0.1):
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (parts.database,))

    admin.execute(f'ALTER DATABASE "{parts.database}" ALLOW_CONNECTIONS false')
    cutter = threading.Thread(target=cut)
    cutter.start()
    try:
        yield
    finally:
        done.set()
        cutter.join()
        admin.execute(f'ALTER DATABASE "{parts.database}" ALLOW_CONNECTIONS true')
        admin.close()


class Watchdog:
    """Another worker's stale-trial check, every 0.5 s, its database errors ignored (as the
    executor's watchdog does)."""

    def __init__(self, url: str, grace_period_s: int = GRACE_S) -> None:
        self.store = opened(url, heartbeat_interval_s=INTERVAL_S, grace_period_s=grace_period_s)
        self.failed: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(0.5):
            try:
                self.failed += self.store.fail_stale()
            except DB_ERRORS:
                continue

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def test_heartbeats_survive_cut_connections(postgres_url: str) -> None:
    # The longest silence is the cut plus up to one interval on each side: under the grace.
    cut_s, grace_s = 3 * INTERVAL_S, 6
    notices: list[str] = []
    worker = opened(postgres_url, heartbeat_interval_s=INTERVAL_S, grace_period_s=grace_s,
                    notice=notices.append)
    worker.save_facts(facts())
    suggestion = worker.ask(space())
    worker.start(suggestion)
    with Watchdog(postgres_url, grace_s) as watchdog, worker.heartbeat(suggestion.number):
        time.sleep(1.5)
        with connections_cut(postgres_url):
            time.sleep(cut_s)  # every heartbeat in here fails
        time.sleep(grace_s + 2)  # long enough for a watchdog to fail a silent trial
    assert watchdog.failed == []
    assert worker.trial(suggestion.number).running
    worker.finish(suggestion.number, recording.measured(space(), outcome(300.0)))
    [row] = repository.list_trials(url=postgres_url, study_name="s")
    assert row.state == "complete"
    said = [n for n in notices if "heartbeat not recorded" in n]  # said once, not per beat
    assert len(said) == 1 and said[0].startswith(f"trial {suggestion.number}:"), notices
    assert any("heartbeats recorded again" in n for n in notices), notices


class Recorder(SilentReporter):
    def __init__(self) -> None:
        self.notices: list[str] = []

    def notice(self, text: str) -> None:
        self.notices.append(text)


class CountingReplay(ReplayTrialRunner):
    """The replay engine, counting what it measured; the first run may take a while."""

    def __init__(self, *args: Any, first_run_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.measured: list[str] = []
        self.numbers: list[int] = []
        self.states: list[str] = []
        self.first_run_s = first_run_s

    def run(self, number: int, params: dict[str, Any], **kwargs: Any) -> TrialOutcome:
        if not self.numbers:
            time.sleep(self.first_run_s)
        self.numbers.append(number)
        self.measured.append(json.dumps(params, sort_keys=True))
        result = super().run(number, params, **kwargs)
        self.states.append(result.state)
        return result


def _study(tmp_path: Path, url: str, **runner: Any) -> tuple[StudyRunner, CountingReplay,
                                                               Recorder, StudyStore]:
    grid = Grid.load(write_grid(tmp_path / "grid.jsonl"))
    sp = grid.search_space(grid.space())
    trials = CountingReplay(sp, grid, **runner)
    store = open_store(url, "s", heartbeat_interval_s=INTERVAL_S, grace_period_s=GRACE_S)
    recorder = Recorder()
    study = StudyRunner(sp, store=store, trials=trials, hardware="replay", reporter=recorder,
                        heartbeat_interval_s=INTERVAL_S)
    return study, trials, recorder, store


def test_a_recording_slower_than_the_grace_period_is_not_failed_as_stale(
    tmp_path: Path, postgres_url: str,
) -> None:
    study, trials, recorder, store = _study(tmp_path, postgres_url)
    real_finish = store.finish

    def slow_finish(number: int, result: TrialResult) -> None:
        if number in trials.numbers:  # measured here (a reuse is answered at once)
            time.sleep(GRACE_S + 2)  # e.g. the database retry riding out a blip
        real_finish(number, result)

    store.finish = slow_finish  # type: ignore[method-assign]
    study.prepare(budget=2)
    with Watchdog(postgres_url) as watchdog:
        run = study.run(n_trials=2, timeout_s=40)
    assert watchdog.failed == []
    assert not any("lost its worker" in n or "stale" in n for n in recorder.notices), \
        recorder.notices
    assert len(trials.measured) == len(set(trials.measured)) == 2  # measured once each
    assert run.trials_run == 2
    rows = {r.number: r for r in repository.list_trials(url=postgres_url, study_name="s")}
    # Recorded as measured (the grid holds failures too), none as a lost worker.
    assert [rows[n].state for n in trials.numbers] == trials.states
    assert trials.states[0] == "complete"  # the default trial
    assert not any(r.failure_kind == "worker_lost" for r in rows.values())
    handle = optuna.load_study(study_name="s", storage=postgres_url)
    assert [handle.trials[n].user_attrs[STATE_ATTR] for n in trials.numbers] == trials.states


def test_a_trial_failed_as_stale_keeps_its_verdict_end_to_end(
    tmp_path: Path, postgres_url: str,
) -> None:
    study, trials, recorder, store = _study(tmp_path, postgres_url, first_run_s=GRACE_S + 3)
    real_heartbeat = store.heartbeat

    @contextmanager
    def first_beat_only(number: int) -> Iterator[None]:
        """The worker's first trial sends one heartbeat, then goes silent (cut off)."""
        if trials.numbers:
            with real_heartbeat(number):
                yield
            return
        with real_heartbeat(number):
            time.sleep(0.2)
        yield

    store.heartbeat = first_beat_only  # type: ignore[method-assign]
    study.prepare(budget=1)
    with Watchdog(postgres_url) as watchdog:
        study.run(n_trials=1, timeout_s=40)
    lost = trials.numbers[0]
    assert watchdog.failed == [lost]
    assert any(f"trial {lost} was failed as stale" in n for n in recorder.notices)
    rows = {r.number: r for r in repository.list_trials(url=postgres_url, study_name="s")}
    assert rows[lost].state == "failed" and rows[lost].failure_kind == "worker_lost"
    handle = optuna.load_study(study_name="s", storage=postgres_url)
    assert handle.trials[lost].state == optuna.trial.TrialState.FAIL
    retry = next(r for r in rows.values() if r.retry_of == lost)
    assert retry.state == "complete" and retry.params == rows[lost].params
    assert trials.numbers == [lost, retry.number]
