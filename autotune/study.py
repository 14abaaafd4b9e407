"""The study loop: Optuna ask → TrialRunner → tell, with every trial recorded in our tables.

The first trial of a new study is the vLLM-default configuration (enqueued), so every result
can be shown as a gain over the defaults. Starting a study whose name exists resumes it; a trial
interrupted by Ctrl-C is re-queued. Several worker processes (``autotune worker``) can share a
study on PostgreSQL: claims are serialised by an advisory lock, heartbeats detect a dead worker
and its configuration is retried by another (up to ``max_retries``).
"""

from __future__ import annotations

import json
import random
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
from autotune.feasibility import CONFIG_FAILURES, FeasibilityModel, Observation
from autotune.quality.store import reference_state, store_reference
from autotune.scoring import (
    failed_values,
    failed_violations,
    is_feasible,
    objective_values,
    pareto_indices,
    violations,
)
from autotune.search import (
    LOCAL_SEARCH_AFTER,
    LOCAL_SEARCH_CYCLE,
    config_key,
    front_neighbours,
    make_sampler,
    uses_local_search,
)
from autotune.space import Space, suggest_params
from autotune.storage import is_sqlite, optuna_storage, study_claim_lock
from autotune.trial import TrialOutcome, TrialRunner, finite_metrics

DEFAULT_ATTR = "autotune:default"
FAILURE_ATTR = "autotune:failure_kind"
STATE_ATTR = "autotune:state"
WARM_START_ATTR = "autotune:warm_start"
CONFIG_ATTR = "autotune:config"  # the configuration actually run (snapped ordered choices)
REUSED_FROM_ATTR = "autotune:reused_from"
FALLBACK_ATTR = "autotune:unmeasured_pick"
# Suggestions that cost no engine: a configuration already measured (its result reused) or one
# the crash model predicts will fail (skipped). Neither counts toward the trial budget.
NO_LAUNCH_STATES = ("reused", "skipped")
# Reused or skipped suggestions in a row before the next trial is an unmeasured configuration
# picked at random (the sampler keeps proposing what it already knows).
MAX_ASKS_PER_CLAIM = 24
CONFIG_FAILURE_KINDS = frozenset(k.value for k in CONFIG_FAILURES)
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
        and trial.user_attrs[STATE_ATTR] not in NO_LAUNCH_STATES
        and trial.user_attrs.get(FAILURE_ATTR) != FailureKind.INTERRUPTED
    )


@dataclass
class History:
    """What a study knows before its next suggestion, read from the shared storage."""

    measured: dict[str, optuna.trial.FrozenTrial]  # config → a finished, reusable trial
    running: dict[str, optuna.trial.FrozenTrial]  # config → a trial running now
    observations: list[Observation]  # for the crash model, in trial order

    @classmethod
    def of(cls, trials: Sequence[optuna.trial.FrozenTrial]) -> History:
        measured: dict[str, optuna.trial.FrozenTrial] = {}
        running: dict[str, optuna.trial.FrozenTrial] = {}
        observations: list[Observation] = []
        for t in trials:
            key = t.user_attrs.get(CONFIG_ATTR)
            if key is None:
                continue
            params = json.loads(key)
            if t.user_attrs.get(DEFAULT_ATTR):
                # The default trial passes none of these flags: vLLM's own defaults may differ
                # from the nominal values, so it is not the same configuration as them.
                key = "default:" + key
            if t.state == optuna.trial.TrialState.RUNNING:
                running[key] = t
                continue
            state, kind = t.user_attrs.get(STATE_ATTR), t.user_attrs.get(FAILURE_ATTR)
            if state not in ("complete", "failed", "rejected") or t.values is None:
                continue  # reused, skipped, interrupted, host fault, lost worker
            measured.setdefault(key, t)
            if state == "complete":
                observations.append(Observation(params, started=True))
            elif kind in CONFIG_FAILURE_KINDS:
                observations.append(
                    Observation(params, started=False, launched=state == "failed")
                )
        return cls(measured, running, observations)

    def front(self, space: Space) -> list[dict[str, Any]]:
        """The configurations on the feasible Pareto front of the measured trials."""
        feasible = [
            t for t in self.measured.values()
            if t.user_attrs.get(STATE_ATTR) == "complete" and t.values is not None
            and is_feasible(t.constraints)
        ]
        return [
            json.loads(feasible[i].user_attrs[CONFIG_ATTR])
            for i in pareto_indices([list(t.values) for t in feasible], space.directions)
        ]


