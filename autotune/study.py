"""The study loop: Optuna ask → TrialRunner → tell, with every trial recorded in our tables.

The first trial of a new study is the vLLM-default configuration (enqueued), so every result
can be shown as a gain over the defaults. Starting a study whose name exists resumes it; a trial
interrupted by Ctrl-C is re-queued on resume.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
import yaml

from autotune.db import repository
from autotune.db.session import ensure_schema
from autotune.devices import DevicePool
from autotune.engines.base import EngineLauncher
from autotune.engines.failures import FailureKind
from autotune.engines.process import stop_all
from autotune.scoring import (
    failed_values,
    failed_violations,
    is_feasible,
    objective_values,
    violations,
)
from autotune.space import Space, suggest_params
from autotune.trial import TrialOutcome, TrialRunner, finite_metrics

DEFAULT_ATTR = "autotune:default"
FAILURE_ATTR = "autotune:failure_kind"
STATE_ATTR = "autotune:state"
# Failures that say nothing about the configuration: Optuna marks them FAIL (ignored by
# samplers) instead of infeasible.
NOT_THE_CONFIG = (FailureKind.HOST_FAULT, FailureKind.INTERRUPTED)


class StudyReporter(Protocol):
    def study_started(self, name: str, done: int, total: int) -> None: ...

    def trial_started(
        self, index: int, total: int, number: int, params: dict[str, Any]
    ) -> None: ...

    def phase(self, phase: str) -> None: ...

    def trial_finished(self, number: int, outcome: TrialOutcome) -> None: ...


class SilentReporter:
    def study_started(self, name: str, done: int, total: int) -> None:
        pass

    def trial_started(self, index: int, total: int, number: int, params: dict[str, Any]) -> None:
        pass

    def phase(self, phase: str) -> None:
        pass

    def trial_finished(self, number: int, outcome: TrialOutcome) -> None:
        pass


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


def open_study(space: Space, name: str, storage: str) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists. Returns (study, created)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_obj = optuna.storages.RDBStorage(storage)
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


def finished_count(study: optuna.Study) -> int:
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.user_attrs.get(FAILURE_ATTR) != FailureKind.INTERRUPTED
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
    ) -> None:
        self.space = space
        self.name = name
        self.storage = storage
        self.pool = pool
        self.reporter = reporter or SilentReporter()
        self.runner = TrialRunner(space, launcher, pool, log_dir / name)
        self.space_path = space_path
        self.space_yaml = space_yaml or yaml.safe_dump(space.model_dump(mode="json"))
        self.host = socket.gethostname()
        self._lock = threading.RLock()
        self._stop = self.runner.stop_event

    def prepare(self) -> optuna.Study:
        """Create or resume the study and record it; starts nothing."""
        ensure_schema(self.storage)
        study, created = open_study(self.space, self.name, self.storage)
        if created:
            study.enqueue_trial(self.space.default_params(), user_attrs={DEFAULT_ATTR: True})
        else:
            self._requeue_interrupted(study)
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
        )
        return study

    def run(
        self, n_trials: int, timeout_s: float | None = None, parallel: int = 1
    ) -> StudyRun:
        """Run trials until the study holds ``n_trials`` finished ones, up to ``parallel`` at
        once (each on its own devices). Ctrl-C/SIGTERM tears every running engine down."""
        study = self.prepare()
        started = time.monotonic()
        done = finished_count(study)
        self.reporter.study_started(self.name, done, n_trials)
        self._claimed = 0
        self._ran = 0
        self._running: dict[int, int] = {}  # trial number → most trials running beside it
        self._peak = 0
        self._stop.clear()
        errors: list[BaseException] = []

        def claim() -> int | None:
            with self._lock:
                out_of_time = timeout_s is not None and time.monotonic() - started > timeout_s
                if self._stop.is_set() or out_of_time or done + self._claimed >= n_trials:
                    return None
                self._claimed += 1
                return done + self._claimed

        def worker() -> None:
            try:
                while (index := claim()) is not None:
                    self._one_trial(study, index, n_trials)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)
                self._stop.set()

        threads = [threading.Thread(target=worker, name=f"trial-slot-{i}", daemon=True)
                   for i in range(max(1, parallel))]
        interrupted = False
        with _sigterm_as_interrupt():
            for thread in threads:
                thread.start()
            try:
                while any(t.is_alive() for t in threads):
                    for thread in threads:
                        thread.join(timeout=0.2)
            except KeyboardInterrupt:
                interrupted = True
                self._stop.set()
                self.runner.stop_event.set()
                stop_all()
                for thread in threads:
                    thread.join()
        if errors:
            raise errors[0]
        return StudyRun(self.name, self._ran, time.monotonic() - started, interrupted,
                        self._peak)

    def _one_trial(self, study: optuna.Study, index: int, total: int) -> None:
        with self._lock:
            trial = study.ask()
            params = suggest_params(self.space, trial)
            is_default = bool(trial.user_attrs.get(DEFAULT_ATTR))
            repository.start_trial(
                url=self.storage,
                study_name=self.name,
                number=trial.number,
                optuna_trial_id=trial._trial_id,
                params=params,
                is_default=is_default,
                host=self.host,
            )
            self._running[trial.number] = 0
            for number in self._running:
                self._running[number] = max(self._running[number], len(self._running))
            self._peak = max(self._peak, len(self._running))
            self.reporter.trial_started(index, total, trial.number, params)
        outcome = self.runner.run(
            trial.number, params, is_default=is_default, on_phase=self.reporter.phase
        )
        with self._lock:
            outcome.metrics["parallel_trials"] = float(self._running.pop(trial.number))
            if self._stop.is_set() and outcome.state != "complete":
                self._record_interrupted(study, trial)
                return
            self._record(study, trial, outcome)
            self._ran += 1
            self.reporter.trial_finished(trial.number, outcome)

    def _record_interrupted(self, study: optuna.Study, trial: optuna.trial.Trial) -> None:
        trial.set_user_attr(FAILURE_ATTR, FailureKind.INTERRUPTED.value)
        trial.set_user_attr(STATE_ATTR, "interrupted")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        repository.update_trial(
            url=self.storage,
            study_name=self.name,
            number=trial.number,
            state="interrupted",
            failure_kind=FailureKind.INTERRUPTED.value,
            failure_reason="stopped by the user (Ctrl-C or SIGTERM)",
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
        if self.storage.startswith("sqlite"):
            # One process owns a SQLite study: a trial still RUNNING belongs to a controller
            # that was killed. Close it as interrupted so its configuration is re-run.
            for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
                study._storage.set_trial_user_attr(
                    t._trial_id, FAILURE_ATTR, FailureKind.INTERRUPTED.value
                )
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                if repository.get_trial(url=self.storage, study_name=self.name, number=t.number):
                    repository.update_trial(
                        url=self.storage,
                        study_name=self.name,
                        number=t.number,
                        state="interrupted",
                        failure_kind=FailureKind.INTERRUPTED.value,
                        failure_reason="its controller stopped without finishing it",
                        finished=True,
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
