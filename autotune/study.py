"""The study loop: Optuna ask → TrialRunner → tell, with every trial recorded in our tables.

The first trial of a new study is the vLLM-default configuration (enqueued), so every result
can be shown as a gain over the defaults. Starting a study whose name exists resumes it; a trial
interrupted by Ctrl-C is re-queued. Several worker processes (``autotune worker``) can share a
study on PostgreSQL: claims are serialised by an advisory lock, heartbeats detect a dead worker
and its configuration is retried by another (up to ``max_retries``).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
import yaml
from optuna.exceptions import StorageInternalError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import fail_stale_trials, get_heartbeat_thread
from sqlalchemy.exc import InterfaceError, OperationalError

from autotune.db import repository
from autotune.db.session import ensure_schema
from autotune.devices import DevicePool
from autotune.engines.base import EngineLauncher
from autotune.engines.failures import FailureKind
from autotune.engines.process import stop_all
from autotune.quality.store import reference_state, store_reference
from autotune.scoring import (
    failed_values,
    failed_violations,
    is_feasible,
    objective_values,
    violations,
)
from autotune.space import Space, suggest_params
from autotune.storage import is_sqlite, optuna_storage, study_claim_lock
from autotune.trial import TrialOutcome, TrialRunner, finite_metrics

DEFAULT_ATTR = "autotune:default"
FAILURE_ATTR = "autotune:failure_kind"
STATE_ATTR = "autotune:state"
WARM_START_ATTR = "autotune:warm_start"
# Failures that say nothing about the configuration: Optuna marks them FAIL (ignored by
# samplers) instead of infeasible.
NOT_THE_CONFIG = (FailureKind.HOST_FAULT, FailureKind.INTERRUPTED)
# Lost connections, not bad statements: only these are worth retrying.
DB_ERRORS = (OperationalError, InterfaceError, StorageInternalError)
# Heartbeats, retries and grouped TPE are "experimental" in Optuna; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
WAIT = "wait"


class StudyReporter(Protocol):
    def study_started(self, name: str, done: int, total: int) -> None: ...

    def trial_started(
        self, index: int, total: int, number: int, params: dict[str, Any]
    ) -> None: ...

    def phase(self, phase: str) -> None: ...

    def trial_finished(self, number: int, outcome: TrialOutcome) -> None: ...

    def notice(self, text: str) -> None:
        """Something the user must know (e.g. the database is unreachable, retrying)."""
        ...


class SilentReporter:
    def study_started(self, name: str, done: int, total: int) -> None:
        pass

    def trial_started(self, index: int, total: int, number: int, params: dict[str, Any]) -> None:
        pass

    def phase(self, phase: str) -> None:
        pass

    def trial_finished(self, number: int, outcome: TrialOutcome) -> None:
        pass

    def notice(self, text: str) -> None:
        print(f"autotune: {text}", file=sys.stderr, flush=True)


def make_sampler(space: Space) -> optuna.samplers.BaseSampler:
    seed = space.search.seed
    kind = space.search.sampler
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    # auto and tpe: multivariate TPE with grouped (conditional) parameters.
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=4
    )


def open_study(
    space: Space, name: str, storage: str, storage_obj: optuna.storages.RDBStorage | None = None
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists. Returns (study, created)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_obj = storage_obj or optuna_storage(storage)
    try:
        optuna.load_study(study_name=name, storage=storage_obj)
        created = False
    except KeyError:
        created = True
    study = optuna.create_study(
        study_name=name,
        storage=storage_obj,
        directions=space.directions,
        sampler=make_sampler(space),
        load_if_exists=True,
    )
    if list(study.directions) != [
        optuna.study.StudyDirection.MAXIMIZE
        if d == "maximize"
        else optuna.study.StudyDirection.MINIMIZE
        for d in space.directions
    ]:
        raise ValueError(f"study {name!r} exists with other objectives; use another --name")
    return study, created


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished by autotune and not to be re-run: complete, failed or rejected configs.

    Interrupted trials and trials whose worker died (failed by the heartbeat check, so they
    carry no autotune state) are retried, and the retry counts instead."""
    if trial.state == optuna.trial.TrialState.RUNNING:
        return True
    return (
        trial.state.is_finished()
        and STATE_ATTR in trial.user_attrs
        and trial.user_attrs.get(FAILURE_ATTR) != FailureKind.INTERRUPTED
    )


def finished_count(study: optuna.Study) -> int:
    return sum(
        1 for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and counts_toward_budget(t)
    )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM tears the engine down exactly as Ctrl-C does."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class StudyRun:
    name: str
    trials_run: int
    wall_s: float
    interrupted: bool
    peak_parallel: int = 1


