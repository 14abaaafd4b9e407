"""The study loop: claim a decision from the proposer, carry it out, record it in the store.

The first trial of a new study is the vLLM-default configuration (queued), so every result can
be shown as a gain over the defaults. Starting a study whose name exists resumes it. Several
worker processes (``autotune worker``) can share a study on PostgreSQL: claims are serialised by
the store's lock, heartbeats detect a dead worker and its configuration is retried by another.

The budget's last engine starts go to the confirm stage (``autotune.study.confirm``): the
front's picks and the defaults measured again on fresh servers, so the report's figures are
means over servers; the search gets the rest (docs/search.md, "Confirm stage").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotune.bench import pareto_values
from autotune.devices import DevicePool
from autotune.engines.base import EngineLauncher
from autotune.errors import AutotuneError
from autotune.results import configuration_key, measured_metrics
from autotune.scoring import is_feasible
from autotune.space import Configuration, Space, space_changes
from autotune.space.sections import ConfirmStageSpec
from autotune.store import Origin, StaleTrial, StudyFacts, StudyStore, Suggestion, open_store
from autotune.store.base import FreshRun
from autotune.study import confirm, recording
from autotune.study.claims import Claims
from autotune.study.executor import Executor
from autotune.study.proposer import Done, Proposer, Run, Wait, WaitForTwin
from autotune.study.reporter import SilentReporter, StudyReporter
from autotune.study.search import make_sampler
from autotune.trial import TrialOutcome, TrialRunner
from autotune.trial_state import FailureKind, TrialState

# Trials in a row failed by a fault of this machine (FailureKind.HOST_FAULT) after which this
# process stops claiming: each says nothing of its configuration, and the study's other
# workers may run them.
HOST_FAULTS_TO_STOP = 2


class SpaceChanged(AutotuneError):
    """A study resumed with a space whose measurements would not compare with its trials'."""

    exit_code = 2


@dataclass
class StudyRun:
    name: str
    trials_run: int
    wall_s: float
    interrupted: bool
    peak_parallel: int = 1
    confirm_starts: int = 0  # fresh servers the confirm stage started here
    host_problem: str | None = None  # why this machine stopped claiming (see StudyRunner)