@dataclass
class WaitingClaim:
    """A suggestion equal to a trial running now: wait for that trial's result."""

    trial: optuna.trial.Trial
    params: dict[str, Any]
    twin: optuna.trial.FrozenTrial


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
                    if isinstance(claimed, WaitingClaim):
                        index = finished_count(study) + 1
                        claimed = self._wait_for_twin(study, claimed, index)
                        if claimed is None:
                            continue
                    assert isinstance(claimed, tuple)
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
    ) -> tuple[optuna.trial.Trial, dict[str, Any], bool, int] | WaitingClaim | str | None:
        """Ask for the next configuration to run if the budget allows.

        Returns (trial, params, is_default, index), a ``WaitingClaim`` when the suggestion is
        running right now, ``WAIT`` when only other workers' trials hold the budget, or None
        when there is nothing left to run. Suggestions already measured are answered with
        their result, and those the crash model rejects are told as failures, without an
        engine and without counting toward the budget."""
        with self._lock, study_claim_lock(self.storage, self.name):
            if self._stop.is_set() or (max_here is not None and self._claimed_here >= max_here):
                return None
            trials = study.get_trials(deepcopy=False)
            taken = sum(1 for t in trials if counts_toward_budget(t))
            if taken >= budget:
                elsewhere = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                             and t.number not in self._running]
                return WAIT if elsewhere and not is_sqlite(self.storage) else None
            history = History.of(trials)
            search = self.space.search
            model: FeasibilityModel | None = None
            if uses_local_search(self.space) and taken >= LOCAL_SEARCH_AFTER and (
                taken % LOCAL_SEARCH_CYCLE
            ):
                front = history.front(self.space)
                self._enqueue_neighbour(study, front, history, f"front:{taken}")
            for ask in range(MAX_ASKS_PER_CLAIM + 1):
                if ask == MAX_ASKS_PER_CLAIM and not self._enqueue_unmeasured(study, history):
                    self.reporter.notice(
                        "every configuration of the space is measured (or predicted to fail): "
                        "the study stops here"
                    )
                    return None
                trial = study.ask()
                params = suggest_params(self.space, trial)
                key = config_key(params)
                trial.set_user_attr(CONFIG_ATTR, key)
                is_default = bool(trial.user_attrs.get(DEFAULT_ATTR))
                system_attrs = study._storage.get_trial(trial._trial_id).system_attrs
                # Configurations the user or the study queued run as they are; the study's own
                # picks (a neighbour, an unmeasured configuration) face the crash model too.
                enqueued = "fixed_params" in system_attrs and not trial.user_attrs.get(
                    FALLBACK_ATTR)
                if not is_default and not search.remeasure:
                    if key in history.measured:
                        # The sampler returns to what it knows: reuse the result, and explore
                        # one step away from it instead (the next ask takes the neighbour).
                        self._reuse(study, trial, params, history.measured[key])
                        self._enqueue_neighbour(study, [params], history, f"{trial.number}")
                        continue
                    if key in history.running:
                        self._claimed_here += 1
                        return WaitingClaim(trial, params, history.running[key])
                if search.crash_learning and not (is_default or enqueued):
                    if model is None:
                        model = FeasibilityModel(self.space, history.observations, search.seed)
                    verdict = model.judge(params)
                    if verdict is not None and verdict.skip:
                        self._skip(study, trial, params, verdict.reason())
                        continue
                self._start_record(trial, params, is_default, system_attrs.get("failed_trial"))
                self._claimed_here += 1
                return trial, params, is_default, taken + 1
        return None  # unreachable: the last ask is an enqueued, unmeasured configuration

    def _start_record(
        self, trial: optuna.trial.Trial, params: dict[str, Any], is_default: bool,
        retry_of: int | None = None,
    ) -> None:
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

    def _reuse(
        self, study: optuna.Study, trial: optuna.trial.Trial, params: dict[str, Any],
        twin: optuna.trial.FrozenTrial,
    ) -> None:
        """Answer a suggestion with the result of the trial that measured it."""
        trial.set_user_attr(STATE_ATTR, "reused")
        trial.set_user_attr(REUSED_FROM_ATTR, twin.number)
        if FAILURE_ATTR in twin.user_attrs:
            trial.set_user_attr(FAILURE_ATTR, twin.user_attrs[FAILURE_ATTR])
        for key, value in twin.constraints.items():
            trial.set_constraint(key, value)
        assert twin.values is not None
        study.tell(trial, list(twin.values))
        self._no_launch_record(
            trial, params, "reused",
            f"the same configuration as trial {twin.number}: its result is reused "
            "(search.remeasure: true measures it again)",
        )

    def _skip(
        self, study: optuna.Study, trial: optuna.trial.Trial, params: dict[str, Any],
        reason: str,
    ) -> None:
        """Tell a suggestion the crash model rejects as a failure, without launching it."""
        trial.set_user_attr(STATE_ATTR, "skipped")
        for key, value in failed_violations(self.space).items():
            trial.set_constraint(key, value)
        study.tell(trial, failed_values(self.space))
        self._no_launch_record(trial, params, "skipped", reason)

    def _no_launch_record(
        self, trial: optuna.trial.Trial, params: dict[str, Any], state: str, reason: str
    ) -> None:
        self._start_record(trial, params, False)
        repository.update_trial(
            url=self.storage, study_name=self.name, number=trial.number, state=state,
            feasible=False, failure_reason=reason, finished=True,
        )

    def _enqueue_neighbour(
        self, study: optuna.Study, around: Sequence[Mapping[str, Any]], history: History,
        salt: str,
    ) -> None:
        """Queue an unmeasured configuration one step from one of ``around``, if there is one."""
        known = history.measured.keys() | history.running.keys()
        fresh = front_neighbours(self.space, around, known)
        if fresh:
            pick = random.Random(f"{self.space.search.seed}:{salt}").choice(fresh)
            study.enqueue_trial(pick, user_attrs={FALLBACK_ATTR: True})

    def _enqueue_unmeasured(self, study: optuna.Study, history: History) -> bool:
        """Queue a configuration picked at random among those not measured nor running."""
        seed = (self.space.search.seed or 0) * 1_000_003 + len(history.observations)
        picker = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        for _ in range(256):
            params = suggest_params(self.space, picker.ask())
            key = config_key(params)
            if key not in history.measured and key not in history.running:
                study.enqueue_trial(params, user_attrs={FALLBACK_ATTR: True})
                return True
        return False

    def _wait_for_twin(
        self, study: optuna.Study, claim: WaitingClaim, index: int
    ) -> tuple[optuna.trial.Trial, dict[str, Any], bool, int] | None:
        """Wait for the running trial with the same configuration, then reuse its result (or,
        if it did not finish with one, run the configuration here)."""
        self.reporter.notice(
            f"trial {claim.trial.number}: the same configuration as trial "
            f"{claim.twin.number}, which is running; waiting for its result"
        )
        with get_heartbeat_thread(claim.trial._trial_id, study._storage):
            while True:
                twin = self._with_db_retry(
                    "waiting for a trial",
                    lambda: study._storage.get_trial(claim.twin._trial_id),
                )
                if twin.state != optuna.trial.TrialState.RUNNING:
                    break
                if self._stop.wait(1.0):
                    self._with_db_retry("withdrawing a suggestion", lambda: self._withdraw(
                        study, claim))
                    return None
        with self._lock:
            key = config_key(claim.params)
            if key in History.of([twin]).measured:
                self._with_db_retry("reusing a result", lambda: self._reuse(
                    study, claim.trial, claim.params, twin))
                return None
            self._start_record(claim.trial, claim.params, False)
            return claim.trial, claim.params, False, index

    def _withdraw(self, study: optuna.Study, claim: WaitingClaim) -> None:
        claim.trial.set_user_attr(STATE_ATTR, "reused")
        study.tell(claim.trial, state=optuna.trial.TrialState.FAIL)
        self._no_launch_record(
            claim.trial, claim.params, "reused",
            f"stopped while waiting for trial {claim.twin.number} (the same configuration)",
        )

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
