"""``StudyStore`` on a SQL database: Optuna's RDB storage beside autotune's tables.

The only module that touches Optuna's private API (trial ids, the heartbeat helpers, the retry
callback's limit) and, through ``autotune.store.db.repository``, autotune's tables.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models as optuna_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState as OptunaState

from autotune.space import Configuration, params_key
from autotune.store._catalog import study_view, summary_of
from autotune.store.attrs import (
    CONFIG_ATTR,
    DEFAULT_ATTR,
    FAILURE_ATTR,
    FALLBACK_ATTR,
    FRESH_RUNS_ATTR,
    REFERENCE_ATTR,
    REUSED_FROM_ATTR,
    STATE_ATTR,
    WARM_START_ATTR,
)
from autotune.store.base import (
    FreshRun,
    Origin,
    StaleTrial,
    StudyFacts,
    Suggestion,
    TrialResult,
    TrialSummary,
)
from autotune.store.connection import is_sqlite, optuna_storage, study_claim_lock
from autotune.store.db import repository
from autotune.store.db.session import ensure_schema
from autotune.store.heartbeat import Heartbeat
from autotune.store.values import StudyView
from autotune.trial_state import FailureKind, TrialState

if TYPE_CHECKING:
    from autotune.quality import Reference
    from autotune.space import Space

# Heartbeats, retries and grouped TPE are "experimental" in Optuna; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

# Optuna system attribute of a trial the watchdog failed (its worker was lost), written in the
# same transaction as the FAIL: a verdict its worker tells later is told stale by it, however
# the two raced. Never copied to the trial's retry.
LOST_ATTR = "autotune:lost"
# What a trial's retry does not inherit: the verdict its lost worker may have begun to write.
_VERDICT_ATTRS = (STATE_ATTR, FAILURE_ATTR, REUSED_FROM_ATTR)


class RdbStudyStore:
    """The whole ``StudyStore`` contract in one class (over 200 lines, on purpose): nearly every
    method pairs an Optuna write with a row write in a set order (Optuna first, then the row),
    and that rule is easiest to keep, and to check, where all the pairs stand together."""

    def __init__(
        self, url: str, name: str, *, heartbeat_interval_s: int = 10, grace_period_s: int = 30,
        max_retries: int = 2, notice: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.host = socket.gethostname()
        self.shared = not is_sqlite(url)
        self.grace_period_s = grace_period_s
        self.max_retries = max_retries
        self.notice = notice or (lambda text: None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        self._storage = optuna_storage(
            url, heartbeat_interval_s=heartbeat_interval_s, grace_period_s=grace_period_s,
            stale_trial_callback=self._on_stale_trial,
        )
        self._study: optuna.Study | None = None
        self._asked: dict[int, optuna.trial.Trial] = {}  # Optuna trials this process asked
        self._started: set[int] = set()  # ... and the ones whose row it wrote as running
        self._stale: list[int] = []
        self._lock = threading.RLock()
        # The watchdog's view (see fail_stale): since when it has been in unbroken contact with
        # the database, when it last was, and when it first saw each trial without heartbeat.
        self._contact_since: float | None = None
        self._last_contact: float | None = None
        self._unbeaten: dict[int, float] = {}

    # -- the study ------------------------------------------------------------------------

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            raise RuntimeError(f"study {self.name!r} is not open: call open() first")
        return self._study

    def open(self, space: Space, sampler: optuna.samplers.BaseSampler) -> bool:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        ensure_schema(self.url)
        try:
            optuna.load_study(study_name=self.name, storage=self._storage)
            created = False
        except KeyError:
            created = True
        study = optuna.create_study(
            study_name=self.name, storage=self._storage, directions=space.directions,
            sampler=sampler, load_if_exists=True,
        )
        wanted = [
            optuna.study.StudyDirection.MAXIMIZE if d == "maximize"
            else optuna.study.StudyDirection.MINIMIZE
            for d in space.directions
        ]
        if list(study.directions) != wanted:
            raise ValueError(
                f"study {self.name!r} exists with other objectives; use another --name")
        self._study = study
        return created

    def optuna_study(self) -> optuna.Study:
        return self.study

    def save_facts(self, facts: StudyFacts) -> None:
        repository.save_study(
            url=self.url, name=self.name, space_yaml=facts.space_yaml,
            space_path=facts.space_path, model=facts.model, hardware=facts.hardware,
            objectives=facts.objectives, slos=facts.slos, trial_budget=facts.trial_budget,
        )

    def facts(self) -> StudyView | None:
        record = repository.get_study(url=self.url, name=self.name)
        return study_view(record) if record is not None else None

    # -- trials -----------------------------------------------------------------------------

    def enqueue(self, configuration: Configuration, origin: Origin) -> None:
        attrs: dict[str, Any] = {}
        if configuration.is_default:
            attrs[DEFAULT_ATTR] = True
        if origin is Origin.WARM_START:
            attrs[WARM_START_ATTR] = True
        if origin is Origin.STUDY:
            attrs[FALLBACK_ATTR] = True
        self.study.enqueue_trial(configuration.as_dict(), user_attrs=attrs)

    def ask(self, space: Space) -> Suggestion:
        from autotune.space import suggest_params

        trial = self.study.ask()
        if self._storage.get_heartbeat_interval() is not None:
            # A claim is alive from its first moment: were its worker to die (or its claim to
            # be retried after a lost connection) before the trial's heartbeat starts, the
            # watchdog fails it and queues it again after the grace period (see fail_stale).
            self._storage.record_heartbeat(trial._trial_id)
        params = suggest_params(space, trial)
        trial.set_user_attr(CONFIG_ATTR, params_key(params))
        self._asked[trial.number] = trial
        attrs = trial.user_attrs
        system_attrs = self._storage.get_trial(trial._trial_id).system_attrs
        if attrs.get(DEFAULT_ATTR):
            origin = Origin.DEFAULT
        elif attrs.get(FALLBACK_ATTR):
            origin = Origin.STUDY
        elif attrs.get(WARM_START_ATTR):
            origin = Origin.WARM_START
        elif "fixed_params" in system_attrs:
            origin = Origin.QUEUED
        else:
            origin = Origin.SAMPLER
        return Suggestion(
            trial.number, Configuration(params, bool(attrs.get(DEFAULT_ATTR))), origin,
            system_attrs.get("failed_trial"),
        )

    def start(self, suggestion: Suggestion) -> None:
        self._write_row(suggestion.number, TrialState.RUNNING, finished=False,
                        retry_of=suggestion.retry_of)
        self._started.add(suggestion.number)

    def _forget(self, number: int) -> None:
        self._asked.pop(number, None)
        self._started.discard(number)

    def _write_row(
        self, number: int, state: TrialState, *, finished: bool, retry_of: int | None = None,
        **fields: Any,
    ) -> None:
        trial = self._asked[number]
        repository.record_trial(
            url=self.url, study_name=self.name, number=number,
            optuna_trial_id=trial._trial_id, params=json.loads(trial.user_attrs[CONFIG_ATTR]),
            is_default=bool(trial.user_attrs.get(DEFAULT_ATTR)), host=self.host,
            retry_of=retry_of, state=state.value, finished=finished, **fields,
        )

    def _told(self, number: int, result: TrialResult | None = None) -> bool:
        """Whether Optuna holds the trial as finished by us; raises StaleTrial when someone
        else finished it: no verdict of ours on it, or (a database retry after the watchdog
        of another worker failed it in between) not the verdict ``result`` would tell."""
        frozen = self._storage.get_trial(self._asked[number]._trial_id)
        if not frozen.state.is_finished():
            return False
        ours = STATE_ATTR in frozen.user_attrs and LOST_ATTR not in frozen.system_attrs and (
            result is None
            or (frozen.state == OptunaState.COMPLETE) == (result.values is not None))
        if not ours:
            raise StaleTrial(f"trial {number} was failed as stale by another worker")
        return True

    def finish(self, number: int, result: TrialResult) -> None:
        trial = self._asked[number]
        if not self._told(number, result):  # not a database retry after a lost reply
            try:
                self._tell(trial, result)
            except (UpdateFinishedTrialError, ValueError):
                # Failed by a watchdog between the check and the tell (Optuna refuses to
                # update a finished trial): StaleTrial, as above, the race lost.
                if not self._told(number, result):
                    raise
        if number in self._started:
            repository.update_trial(
                url=self.url, study_name=self.name, number=number, state=result.state.value,
                feasible=result.feasible, failure_reason=result.reason, finished=True,
                **result.columns,
            )
        else:  # answered without an engine: its row is written once, finished
            self._write_row(number, result.state, finished=True, feasible=result.feasible,
                            failure_reason=result.reason, **result.columns)
        self._forget(number)

    def _tell(self, trial: optuna.trial.Trial, result: TrialResult) -> None:
        trial.set_user_attr(STATE_ATTR, result.state.value)
        if result.failure_kind is not None:
            trial.set_user_attr(FAILURE_ATTR, result.failure_kind.value)
        if result.reused_from is not None:
            trial.set_user_attr(REUSED_FROM_ATTR, result.reused_from)
        for key, value in result.constraints.items():
            trial.set_constraint(key, value)
        if result.values is None:
            self.study.tell(trial, state=OptunaState.FAIL)
        else:
            self.study.tell(trial, result.values)

    def withdraw(self, number: int, reason: str) -> None:
        trial = self._asked[number]
        try:
            told = self._told(number)
        except StaleTrial:  # failed as lost and queued again by a watchdog: nothing to end
            self._forget(number)
            return
        if not told:
            trial.set_user_attr(STATE_ATTR, TrialState.REUSED.value)
            self.study.tell(trial, state=OptunaState.FAIL)
        self._write_row(number, TrialState.REUSED, finished=True, feasible=False,
                        failure_reason=reason)
        self._forget(number)

    def interrupt(self, number: int, reason: str) -> None:
        trial = self._asked[number]
        frozen = self._storage.get_trial(trial._trial_id)
        if LOST_ATTR in frozen.system_attrs:  # a watchdog failed it and queued it again
            self._forget(number)
            return
        if not frozen.state.is_finished():
            trial.set_user_attr(FAILURE_ATTR, FailureKind.INTERRUPTED.value)
            trial.set_user_attr(STATE_ATTR, TrialState.INTERRUPTED.value)
            self.study.tell(trial, state=OptunaState.FAIL)
            # Another run or worker redoes it.
            self.enqueue(Configuration(frozen.params, bool(frozen.user_attrs.get(DEFAULT_ATTR))),
                         Origin.QUEUED)
        self._store_interrupted(number, reason)
        self._forget(number)

    def _store_interrupted(self, number: int, reason: str) -> None:
        repository.update_trial(
            url=self.url, study_name=self.name, number=number,
            state=TrialState.INTERRUPTED.value, failure_kind=FailureKind.INTERRUPTED.value,
            failure_reason=reason, finished=True,
        )

    def trials(self) -> list[TrialSummary]:
        return [summary_of(t) for t in self.study.get_trials(deepcopy=False)]

    def trial(self, number: int) -> TrialSummary:
        trial_id = self._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number)
        return summary_of(self._storage.get_trial(trial_id))

    # -- resume -----------------------------------------------------------------------------

    def reconcile(self) -> None:
        study = self.study
        if not self.shared:
            # One process owns a SQLite study: a trial still RUNNING belongs to a controller
            # that was killed. Close it as interrupted so its configuration is re-run.
            for t in study.get_trials(deepcopy=False, states=[OptunaState.RUNNING]):
                self._storage.set_trial_user_attr(
                    t._trial_id, FAILURE_ATTR, FailureKind.INTERRUPTED.value)
                self._storage.set_trial_state_values(t._trial_id, OptunaState.FAIL)
        trials = study.get_trials(deepcopy=False)
        self._reconcile_rows(trials)
        self._requeue_interrupted(trials)

    def _reconcile_rows(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Rows still "running" whose Optuna trial finished: the controller stopped between
        the two writes (or, for a verdict-less FAIL, before recording anything)."""
        by_number = {t.number: t for t in trials}
        for row in repository.list_trials(url=self.url, study_name=self.name):
            trial = by_number.get(row.number)
            if row.state != TrialState.RUNNING or trial is None or not trial.state.is_finished():
                continue
            state = trial.user_attrs.get(STATE_ATTR)
            kind = trial.user_attrs.get(FAILURE_ATTR)
            if state is None or kind == FailureKind.INTERRUPTED:
                self._store_interrupted(row.number, "its controller stopped without finishing it")
                continue
            repository.update_trial(
                url=self.url, study_name=self.name, number=row.number, state=state,
                failure_kind=kind, feasible=state == TrialState.COMPLETE and all(
                    v <= 0 for v in trial.constraints.values()),
                failure_reason="told to Optuna, but its controller stopped before recording "
                               "the details", finished=True,
            )

    def _requeue_interrupted(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        def key(t: optuna.trial.FrozenTrial, params: dict[str, Any]) -> str:
            return Configuration(params, bool(t.user_attrs.get(DEFAULT_ATTR))).key()

        done = {key(t, t.params) for t in trials if t.state.is_finished()
                and t.user_attrs.get(FAILURE_ATTR) != FailureKind.INTERRUPTED}
        waiting = {key(t, t.system_attrs.get("fixed_params", t.params)) for t in trials
                   if t.state == OptunaState.WAITING}
        for t in trials:
            if t.user_attrs.get(FAILURE_ATTR) != FailureKind.INTERRUPTED:
                continue
            k = key(t, t.params)
            if k in done or k in waiting:
                continue
            self.enqueue(Configuration(dict(t.params), bool(t.user_attrs.get(DEFAULT_ATTR))),
                         Origin.QUEUED)
            waiting.add(k)

    # -- several workers --------------------------------------------------------------------

    def claim_lock(self) -> AbstractContextManager[None]:
        return study_claim_lock(self.url, self.name)

    def heartbeat(self, number: int) -> AbstractContextManager[None]:
        interval = self._storage.get_heartbeat_interval()
        if interval is None:  # not shared: no watchdog to keep at bay
            return nullcontext()
        trial_id = self._asked[number]._trial_id
        return Heartbeat(lambda: self._storage.record_heartbeat(trial_id), interval,
                         number=number, notice=lambda text: self.notice(text))

    def fail_stale(self) -> list[int]:
        """Optuna's stale check, with what it cannot see: a claim that never sent a heartbeat
        (its worker died, or its claim was cut off, right after the ask) is silent from when
        this watchdog first saw it; and silence is judged only after a grace period of unbroken
        contact with the database (this process's first, and after every round that failed or
        came more than a grace period after the last): heartbeats missed while the database
        was out of reach are the outage's fault, not the workers'. A trial is failed in one
        transaction with its lost mark (``LOST_ATTR``), then queued again; one trial's
        bookkeeping failing does not keep the others from theirs."""
        if self._storage.get_heartbeat_interval() is None:
            return []
        with self._lock:
            self._stale = []
            try:
                return self._watch_round()
            except BaseException:
                self._contact_since = self._last_contact = None
                raise

    def _watch_round(self) -> list[int]:
        silent = self._silences()
        now = time.monotonic()
        grace = self.grace_period_s
        if self._last_contact is None or now - self._last_contact > grace:
            self._contact_since = now
        self._last_contact = now
        self._unbeaten = {trial_id: self._unbeaten.get(trial_id, now)
                          for trial_id, age in silent if age is None}
        assert self._contact_since is not None
        judging = now - self._contact_since >= grace
        lost = [trial_id for trial_id, age in silent if judging and (
            now - self._unbeaten[trial_id] if age is None else age) > grace]
        # Queueing a retry and checking that none is queued yet are one step across all
        # watchdogs (the claim lock): a lost trial is queued again once, never twice.
        if lost or self._unqueued_lost():
            with self.claim_lock():
                for trial_id in lost:
                    trial = self._fail_lost(trial_id)
                    if trial is not None:  # else finished meanwhile (its worker, a watchdog)
                        self._after_lost(trial)
                for trial in self._unqueued_lost():
                    self._after_lost(copy.deepcopy(trial))
        return list(self._stale)

    def _after_lost(self, trial: optuna.trial.FrozenTrial) -> None:
        try:
            self._on_stale_trial(self.study, trial)
        except Exception as exc:
            if isinstance(exc, (sqlalchemy.exc.DBAPIError,
                                optuna.exceptions.StorageInternalError)):
                raise  # the next round queues it (``_unqueued_lost``)
            # A bug in one trial's bookkeeping: the others must still be queued.
            self.notice(f"trial {trial.number} lost its worker; recording it failed "
                        f"({type(exc).__name__}: {exc})")

    def _unqueued_lost(self) -> list[optuna.trial.FrozenTrial]:
        """Lost trials whose retry is due but missing: the watchdog that failed them lost its
        connection (or died) before queueing it."""
        trials = self.study.get_trials(deepcopy=False)
        queued = {t.system_attrs["retry_history"][-1] for t in trials
                  if t.system_attrs.get("retry_history")}
        return [t for t in trials
                if t.state == OptunaState.FAIL and LOST_ATTR in t.system_attrs
                and t.number not in queued
                and len(t.system_attrs.get("retry_history", [])) < self.max_retries]

    def _silences(self) -> list[tuple[int, float | None]]:
        """Each running trial's id and seconds since its last heartbeat (by the database's
        clock), None for a trial without one."""
        models = optuna_models
        study_id = self.study._study_id
        with _create_scoped_session(self._storage.scoped_session) as session:
            now = session.execute(sqlalchemy.func.now()).scalar_one().replace(tzinfo=None)
            rows = (
                session.query(models.TrialModel.trial_id, models.TrialHeartbeatModel.heartbeat)
                .outerjoin(models.TrialHeartbeatModel,
                           models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study_id,
                        models.TrialModel.state == OptunaState.RUNNING)
                .order_by(models.TrialModel.trial_id)
                .all()
            )
        return [(trial_id, None if beat is None else (now - beat).total_seconds())
                for trial_id, beat in rows]

    def _fail_lost(self, trial_id: int) -> optuna.trial.FrozenTrial | None:
        """FAIL a running trial and mark it lost, at once; None when it is no longer running."""
        models = optuna_models
        with _create_scoped_session(self._storage.scoped_session) as session:
            row = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            if row.state != OptunaState.RUNNING:
                return None
            row.state = OptunaState.FAIL
            row.datetime_complete = datetime.now()
            session.add(models.TrialSystemAttributeModel(
                trial_id=trial_id, key=LOST_ATTR, value_json=json.dumps(self.host)))
        return copy.deepcopy(self._storage.get_trial(trial_id))

    def _on_stale_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A worker stopped sending heartbeats: record it, and queue its config again."""
        retry = copy.deepcopy(trial)
        retry.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in _VERDICT_ATTRS}
        retry.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != LOST_ATTR}
        self._retry(study, retry)
        retried = len(trial.system_attrs.get("retry_history", [])) < self.max_retries
        self._stale.append(trial.number)
        fields: dict[str, Any] = dict(
            state=TrialState.FAILED.value, failure_kind=FailureKind.WORKER_LOST.value,
            failure_reason=(
                f"no heartbeat from its worker for {self.grace_period_s}s (noticed on "
                f"{self.host}); " + ("its configuration was queued again" if retried
                                     else "retry limit reached")
            ),
        )
        try:
            repository.update_trial(url=self.url, study_name=self.name, number=trial.number,
                                    finished=True, **fields)
        except KeyError:
            # Never started by its worker (a claim waiting for its twin, or cut off right
            # after the ask): its row is written now, if it is known what it was to run.
            config = trial.user_attrs.get(CONFIG_ATTR)
            params = json.loads(config) if config else trial.system_attrs.get("fixed_params")
            if params is not None:
                repository.record_trial(
                    url=self.url, study_name=self.name, number=trial.number,
                    optuna_trial_id=trial._trial_id, params=params,
                    is_default=bool(trial.user_attrs.get(DEFAULT_ATTR)), host="",
                    retry_of=trial.system_attrs.get("failed_trial"), finished=True, **fields)
        self.notice(f"trial {trial.number} lost its worker; "
                    + ("retrying it" if retried else "retry limit reached"))

    # -- the quality reference ----------------------------------------------------------------

    def quality_reference(self) -> tuple[Reference | None, bool]:
        from autotune.quality import Reference

        study = self.study
        attrs = self._storage.get_study_user_attrs(study._study_id)  # fresh, not a cached copy
        data = attrs.get(REFERENCE_ATTR)
        if data is not None:
            return Reference.from_dict(data), False
        # A default trial only *waiting* to run does not count: its retry (after its worker
        # died) may have to be run by the very worker that is asking, which must not wait for
        # itself.
        pending = any(
            t.user_attrs.get(DEFAULT_ATTR) and t.state == OptunaState.RUNNING
            for t in study.get_trials(deepcopy=False)
        )
        return None, pending

    def set_quality_reference(self, reference: Reference) -> None:
        self.study.set_user_attr(REFERENCE_ATTR, reference.to_dict())

    # -- fresh-server runs (the noise model's evidence) ---------------------------------------

    def add_fresh_runs(self, runs: list[FreshRun]) -> None:
        with self._lock:
            study_id = self._storage.get_study_id_from_name(self.name)
            kept = self._storage.get_study_user_attrs(study_id).get(FRESH_RUNS_ATTR, [])
            self._storage.set_study_user_attr(
                study_id, FRESH_RUNS_ATTR, [*kept, *(r.to_dict() for r in runs)])

    def fresh_runs(self) -> list[FreshRun]:
        study_id = self._storage.get_study_id_from_name(self.name)
        attrs = self._storage.get_study_user_attrs(study_id)
        return [FreshRun.from_dict(r) for r in attrs.get(FRESH_RUNS_ATTR, [])]
