"""The ``StudyStore`` conformance suite: one set of tests run against every database backend.

A backend's test module subclasses ``StudyStoreSuite`` and provides a ``store_url`` fixture
(a fresh, empty database per test). No engine is started: trials are claimed, finished,
reused, skipped, lost and resumed through the store alone, as the study loop does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from autotune.engines.failures import EngineFailure
from autotune.quality import Reference, ReferenceItem
from autotune.scoring import failed_values
from autotune.space import Configuration, Space
from autotune.store import (
    FreshRun,
    Origin,
    StaleTrial,
    StudyFacts,
    StudyStore,
    Suggestion,
    TrialResult,
    open_catalog,
    open_store,
)
from autotune.store.attrs import REFERENCE_ATTR
from autotune.study import recording
from autotune.testing.replay_grid import SPACE
from autotune.trial import TrialOutcome
from autotune.trial_state import FailureKind, TrialState


def space(**changes: Any) -> Space:
    return Space.model_validate({**SPACE, **changes})


def outcome(throughput: float, e2e: float = 100.0) -> TrialOutcome:
    return TrialOutcome("complete", metrics={
        "output_throughput": throughput, "e2e_p95_ms": e2e, "error_rate": 0.0})


def opened(url: str, name: str = "s", **options: Any) -> StudyStore:
    store = open_store(url, name, **options)
    sp = space()
    store.open(sp, optuna.samplers.RandomSampler(seed=0))
    return store


def started(url: str) -> tuple[StudyStore, Suggestion]:
    """An open study with its facts saved and one trial started from the sampler."""
    store = opened(url)
    store.save_facts(facts())
    suggestion = store.ask(space())
    store.start(suggestion)
    return store, suggestion


@contextmanager
def rows_fail_once() -> Iterator[None]:
    """Inside the block, the first update of autotune's trial table loses its connection (the
    statement is refused before it reaches the database, and its transaction rolls back)."""
    calls: list[int] = []

    def flaky(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not calls and statement.lstrip().upper().startswith("UPDATE AUTOTUNE_TRIALS"):
            calls.append(1)
            raise OperationalError(statement, {}, Exception("connection lost"))

    event.listen(Engine, "before_cursor_execute", flaky)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", flaky)


def facts(budget: int | None = None) -> StudyFacts:
    return StudyFacts(space_yaml="name: tiny\n", space_path="tiny.yaml", model="m",
                      hardware="cpu", objectives=[], slos={}, trial_budget=budget)


class StudyStoreSuite:
    """Every ``StudyStore`` backend must pass these."""

    def test_open_creates_once_and_refuses_other_objectives(self, store_url: str) -> None:
        store = open_store(store_url, "s")
        assert store.open(space(), optuna.samplers.RandomSampler(seed=0)) is True
        again = open_store(store_url, "s")
        assert again.open(space(), optuna.samplers.RandomSampler(seed=0)) is False
        flipped = space(objectives=[{"metric": "output_throughput", "direction": "minimize"},
                                    {"metric": "e2e_p95_ms", "direction": "minimize"}])
        with pytest.raises(ValueError, match="other objectives"):
            open_store(store_url, "s").open(flipped, optuna.samplers.RandomSampler(seed=0))

    def test_facts_round_trip_and_keep_the_budget(self, store_url: str) -> None:
        store = opened(store_url)
        assert store.facts() is None
        store.save_facts(facts(budget=7))
        store.save_facts(facts(budget=None))  # a resume without --trials keeps the budget
        record = store.facts()
        assert record is not None and record.trial_budget == 7
        assert [s.name for s in open_catalog(store_url).list_studies()] == ["s"]

    def test_a_queued_default_runs_first_and_is_recorded_once(self, store_url: str) -> None:
        store = opened(store_url)
        store.save_facts(facts())
        defaults = space().default_params()
        store.enqueue(Configuration(defaults, True), Origin.DEFAULT)
        suggestion = store.ask(space())
        assert suggestion.origin is Origin.DEFAULT and suggestion.runs_as_queued
        assert suggestion.configuration == Configuration(defaults, True)
        store.start(suggestion)
        [row] = open_catalog(store_url).list_trials("s")
        assert row.state == "running" and row.is_default and row.params == defaults
        assert store.trial(0).running and store.trial(0).counts_toward_budget

        store.finish(0, recording.measured(space(), outcome(500.0)))
        summary = store.trial(0)
        assert not summary.running and summary.state is TrialState.COMPLETE
        assert summary.values == (500.0, 100.0) and summary.counts_toward_budget
        [row] = open_catalog(store_url).list_trials("s")
        assert row.state == "complete" and row.feasible and row.finished_at is not None
        assert row.metrics["output_throughput"] == 500.0

    def test_finishing_again_after_a_lost_reply_tells_optuna_once(self, store_url: str) -> None:
        store, suggestion = started(store_url)
        result = recording.measured(space(), outcome(300.0))
        with pytest.raises(OperationalError), rows_fail_once():
            store.finish(suggestion.number, result)
        # The study loop's database retry runs the whole recording step again: Optuna keeps
        # its first answer, and the row is written this time.
        store.finish(suggestion.number, result)
        trials = store.optuna_study().get_trials()
        assert len(trials) == 1 and trials[0].values == [300.0, 100.0]
        assert open_catalog(store_url).list_trials("s")[0].state == "complete"

    def test_reuse_and_skip_cost_no_budget(self, store_url: str) -> None:
        store = opened(store_url)
        store.save_facts(facts())
        first = store.ask(space())
        store.start(first)
        store.finish(first.number, recording.measured(space(), outcome(400.0, 50.0)))
        twin = store.trial(first.number)

        store.enqueue(first.configuration, Origin.STUDY)
        again = store.ask(space())
        assert again.configuration == first.configuration and again.origin is Origin.STUDY
        store.finish(again.number, recording.reused(twin, "the same configuration as trial 0"))
        reused = store.trial(again.number)
        assert reused.state is TrialState.REUSED and not reused.counts_toward_budget
        assert reused.values == twin.values and dict(reused.constraints) == dict(twin.constraints)

        skip = store.ask(space())
        store.finish(skip.number, recording.skipped(space(), "predicted to fail: P 0.1"))
        skipped = store.trial(skip.number)
        assert skipped.state is TrialState.SKIPPED and not skipped.counts_toward_budget
        assert list(skipped.values or ()) == failed_values(space())
        rows = {r.number: r for r in open_catalog(store_url).list_trials("s")}
        assert rows[again.number].state == "reused" and not rows[again.number].feasible
        assert rows[again.number].failure_reason == "the same configuration as trial 0"
        assert rows[skip.number].state == "skipped"
        assert rows[skip.number].failure_reason == "predicted to fail: P 0.1"

    def test_a_host_fault_is_an_optuna_fail_not_an_infeasible_config(
        self, store_url: str
    ) -> None:
        store, suggestion = started(store_url)
        fault = TrialOutcome("failed", failure=EngineFailure(
            FailureKind.HOST_FAULT, "SIGILL", "exit code -4"))
        store.finish(suggestion.number, recording.measured(space(), fault))
        [trial] = store.optuna_study().get_trials()
        assert trial.state == optuna.trial.TrialState.FAIL
        summary = store.trial(suggestion.number)
        assert summary.failure_kind is FailureKind.HOST_FAULT and summary.values is None
        [row] = open_catalog(store_url).list_trials("s")
        assert row.state == "failed" and row.failure_kind == "host_fault"

    def test_concurrent_claims_never_share_a_queued_configuration(self, store_url: str) -> None:
        a, b = opened(store_url), opened(store_url)
        a.save_facts(facts())
        for seqs in (8, 16, 32):
            a.enqueue(Configuration({**space().default_params(), "max_num_seqs": seqs}),
                      Origin.QUEUED)
        claimed = []
        for store in (a, b, a):
            with store.claim_lock():
                suggestion = store.ask(space())
                store.start(suggestion)
                claimed.append(suggestion)
        assert len({s.number for s in claimed}) == 3
        assert sorted(s.configuration.params["max_num_seqs"] for s in claimed) == [8, 16, 32]
        assert all(s.origin is Origin.QUEUED for s in claimed)

    def test_interrupt_queues_the_configuration_again(self, store_url: str) -> None:
        store = opened(store_url)
        store.save_facts(facts())
        store.enqueue(Configuration(space().default_params(), True), Origin.DEFAULT)
        suggestion = store.ask(space())
        store.start(suggestion)
        store.interrupt(suggestion.number, "stopped by the user (Ctrl-C or SIGTERM)")
        summary = store.trial(suggestion.number)
        assert summary.state is TrialState.INTERRUPTED and not summary.counts_toward_budget
        retry = store.ask(space())
        assert retry.configuration == suggestion.configuration and retry.configuration.is_default
        [row] = open_catalog(store_url).list_trials("s")  # the retry is asked, not started
        assert row.state == "interrupted" and row.failure_kind == "interrupted"

    def test_resume_repairs_a_row_left_running_after_optuna_was_told(
        self, store_url: str
    ) -> None:
        store, suggestion = started(store_url)
        # The controller dies between the two writes: Optuna has the verdict, our row not.
        with pytest.raises(OperationalError), rows_fail_once():
            store.finish(suggestion.number, recording.measured(space(), outcome(100.0, 10.0)))
        assert open_catalog(store_url).list_trials("s")[0].state == "running"

        resumed = opened(store_url)
        resumed.reconcile()
        [row] = open_catalog(store_url).list_trials("s")
        assert row.state == "complete" and row.feasible and row.finished_at is not None
        assert "stopped before recording the details" in row.failure_reason
        assert resumed.trial(suggestion.number).counts_toward_budget

    def test_quality_reference_lifecycle_across_workers(self, store_url: str) -> None:
        mine, other = opened(store_url), opened(store_url)  # two workers' handles
        assert other.quality_reference() == (None, False)  # nothing to wait for
        mine.enqueue(Configuration(space().default_params(), True), Origin.DEFAULT)
        # Only waiting: its retry may be this very worker's to run, so nothing to wait for yet.
        assert other.quality_reference() == (None, False)
        suggestion = mine.ask(space())
        mine.start(suggestion)
        assert other.quality_reference() == (None, True)  # running: wait for it

        reference = Reference(
            "fp", [ReferenceItem([4, 5, 1], [4, 5, 1], [-0.1, -0.2, -0.01])], 0.9, 0)
        mine.set_quality_reference(reference)
        mine.finish(suggestion.number, recording.measured(space(), outcome(1.0)))
        found, pending = other.quality_reference()
        assert not pending and found is not None
        assert found.to_dict() == reference.to_dict()
        handle = optuna.load_study(study_name="s", storage=store_url)
        assert handle.user_attrs[REFERENCE_ATTR]["trial"] == 0

    def test_fresh_runs_are_appended_and_read_by_a_fresh_handle(self, store_url: str) -> None:
        store, suggestion = started(store_url)
        store.finish(suggestion.number, recording.measured(space(), outcome(100.0)))
        catalog = open_catalog(store_url)
        assert store.fresh_runs() == [] and catalog.fresh_runs("s") == []
        assert catalog.fresh_runs("no such study") == []
        first = FreshRun("k1", {"output_throughput": 95.0, "e2e_p95_ms": 110.0}, "confirm")
        second = FreshRun("k1", {"output_throughput": 104.5}, "confirm of trial 0")
        # A handle that never opened the study (as `confirm` has) may add runs.
        open_store(store_url, "s").add_fresh_runs([first])
        open_store(store_url, "s").add_fresh_runs([second])
        assert store.fresh_runs() == [first, second]
        assert open_catalog(store_url).fresh_runs("s") == [first, second]
        # Trials are untouched by it.
        assert [t.number for t in catalog.list_trials("s")] == [suggestion.number]
        with pytest.raises(KeyError):
            open_store(store_url, "other").add_fresh_runs([first])

    def test_a_failed_default_trial_leaves_nothing_to_wait_for(self, store_url: str) -> None:
        store = opened(store_url)
        store.save_facts(facts())
        store.enqueue(Configuration(space().default_params(), True), Origin.DEFAULT)
        suggestion = store.ask(space())
        store.start(suggestion)
        store.finish(suggestion.number, TrialResult(TrialState.FAILED, values=None))
        assert store.quality_reference() == (None, False)


class SharedStudyStoreSuite(StudyStoreSuite):
    """Backends several processes share: heartbeats find dead workers, a resume leaves their
    running trials alone."""

    def test_a_lost_worker_is_failed_retried_and_never_overwritten(
        self, store_url: str
    ) -> None:
        notices: list[str] = []
        dead = opened(store_url, heartbeat_interval_s=1, grace_period_s=2)
        dead.save_facts(facts())
        suggestion = dead.ask(space())
        dead.start(suggestion)
        with dead.heartbeat(suggestion.number):
            time.sleep(1.5)  # one heartbeat, then the worker "dies"
        watcher = opened(store_url, heartbeat_interval_s=1, grace_period_s=2,
                         notice=notices.append)
        deadline = time.monotonic() + 20
        while not (lost := watcher.fail_stale()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert lost == [suggestion.number]
        assert notices == [f"trial {suggestion.number} lost its worker; retrying it"]
        summary = watcher.trial(suggestion.number)
        assert not summary.running and not summary.counts_toward_budget
        [row] = open_catalog(store_url).list_trials("s")
        assert row.state == "failed" and row.failure_kind == "worker_lost"
        assert "its configuration was queued again" in row.failure_reason

        retry = watcher.ask(space())
        assert retry.retry_of == suggestion.number
        assert retry.configuration == suggestion.configuration
        # The "dead" worker was only slow: its late result must not overwrite the verdict.
        with pytest.raises(StaleTrial):
            dead.finish(suggestion.number, recording.measured(space(), outcome(9.0)))
        assert open_catalog(store_url).list_trials("s")[0].state == "failed"

    def test_resume_leaves_other_workers_running_trials_alone(self, store_url: str) -> None:
        worker = opened(store_url)
        worker.save_facts(facts())
        suggestion = worker.ask(space())
        worker.start(suggestion)
        opened(store_url).reconcile()
        assert worker.trial(suggestion.number).running
        assert open_catalog(store_url).list_trials("s")[0].state == "running"


class SingleProcessStudyStoreSuite(StudyStoreSuite):
    """Backends one controller owns: whatever is running on resume was its dead run's."""

    def test_resume_closes_a_dead_controllers_trial_and_queues_it_again(
        self, store_url: str
    ) -> None:
        dead = opened(store_url)
        dead.save_facts(facts())
        suggestion = dead.ask(space())
        dead.start(suggestion)
        resumed = opened(store_url)
        resumed.reconcile()
        summary = resumed.trial(suggestion.number)
        assert summary.failure_kind is FailureKind.INTERRUPTED and not summary.counts_toward_budget
        [row] = open_catalog(store_url).list_trials("s")
        assert row.state == "interrupted"
        assert row.failure_reason == "its controller stopped without finishing it"
        again = resumed.ask(space())
        assert again.configuration == suggestion.configuration
        resumed.start(again)
        resumed.finish(again.number, recording.measured(space(), outcome(10.0)))
        resumed.reconcile()  # measured since: a second resume queues nothing more
        assert [t.state for t in resumed.optuna_study().get_trials()].count(
            optuna.trial.TrialState.WAITING) == 0