class StudyRunner:
    """Runs trials of one study in this process, up to ``parallel`` at once.

    ``prepare`` creates or resumes the study (``register=False`` for a worker joining a study
    someone else created); ``run`` claims trials until the study's budget is reached.
    """

    def __init__(
        self,
        space: Space,
        *,
        name: str,
        storage: str,
        launcher: EngineLauncher,
        pool: DevicePool,
        log_dir: Path,
        space_path: str = "",
        space_yaml: str | None = None,
        reporter: StudyReporter | None = None,
        heartbeat_interval_s: int = 10,
        grace_period_s: int = 30,
        max_retries: int = 2,
        db_retry_s: float = 600.0,
        warm_start: Sequence[Mapping[str, Any]] = (),
        runner: TrialRunner | None = None,
    ) -> None:
        self.space = space
        self.warm_start = [dict(p) for p in warm_start]
        self.name = name
        self.storage = storage
        self.pool = pool
        self.reporter = reporter or SilentReporter()
        self.runner = runner or TrialRunner(space, launcher, pool, log_dir / name)
        self.space_path = space_path
        self.space_yaml = space_yaml or yaml.safe_dump(space.model_dump(mode="json"))
        self.host = socket.gethostname()
        self.heartbeat_interval_s = heartbeat_interval_s
        self.grace_period_s = grace_period_s
        self.db_retry_s = db_retry_s
        self._retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        self._lock = threading.RLock()
        self._stop = self.runner.stop_event

    def _optuna_storage(self) -> optuna.storages.RDBStorage:
        return optuna_storage(
            self.storage, heartbeat_interval_s=self.heartbeat_interval_s,
            grace_period_s=self.grace_period_s, stale_trial_callback=self._on_stale_trial,
        )

    def prepare(self, *, budget: int | None = None, register: bool = True) -> optuna.Study:
        """Create or resume the study and record it; starts no engine."""
        ensure_schema(self.storage)
        study, created = open_study(self.space, self.name, self.storage, self._optuna_storage())
        if created:
            study.enqueue_trial(self.space.default_params(), user_attrs={DEFAULT_ATTR: True})
            for params in self.warm_start:  # an earlier study's Pareto set, right after
                study.enqueue_trial(params, user_attrs={WARM_START_ATTR: True})
        else:
            self._requeue_interrupted(study)
        if register or repository.get_study(url=self.storage, name=self.name) is None:
            repository.save_study(
                url=self.storage,
                name=self.name,
                space_yaml=self.space_yaml,
                space_path=self.space_path,
                model=self.space.model.path,
                hardware=self.pool.describe(),
                objectives=[
                    {"metric": o.metric, "direction": o.resolved_direction}
                    for o in self.space.objectives
                ],
                slos=dict(self.space.slos),
                trial_budget=budget,
            )
        fail_stale_trials(study)
        if self.runner.quality is not None:
            # The reference outputs come from the default trial, maybe in another worker.
            self.runner.quality.source = lambda: reference_state(study, DEFAULT_ATTR)
        return study

    def run(
        self, n_trials: int | None = None, timeout_s: float | None = None, parallel: int = 1,
        *, register: bool = True, max_trials_here: int | None = None,
    ) -> StudyRun:
        """Run trials until the study holds ``n_trials`` finished ones (None: the budget
        recorded with the study), up to ``parallel`` at once, each on its own devices, and at
        most ``max_trials_here`` in this process. Ctrl-C/SIGTERM tears every engine down."""
        study = self.prepare(budget=n_trials, register=register)
        if n_trials is None:
            record = repository.get_study(url=self.storage, name=self.name)
            n_trials = (record.trial_budget if record else None) or self.space.search.trials
        started = time.monotonic()
        self.reporter.study_started(self.name, finished_count(study), n_trials)
        self._ran = 0
        self._claimed_here = 0
        self._running: dict[int, int] = {}  # trial number → most trials running beside it
        self._peak = 0
        self._stop.clear()
        errors: list[BaseException] = []

        # Waiting on an Event, not Thread.join: a KeyboardInterrupt inside join() can leave the
        # thread looking finished while it still runs (CPython gh-90882).
        all_done = threading.Event()
        remaining = [max(1, parallel)]

        def worker() -> None:
            try:
                while True:
                    if timeout_s is not None and time.monotonic() - started > timeout_s:
                        return
                    claimed = self._with_db_retry(
                        "claiming a trial", lambda: self._claim(study, n_trials, max_trials_here)
                    )
                    if claimed is None:
                        return
                    if claimed == WAIT:
                        # The budget is taken, but partly by other workers' running trials:
                        # if one of them dies, its retry must still be run by someone.
                        self._stop.wait(self.heartbeat_interval_s)
                        continue
                    self._one_trial(study, *claimed, n_trials)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)
                self._stop.set()
            finally:
                with self._lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_done.set()

        threads = [threading.Thread(target=worker, name=f"trial-slot-{i}", daemon=True)
                   for i in range(max(1, parallel))]
        watchdog = threading.Thread(target=self._watch_stale, args=(study,), daemon=True)
        interrupted = False
        with _sigterm_as_interrupt():
            for thread in threads:
                thread.start()
            if not is_sqlite(self.storage):
                watchdog.start()
            try:
                while not all_done.wait(0.2):
                    pass
            except KeyboardInterrupt:
                interrupted = True
                self._stop.set()
                stop_all()
                all_done.wait()
        self._stop.set()
        if errors:
            raise errors[0]
        return StudyRun(self.name, self._ran, time.monotonic() - started, interrupted,
                        self._peak)

    def _claim(
        self, study: optuna.Study, budget: int, max_here: int | None
    ) -> tuple[optuna.trial.Trial, dict[str, Any], bool, int] | str | None:
        """Ask for the next trial if the budget allows: (trial, params, is_default, index)."""
        with self._lock, study_claim_lock(self.storage, self.name):
            if self._stop.is_set() or (max_here is not None and self._claimed_here >= max_here):
                return None
            trials = study.get_trials(deepcopy=False)
            taken = sum(1 for t in trials if counts_toward_budget(t))
            if taken >= budget:
                elsewhere = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                             and t.number not in self._running]
                return WAIT if elsewhere and not is_sqlite(self.storage) else None
            trial = study.ask()
            params = suggest_params(self.space, trial)
            is_default = bool(trial.user_attrs.get(DEFAULT_ATTR))
            retry_of = study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
            repository.start_trial(
                url=self.storage,
                study_name=self.name,
                number=trial.number,
                optuna_trial_id=trial._trial_id,
                params=params,
                is_default=is_default,
                host=self.host,
                retry_of=retry_of,
            )
            self._claimed_here += 1
            return trial, params, is_default, taken + 1

    def _one_trial(
        self, study: optuna.Study, trial: optuna.trial.Trial, params: dict[str, Any],
        is_default: bool, index: int, total: int,
    ) -> None:
        with self._lock:
            self._running[trial.number] = 0
            for number in self._running:
                self._running[number] = max(self._running[number], len(self._running))
            self._peak = max(self._peak, len(self._running))
            self.reporter.trial_started(index, total, trial.number, params)
        with get_heartbeat_thread(trial._trial_id, study._storage):
            outcome = self.runner.run(
                trial.number, params, is_default=is_default, on_phase=self.reporter.phase
            )
        with self._lock:
            outcome.metrics["parallel_trials"] = float(self._running.pop(trial.number))
        if self._stop.is_set() and outcome.state != "complete":
            self._with_db_retry("recording the interrupted trial",
                                lambda: self._record_interrupted(study, trial, params))
            return
        self._with_db_retry("recording the trial", lambda: self._record(study, trial, outcome))
        with self._lock:
            self._ran += 1
            self.reporter.trial_finished(trial.number, outcome)

    def _with_db_retry(self, what: str, action: Callable[[], Any]) -> Any:
        """Run ``action``; while the database is unreachable, retry with back-off and say so."""
        delay = 1.0
        deadline = time.monotonic() + self.db_retry_s
        while True:
            try:
                return action()
            except DB_ERRORS as exc:
                lost = (OperationalError, InterfaceError)
                transient = isinstance(exc, lost) or isinstance(exc.__cause__, lost)
                if not transient or time.monotonic() + delay > deadline:
                    raise
                self.reporter.notice(
                    f"database unreachable while {what} ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}); retrying in {delay:.0f}s"
                )
                time.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _watch_stale(self, study: optuna.Study) -> None:
        """Fail the trials of dead workers (no heartbeat for the grace period) promptly."""
        while not self._stop.wait(self.heartbeat_interval_s):
            try:
                with self._lock:
                    fail_stale_trials(study)
            except DB_ERRORS:
                continue

    def _on_stale_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A worker stopped sending heartbeats: record it, and queue its config again."""
        self._retry(study, trial)
        retried = len(trial.system_attrs.get("retry_history", [])) < (self._retry._max_retry or 0)
        repository.update_trial(
            url=self.storage, study_name=self.name, number=trial.number, state="failed",
            failure_kind=FailureKind.WORKER_LOST.value,
            failure_reason=(
                f"no heartbeat from its worker for {self.grace_period_s}s (noticed on "
                f"{self.host}); " + ("its configuration was queued again" if retried
                                     else "retry limit reached")
            ),
            finished=True,
        )
        self.reporter.notice(f"trial {trial.number} lost its worker; "
                             + ("retrying it" if retried else "retry limit reached"))

    def _record_interrupted(
        self, study: optuna.Study, trial: optuna.trial.Trial, params: dict[str, Any]
    ) -> None:
        if not study._storage.get_trial(trial._trial_id).state.is_finished():
            trial.set_user_attr(FAILURE_ATTR, FailureKind.INTERRUPTED.value)
            trial.set_user_attr(STATE_ATTR, "interrupted")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            attrs = {DEFAULT_ATTR: True} if trial.user_attrs.get(DEFAULT_ATTR) else {}
            study.enqueue_trial(params, user_attrs=attrs)  # another run or worker redoes it
        self._store_interrupted(trial.number, "stopped by the user (Ctrl-C or SIGTERM)")

    def _store_interrupted(self, number: int, reason: str) -> None:
        repository.update_trial(
            url=self.storage,
            study_name=self.name,
            number=number,
            state="interrupted",
            failure_kind=FailureKind.INTERRUPTED.value,
            failure_reason=reason,
            finished=True,
        )

    def _record(
        self, study: optuna.Study, trial: optuna.trial.Trial, outcome: TrialOutcome
    ) -> None:
        metrics = finite_metrics(outcome.metrics)
        if outcome.state == "complete":
            constraints = violations(self.space, outcome.metrics)
            values = objective_values(self.space, outcome.metrics)
        else:
            constraints = failed_violations(self.space)
            values = failed_values(self.space)
        feasible = outcome.state == "complete" and is_feasible(constraints)
        failure = outcome.failure
        if outcome.quality_reference is not None:  # stored before the default trial is told
            store_reference(study, outcome.quality_reference)
        if not study._storage.get_trial(trial._trial_id).state.is_finished():  # a DB retry
            trial.set_user_attr(STATE_ATTR, outcome.state)
            if failure is not None:
                trial.set_user_attr(FAILURE_ATTR, failure.kind.value)
            for key, value in constraints.items():
                trial.set_constraint(key, value)
            if failure is not None and failure.kind in NOT_THE_CONFIG:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, values)
        timings = outcome.timings
        repository.update_trial(
            url=self.storage,
            study_name=self.name,
            number=trial.number,
            state=outcome.state,
            metrics=metrics,
            feasible=feasible,
            violations=constraints,
            failure_kind=failure.kind.value if failure else None,
            failure_reason=(
                "; ".join([failure.reason, *outcome.notes])
                if failure
                else "; ".join(outcome.notes) or None
            ),
            failure_line=failure.line if failure else None,
            measurements=outcome.measurements or None,
            disturbed=outcome.disturbed,
            log_excerpt=outcome.log_excerpt or None,
            log_path=outcome.log_path or None,
            engine_command=outcome.argv,
            engine_flags=outcome.flags,
            model=outcome.model,
            engine_version=outcome.engine_version or None,
            devices=outcome.devices,
            startup_s=timings.get("startup_s"),
            warmup_s=timings.get("warmup_s"),
            benchmark_s=timings.get("benchmark_s"),
            teardown_s=timings.get("teardown_s"),
            finished=True,
        )

    def _requeue_interrupted(self, study: optuna.Study) -> None:
        if is_sqlite(self.storage):
            # One process owns a SQLite study: a trial still RUNNING belongs to a controller
            # that was killed. Close it as interrupted so its configuration is re-run.
            for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
                study._storage.set_trial_user_attr(
                    t._trial_id, FAILURE_ATTR, FailureKind.INTERRUPTED.value
                )
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                if repository.get_trial(url=self.storage, study_name=self.name, number=t.number):
                    self._store_interrupted(
                        t.number, "its controller stopped without finishing it"
                    )
        trials = study.get_trials(deepcopy=False)
        rerun = {
            repr(sorted(t.params.items()))
            for t in trials
            if t.state.is_finished() and t.user_attrs.get(FAILURE_ATTR) != FailureKind.INTERRUPTED
        }
        waiting = {
            repr(sorted(t.params.items()))
            for t in trials
            if t.state == optuna.trial.TrialState.WAITING
        }
        for t in trials:
            if t.user_attrs.get(FAILURE_ATTR) != FailureKind.INTERRUPTED:
                continue
            key = repr(sorted(t.params.items()))
            if key in rerun or key in waiting:
                continue
            attrs = {DEFAULT_ATTR: True} if t.user_attrs.get(DEFAULT_ATTR) else {}
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
            waiting.add(key)
