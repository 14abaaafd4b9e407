"""The stale-trial watchdog on a real PostgreSQL server (issue 24, items 3-5): a claim left
without a heartbeat is failed and queued again, an outage the workers survived is not blamed on
them, a late verdict on a trial the watchdog failed is refused cleanly, and a claim without a row
of ours (a worker waiting for a twin) does not stop the watchdog from queueing the others."""

from __future__ import annotations

import time
from typing import Any

import optuna
import pytest

from autotune.engines.failures import EngineFailure
from autotune.store import StaleTrial, StudyStore, TrialResult, open_catalog
from autotune.study import recording
from autotune.testing.store_suite import facts, opened, outcome, space
from autotune.trial import TrialOutcome
from autotune.trial_state import FailureKind, TrialState
from tests.store.test_heartbeats import Watchdog, connections_cut

pytestmark = pytest.mark.postgres

INTERVAL_S, GRACE_S = 1, 3


def _store(url: str, **options: Any) -> StudyStore:
    return opened(url, heartbeat_interval_s=INTERVAL_S, grace_period_s=GRACE_S, **options)


def _failed_verdict() -> TrialResult:
    """A verdict told to Optuna as FAIL (not as the worst values): as a watchdog's is."""
    result = recording.measured(space(), TrialOutcome("failed", failure=EngineFailure(
        FailureKind.HOST_FAULT, "SIGILL", "exit code -4")))
    assert result.values is None
    return result


def _waiting_retries(url: str) -> dict[int, dict[str, Any]]:
    """Queued retries of lost trials: the lost trial's number → the retry's fixed params."""
    handle = optuna.load_study(study_name="s", storage=url)
    return {t.system_attrs["failed_trial"]: t.system_attrs.get("fixed_params", t.params)
            for t in handle.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.WAITING and "failed_trial" in t.system_attrs}


def _poll(watcher: StudyStore, want: int, within_s: float) -> list[int]:
    lost: list[int] = []
    deadline = time.monotonic() + within_s
    while len(lost) < want and time.monotonic() < deadline:
        lost += watcher.fail_stale()
        time.sleep(0.3)
    return lost


# -- item 3: a claim that never sent a heartbeat ------------------------------------------------


def test_a_claim_killed_before_its_first_heartbeat_is_failed_and_queued_again(
    postgres_url: str,
) -> None:
    """The worker died between Optuna's ask and anything else (the worst moment of a claim):
    Optuna holds a RUNNING trial with no heartbeat row at all."""
    store = _store(postgres_url)
    store.save_facts(facts())
    handle = optuna.load_study(study_name="s", storage=postgres_url)
    orphan = handle.ask()  # a bare ask: no heartbeat, no row, no configuration recorded
    orphan.suggest_int("max_num_seqs", 8, 64)
    watcher = _store(postgres_url)
    assert _poll(watcher, 1, GRACE_S * 3 + 5) == [orphan.number]
    summary = watcher.trial(orphan.number)
    assert not summary.running and not summary.counts_toward_budget


def test_a_claim_cut_off_after_its_ask_is_failed_queued_again_and_never_run_twice(
    postgres_url: str,
) -> None:
    """A connection blip after ``ask``: the worker's database retry runs the whole claim again,
    so the first suggestion is never started nor run by anyone."""
    worker = _store(postgres_url)
    worker.save_facts(facts())
    suggestion = worker.ask(space())  # ... and then the claim fails and is retried
    watcher = _store(postgres_url)
    assert _poll(watcher, 1, GRACE_S * 3 + 5) == [suggestion.number]
    [row] = open_catalog(postgres_url).list_trials("s")
    assert row.number == suggestion.number
    assert row.state == "failed" and row.failure_kind == "worker_lost"
    assert "queued again" in row.failure_reason
    retry = watcher.ask(space())
    assert retry.retry_of == suggestion.number
    assert retry.configuration == suggestion.configuration
    # The late worker never got to start it; were it to try to record it, it is refused.
    with pytest.raises(StaleTrial):
        worker.finish(suggestion.number, recording.measured(space(), outcome(9.0)))


# -- item 4: an outage longer than the grace period -------------------------------------------


def test_an_outage_longer_than_the_grace_period_is_not_blamed_on_the_workers(
    postgres_url: str,
) -> None:
    notices: list[str] = []
    worker = _store(postgres_url, notice=notices.append)
    worker.save_facts(facts())
    alive = worker.ask(space())
    worker.start(alive)
    dead = worker.ask(space())  # its worker dies during the outage: its heartbeats stop
    worker.start(dead)
    with Watchdog(postgres_url, GRACE_S) as watchdog, worker.heartbeat(alive.number):
        with worker.heartbeat(dead.number):
            time.sleep(1.5)
        with connections_cut(postgres_url):
            time.sleep(GRACE_S + 3)  # longer than the grace; the workers ride it out
        deadline = time.monotonic() + GRACE_S * 3 + 5
        while not watchdog.failed and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(1.0)
    # The dead one is found, once the watchdog has seen a grace period's worth of heartbeats;
    # the one whose worker survived the outage is not.
    assert watchdog.failed == [dead.number]
    assert worker.trial(alive.number).running
    worker.finish(alive.number, recording.measured(space(), outcome(300.0)))
    rows = {r.number: r for r in open_catalog(postgres_url).list_trials("s")}
    assert rows[alive.number].state == "complete"
    assert rows[dead.number].failure_kind == "worker_lost"