class StudyRunner:
    """Runs trials of one study in this process, up to ``parallel`` at once.

    ``prepare`` creates or resumes the study (``register=False`` for a worker joining a study
    someone else created); ``run`` claims trials until the study's budget is reached.

    ``host_check`` (None: none) says why this machine can no longer run the study's trials (its
    model path or a data file gone), or None; it is asked after each failed trial. A failure it
    explains is this host's, not the configuration's: the trial is queued again for another
    worker (not counted, not learned by the crash model) and this process stops claiming
    (``StudyRun.host_problem``)."""

    def __init__(
        self, space: Space, *, store: StudyStore, trials: TrialRunner, hardware: str,
        reporter: StudyReporter | None = None, space_path: str = "",
        space_yaml: str | None = None, warm_start: Sequence[Mapping[str, Any]] = (),
        heartbeat_interval_s: int = 10, db_retry_s: float = 600.0,
        accept_space_change: bool = False,
    ) -> None:
        self.space = space
        self.accept_space_change = accept_space_change
        self.store = store
        self.runner = trials
        self.hardware = hardware
        self.reporter = reporter or SilentReporter()
        self.space_path = space_path
        self.space_yaml = space_yaml or yaml.safe_dump(space.model_dump(mode="json"))
        self.warm_start = [Configuration(dict(p)) for p in warm_start]
        self.heartbeat_interval_s = heartbeat_interval_s
        self.proposer = Proposer(space)
        self._stop = trials.stop_event
        self.executor = Executor(self._stop, self._notice, db_retry_s=db_retry_s,
                                 url=store.url)
        self.claims = Claims(space, store, self.proposer, self.executor, self._stop,
                             self._notice)
        self._lock = self.claims.lock
        store.notice = self._notice
        self.host_check: Callable[[], str | None] | None = None
        self.host_problem: str | None = None
        self._host_faults = 0

    @classmethod
    def create(
        cls, space: Space, *, name: str, storage: str, launcher: EngineLauncher,
        pool: DevicePool, log_dir: Path, runner: TrialRunner | None = None,
        grace_period_s: int = 30, max_retries: int = 2, heartbeat_interval_s: int = 10,
        **options: Any,
    ) -> StudyRunner:
        """A runner over the study ``name`` in the database at ``storage``."""
        store = open_store(storage, name, heartbeat_interval_s=heartbeat_interval_s,
                           grace_period_s=grace_period_s, max_retries=max_retries)
        trials = runner or TrialRunner(space, launcher, pool, log_dir / name)
        return cls(space, store=store, trials=trials, hardware=pool.describe(),
                   heartbeat_interval_s=heartbeat_interval_s, **options)

    @property
    def name(self) -> str:
        return self.store.name

    def _notice(self, text: str) -> None:
        self.reporter.notice(text)

    def prepare(self, *, budget: int | None = None, register: bool = True) -> None:
        """Create or resume the study and record it; starts no engine."""
        store = self.store
        if store.open(self.space, make_sampler(self.space)):
            store.enqueue(Configuration(self.space.default_params(), True), Origin.DEFAULT)
            for config in self.warm_start:  # an earlier study's Pareto set, right after
                store.enqueue(config, Origin.WARM_START)
        else:
            if register:  # a worker runs the stored space (autotune.space.trust)
                self._check_space_change()
            store.reconcile()
        if register or store.facts() is None:
            store.save_facts(StudyFacts(
                space_yaml=self.space_yaml, space_path=self.space_path,
                model=self.space.model.path, hardware=self.hardware,
                objectives=[{"metric": o.metric, "direction": o.resolved_direction}
                            for o in self.space.objectives],
                slos=dict(self.space.slo_limits), trial_budget=budget,
            ))
        store.fail_stale()
        if self.runner.quality is not None:
            # The reference outputs come from the default trial, maybe in another worker.
            self.runner.quality.source = store.quality_reference
        self.runner.measuring.front = self.front  # the load ladder's early stop

    def _check_space_change(self) -> None:
        """Resuming: refuse a space whose changes could alter a measurement (its trials and
        the earlier ones would not compare, yet results are reused by configuration), unless
        ``accept_space_change``; name the harmless ones."""
        facts = self.store.facts()
        if facts is None:
            return
        changed, harmless = space_changes(facts.space_yaml, self.space)
        if changed and not self.accept_space_change:
            shown = "\n".join(f"  {line}" for line in changed)
            raise SpaceChanged(
                f"study {self.name!r} exists with another space ({facts.space_path or 'stored'}"
                f"); its trials were measured under the stored one, and results are reused by "
                f"configuration, so they would not compare:\n{shown}\nRestore the file, give "
                "the study another --name, or pass --accept-space-change if these changes "
                "cannot alter a measurement (docs/search-space.md, \"Resuming a study\")")
        if changed:
            self._notice(f"study {self.name!r}: space changes accepted (--accept-space-change); "
                         "earlier trials are kept and reused: " + "; ".join(changed))
        if harmless:
            self._notice(f"study {self.name!r}: space changes that alter no measurement: "
                         + "; ".join(harmless))

    def front(self) -> list[list[float]]:
        """Objective values of the study's non-dominated feasible complete trials."""
        done = [list(t.values) for t in self.store.trials() if t.state is TrialState.COMPLETE
                and t.values is not None and is_feasible(t.constraints)]
        return pareto_values(done, self.space.directions)

    def finished_count(self) -> int:
        return sum(1 for t in self.store.trials() if not t.running and t.counts_toward_budget)

    def run(
        self, n_trials: int | None = None, timeout_s: float | None = None, parallel: int = 1,
        *, register: bool = True, max_trials_here: int | None = None,
        confirm_stage: bool | None = None,
    ) -> StudyRun:
        """Run trials until the study holds ``n_trials`` finished ones (None: the budget
        recorded with the study), up to ``parallel`` at once, each on its own devices, and at
        most ``max_trials_here`` in this process; then the confirm stage (``confirm_stage``
        None: as the space's ``search.confirm_stage`` says; False: skip it), whose engine
        starts the budget counts. Ctrl-C/SIGTERM tears every engine down."""
        self.prepare(budget=n_trials, register=register)
        if n_trials is None:
            record = self.store.facts()
            n_trials = (record.trial_budget if record else None) or self.space.search.trials
        stage = self.space.search.confirm_stage
        if confirm_stage is False:
            stage = stage.model_copy(update={"enabled": False})
        reserve = confirm.stage_reserve(stage, len(self.space.objectives), n_trials)
        budget = n_trials - reserve  # the search's share
        started = time.monotonic()
        spent, _, _ = confirm.stage_state(self.store.fresh_runs(), n_trials)
        self.reporter.study_started(self.name, self.finished_count() + spent, n_trials)
        self._ran = self._peak = self.claims.claimed_here = 0
        self._running: dict[int, int] = {}  # trial number → most trials running beside it
        self.host_problem = None
        self._host_faults = 0  # trials in a row that failed with host_fault here
        self._stop.clear()
        retry = self.executor.with_db_retry

        def slot() -> None:
            while self.host_problem is None and (
                    timeout_s is None or time.monotonic() - started <= timeout_s):
                decision, index = retry("claiming a trial", lambda: self.claims.next(
                    budget, self._running, max_trials_here))
                if isinstance(decision, Done):
                    if decision.notice:
                        self._notice(decision.notice)
                    return
                if isinstance(decision, Wait):
                    self._stop.wait(self.heartbeat_interval_s)
                    continue
                if isinstance(decision, WaitForTwin):
                    decision = self.claims.wait_for_twin(decision)
                    index = self.finished_count() + 1
                if isinstance(decision, Run):
                    self._one_trial(decision.suggestion, index, n_trials)

        def watch() -> None:
            with self._lock:
                self.store.fail_stale()

        watchdog = (watch, self.heartbeat_interval_s) if self.store.shared else None
        interrupted = self.executor.run(slot, parallel, watchdog)
        self._confirmed = 0
        if reserve and not interrupted and self.host_problem is None:
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                self._notice("the confirm stage did not run: the study's time is up (run the "
                             "same command again to run it)")
            elif self.finished_count() >= budget:
                self._stop.clear()
                interrupted = self.executor.run(
                    lambda: self._confirm_stage(stage, n_trials, reserve), 1, watchdog)
        return StudyRun(self.name, self._ran, time.monotonic() - started, interrupted,
                        self._peak, self._confirmed, self.host_problem)

    # -- the confirm stage ----------------------------------------------------------------------

    def _confirm_stage(self, stage: ConfirmStageSpec, budget: int, reserve: int) -> None:
        """Measure the front's picks and the defaults again on fresh servers, at most
        ``reserve`` starts in all (those spent before, in a run cut short, counted), once per
        budget, in one process (the one that finds the search over and no trial running)."""
        from autotune.results import load_report
        from autotune.store import open_catalog

        retry = self.executor.with_db_retry
        with self._lock, self.store.claim_lock():
            fresh = retry("reading the fresh-server runs", self.store.fresh_runs)
            spent, finished, claimed = confirm.stage_state(fresh, budget)
            if finished:
                return
            if self.store.shared:
                if claimed or any(t.running for t in self.store.trials()):
                    self._notice("the confirm stage runs in the worker that finishes the "
                                 "study's last trial, not here")
                    return
                retry("claiming the confirm stage", lambda: self.store.add_fresh_runs(
                    [FreshRun(confirm.STAGE_KEY, {}, confirm.claim_marker(budget))]))
        report = retry("reading the study", lambda: load_report(open_catalog(self.store.url),
                                                                self.name))
        runs: dict[str, int] = {}
        for t in report.trials:
            if t.state == "complete":
                key = configuration_key(t)
                runs[key] = runs.get(key, 0) + 1
        for run in fresh:
            if run.metrics:
                runs[run.key] = runs.get(run.key, 0) + 1
        starts = confirm.plan(report, stage, runs=runs, allowed=reserve - spent)
        objectives = [o.metric for o in self.space.objectives]
        kept = measured_metrics(objectives)
        base = self.runner
        front, base.measuring.front = base.measuring.front, None  # no early stop: a fresh run
        # nor the quality probe: accuracy is a property of the configuration, measured with
        # its first run; the stage re-measures what varies between servers
        quality, base.measuring.quality = base.measuring.quality, None
        try:
            for i, start in enumerate(starts):
                if self._stop.is_set():
                    return
                record = start.record
                self.reporter.confirm_started(spent + i, spent + len(starts), record.number,
                                              dict(record.params), start.why)
                # a runner of the study's kind (a Ray study's fresh servers run on its cluster),
                # its stop event the study's
                runner = base.fresh(base.log_dir / f"confirm-stage-{budget}-{spent + i + 1}")
                outcome = runner.run(record.number, dict(record.params),
                                     is_default=record.is_default,
                                     on_phase=self.reporter.phase)
                if self._stop.is_set() and outcome.state != "complete":
                    return  # interrupted: not spent, the next run starts it again
                if outcome.state == "complete":
                    kept_run = confirm.stage_run(record, confirm.fresh_figures(outcome, kept))
                else:
                    reason = outcome.failure.reason if outcome.failure else outcome.state
                    kept_run = confirm.stage_run(record, None, reason)
                retry("keeping a fresh-server run", lambda r=kept_run: self.store.add_fresh_runs(
                    [r]))
                self._confirmed += 1
                self.reporter.confirm_finished(record.number, outcome)
        finally:
            base.measuring.front, base.measuring.quality = front, quality
        retry("recording the confirm stage", lambda: self.store.add_fresh_runs(
            [FreshRun(confirm.STAGE_KEY, {}, confirm.finished_marker(budget))]))
        self._stage_summary(starts)

    def _stage_summary(self, starts: list[confirm.Start]) -> None:
        """Each confirmed configuration's figures now: the mean over its fresh servers."""
        from autotune.results import load_report
        from autotune.store import open_catalog

        if not starts:
            self._notice("confirm stage: every pick already rests on enough fresh servers")
            return
        after = load_report(open_catalog(self.store.url), self.name)
        shown: set[int] = set()
        for start in starts:
            number = start.record.number
            record = after.trial(number)
            if number in shown or record is None:
                continue
            shown.add(number)
            first = after.first_runs.get(number, {})
            figures = ", ".join(
                f"{m} {record.metrics[m]:.4g}"
                + (f" (first run {first[m]:.4g})" if m in first else "")
                for m in after.metrics if m in record.metrics)
            self._notice(f"confirm stage: trial {number} ({start.why}): {figures}; mean over "
                         f"{after.servers_of(record)} fresh server(s)")

    def _one_trial(self, suggestion: Suggestion, index: int, total: int) -> None:
        number, config = suggestion.number, suggestion.configuration
        with self._lock:
            self._running[number] = 0
            for other in self._running:
                self._running[other] = max(self._running[other], len(self._running))
            self._peak = max(self._peak, len(self._running))
            self.reporter.trial_started(index, total, number, config.as_dict())
        # The heartbeat lasts through the recording too: a database retry can take minutes,
        # and a trial silent that long would be failed as stale by another worker's watchdog
        # and measured again.
        with self.store.heartbeat(number):
            outcome = self.runner.run(number, config.as_dict(), is_default=config.is_default,
                                      on_phase=self.reporter.phase)
            with self._lock:
                outcome.metrics["parallel_trials"] = float(self._running.pop(number))
            problem = self._host_fault(outcome)
            recorded = self._requeue(number, problem) if problem else self._record(number,
                                                                                  outcome)
        if recorded:
            with self._lock:
                self._ran += 1
                self.reporter.trial_finished(number, outcome)

    def _host_fault(self, outcome: TrialOutcome) -> str | None:
        """Why this machine, not the configuration, failed the trial (``host_check``), or
        None. Counts the trials in a row failed with ``host_fault`` (recorded as they are: not
        learned by the crash model); at ``HOST_FAULTS_TO_STOP`` this process stops claiming."""
        if self._stop.is_set():
            return None
        failure = outcome.failure
        with self._lock:
            if failure is not None and failure.kind is FailureKind.HOST_FAULT:
                self._host_faults += 1
                if self._host_faults >= HOST_FAULTS_TO_STOP and self.host_problem is None:
                    self.host_problem = (
                        f"{self._host_faults} trials in a row failed with host_fault, a fault "
                        f"of this machine, not of their configurations (last: {failure.reason})")
                    self._notice(f"this process stopped claiming trials: {self.host_problem}")
            elif outcome.state in (TrialState.COMPLETE, TrialState.FAILED):
                self._host_faults = 0
        if self.host_check is None \
                or outcome.state not in (TrialState.FAILED, TrialState.REJECTED):
            return None
        return self.host_check()

    def _requeue(self, number: int, problem: str) -> bool:
        """Queue a trial this machine failed again for another worker, and stop claiming."""
        self.executor.with_db_retry("queueing the trial again", lambda: self.store.interrupt(
            number, f"not measured: this machine cannot run the study ({problem}); its "
            "configuration was queued again for another worker"))
        with self._lock:
            if self.host_problem is None:
                self.host_problem = problem
                self._notice(f"trial {number} failed because of this machine, not its "
                             f"configuration: queued again; this process stopped claiming "
                             f"trials ({problem})")
        return False

    def _record(self, number: int, outcome: TrialOutcome) -> bool:
        """Record a run trial's outcome; False when it was not recorded as run here."""
        retry = self.executor.with_db_retry
        if self._stop.is_set() and outcome.state != "complete":
            retry("recording the interrupted trial", lambda: self.store.interrupt(
                number, "stopped by the user (Ctrl-C or SIGTERM)"))
            return False
        reference = outcome.quality_reference
        if reference is not None:  # stored before the default trial is told
            retry("recording the quality reference",
                  lambda: self.store.set_quality_reference(reference))
        try:
            retry("recording the trial", lambda: self.store.finish(
                number, recording.measured(self.space, outcome)))
        except StaleTrial as exc:
            self._notice(f"{exc}: its configuration was queued again; this run's result is "
                         "not recorded")
            return False
        return True
