"""Whole studies (the replay engine, a real PostgreSQL server) through the faults of issue 24's
items 3 and 4: a claim cut off after its ask, and a database outage longer than the heartbeat
grace that the worker rides out. Each study must finish by itself, lose no trial, and measure no
configuration twice."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy.exc import OperationalError

from autotune.store import Suggestion
from autotune.store.db import repository
from autotune.trial import TrialOutcome
from tests.store.test_heartbeats import (
    GRACE_S,
    CountingReplay,
    Watchdog,
    _study,
    connections_cut,
)

pytestmark = pytest.mark.postgres


def _check_finished(url: str, trials: CountingReplay, budget: int) -> None:
    rows = repository.list_trials(url=url, study_name="s")
    done = [r for r in rows if r.state in ("complete", "failed", "rejected")
            and r.failure_kind != "worker_lost"]
    assert len(done) == budget, [(r.number, r.state, r.failure_kind) for r in rows]
    assert not any(r.state == "running" for r in rows)
    assert len(trials.measured) == len(set(trials.measured)) == budget  # measured once each
    handle = optuna.load_study(study_name="s", storage=url)
    assert not [t.number for t in handle.trials if t.state == optuna.trial.TrialState.RUNNING]


def test_a_claim_cut_off_after_its_ask_is_recovered(tmp_path: Path, postgres_url: str) -> None:
    study, trials, recorder, store = _study(tmp_path, postgres_url)
    real_start = store.start
    cut: list[int] = []

    def start_cut_once(suggestion: Suggestion) -> None:
        if not cut:  # the connection drops after Optuna's ask, before the trial is ours
            cut.append(suggestion.number)
            raise OperationalError("UPDATE autotune_trials", {}, Exception("connection lost"))
        real_start(suggestion)

    store.start = start_cut_once  # type: ignore[method-assign]
    study.prepare(budget=2)
    started = time.monotonic()
    with Watchdog(postgres_url):
        run = study.run(n_trials=2, timeout_s=60)
    assert time.monotonic() - started < 45, "the study did not finish by itself"
    [orphan] = cut
    assert orphan not in trials.numbers  # nobody ran the orphaned claim...
    _check_finished(postgres_url, trials, budget=2)
    assert run.trials_run == 2
    # ... and its configuration (the vLLM defaults: the quality reference) was run by a retry.
    rows = {r.number: r for r in repository.list_trials(url=postgres_url, study_name="s")}
    retry = next(r for r in rows.values() if r.retry_of == orphan)
    assert retry.is_default and retry.state == "complete"


class OutageReplay(CountingReplay):
    """The first trial's engine runs through a database outage longer than the grace period."""

    def __init__(self, *args: Any, db_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = db_url

    def run(self, number: int, params: dict[str, Any], **kwargs: Any) -> TrialOutcome:
        if not self.numbers:
            time.sleep(1.5)  # a few heartbeats first
            with connections_cut(self.url):
                time.sleep(GRACE_S + 3)
            time.sleep(GRACE_S)  # and carries on: its worker's heartbeats come back
        return super().run(number, params, **kwargs)


def test_an_outage_longer_than_the_grace_period_fails_no_trial(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tests.store.test_heartbeats as helpers

    monkeypatch.setattr(helpers, "CountingReplay", OutageReplay)
    study, trials, recorder, store = _study(tmp_path, postgres_url, db_url=postgres_url)
    study.prepare(budget=2)
    with Watchdog(postgres_url) as watchdog:  # another worker's watchdog
        run = study.run(n_trials=2, timeout_s=60)
    assert watchdog.failed == []
    assert not any("lost its worker" in n or "stale" in n for n in recorder.notices), \
        recorder.notices
    _check_finished(postgres_url, trials, budget=2)
    assert run.trials_run == 2
    rows = repository.list_trials(url=postgres_url, study_name="s")
    assert not any(r.failure_kind == "worker_lost" for r in rows)