def test_a_fail_verdict_told_as_the_watchdog_fails_the_trial_is_stale_not_a_crash(
    postgres_url: str,
) -> None:
    """The watchdog fails the trial between the verdict's attributes and Optuna's tell."""
    worker = _store(postgres_url)
    worker.save_facts(facts())
    suggestion = worker.ask(space())
    worker.start(suggestion)
    with worker.heartbeat(suggestion.number):
        time.sleep(0.2)
    watcher = _store(postgres_url)
    # In contact from here on, as a watchdog is (a round per interval), until just before the
    # trial is silent for longer than the grace period; the next round falls in the tell.
    assert _poll(watcher, 1, GRACE_S - 0.5) == []
    time.sleep(1.5)
    study = worker.optuna_study()
    real_tell = study.tell
    failed: list[int] = []

    def tell_after_the_watchdog(*args: Any, **kwargs: Any) -> Any:
        failed.extend(watcher.fail_stale())
        return real_tell(*args, **kwargs)

    study.tell = tell_after_the_watchdog  # type: ignore[method-assign]
    with pytest.raises(StaleTrial):
        worker.finish(suggestion.number, _failed_verdict())
    assert failed == [suggestion.number]
    [row] = open_catalog(postgres_url).list_trials("s")
    assert row.state == "failed" and row.failure_kind == "worker_lost"
    assert suggestion.number in _waiting_retries(postgres_url)


def test_a_fail_verdict_retried_after_the_watchdog_failed_the_trial_is_stale(
    postgres_url: str,
) -> None:
    """The verdict's attributes were written, the connection was lost before Optuna's tell,
    and the watchdog failed the trial before the worker's database retry came back."""
    worker = _store(postgres_url)
    worker.save_facts(facts())
    suggestion = worker.ask(space())
    worker.start(suggestion)
    with worker.heartbeat(suggestion.number):
        time.sleep(0.2)
    watcher = _store(postgres_url)
    watcher.fail_stale()
    study = worker.optuna_study()
    real_tell = study.tell

    def lost(*args: Any, **kwargs: Any) -> Any:
        raise optuna.exceptions.StorageInternalError("connection lost")

    study.tell = lost  # type: ignore[method-assign]
    with pytest.raises(optuna.exceptions.StorageInternalError):
        worker.finish(suggestion.number, _failed_verdict())
    study.tell = real_tell  # type: ignore[method-assign]
    assert _poll(watcher, 1, GRACE_S * 3 + 5) == [suggestion.number]
    with pytest.raises(StaleTrial):
        worker.finish(suggestion.number, _failed_verdict())  # the database retry
    [row] = open_catalog(postgres_url).list_trials("s")
    assert row.state == "failed" and row.failure_kind == "worker_lost"
    # The retry does not inherit the verdict the first worker never told.
    retry = watcher.ask(space())
    assert retry.retry_of == suggestion.number
    watcher.start(retry)
    watcher.finish(retry.number, recording.measured(space(), outcome(200.0)))
    summary = watcher.trial(retry.number)
    assert summary.state is TrialState.COMPLETE and summary.values == (200.0, 100.0)


# -- item 5: a claim with heartbeats but no row of ours ----------------------------------------


def test_a_lost_worker_waiting_for_a_twin_does_not_stop_the_others_requeue(
    postgres_url: str,
) -> None:
    notices: list[str] = []
    worker = _store(postgres_url)
    worker.save_facts(facts())
    waiting = worker.ask(space())  # waits for a twin: heartbeats, but never started (no row)
    running = worker.ask(space())
    worker.start(running)
    with worker.heartbeat(waiting.number), worker.heartbeat(running.number):
        time.sleep(0.3)  # then the worker dies
    watcher = _store(postgres_url, notice=notices.append)
    lost = _poll(watcher, 2, GRACE_S * 3 + 5)
    assert sorted(lost) == [waiting.number, running.number]
    assert set(_waiting_retries(postgres_url)) == {waiting.number, running.number}
    rows = {r.number: r for r in open_catalog(postgres_url).list_trials("s")}
    assert rows[running.number].failure_kind == "worker_lost"
    assert rows[waiting.number].failure_kind == "worker_lost"
    assert rows[waiting.number].params == waiting.configuration.params
    assert sum("lost its worker" in n for n in notices) == 2, notices
