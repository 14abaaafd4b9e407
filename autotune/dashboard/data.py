"""What the dashboard reads, cached per study until the study's record changes.

Every read goes through the app's ``Catalog`` (``autotune.results.report`` builds the study from
it, and the figures ask it for Optuna's view). A study is re-read only when its ``updated_at``
moves (each trial start and finish stamps it), so a polling client costs one small query per
request. A re-read is incremental: trials that had finished are kept, only later ones are fetched
(``list_trials(after=N)``), and Pareto fronts are recomputed from the previous front plus the new
trials, which gives the same set since dominance is transitive. Re-reads run in the background: one
that takes longer than ``wait_s`` leaves requests with the previous snapshot meanwhile. """

from __future__ import annotations

import json
import logging
import math
import threading
from bisect import bisect_right
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from autotune.dashboard.formatting import metric_unit
from autotune.errors import AutotuneError
from autotune.metrics import bound_mark, gain_mark, natural_direction
from autotune.results import StudyReport, load_report, pareto_front, pick_trial
from autotune.store.values import StudyView, TrialView

if TYPE_CHECKING:
    from autotune.store import Catalog

log = logging.getLogger(__name__)

STATES = ("complete", "failed", "rejected", "interrupted", "running", "reused", "skipped")
# bounds: {metric: "≥" or "≤"} for the figures that are bounds (``autotune.metrics.bound_mark``)
TRIAL_COLUMNS = ["number", "state", "is_default", "feasible", "failure_kind", "failure_reason",
                 "params", "metrics", "started_at", "finished_at", "bounds"]
T = TypeVar("T")
# Fronts over picked metrics kept per study, least recently used first out: any ?metrics=
# combination may be asked for, and each kept front costs memory until the study moves.
FRONTS_KEPT = 64


class NotFoundError(AutotuneError):
    """An unknown study or trial. The message never names the storage (it may hold a password)."""


def number(value: Any) -> float | None:
    """JSON has no NaN/inf; 6 significant digits are plenty for plots and tables."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(f"{value:.6g}")
    return None


def timestamp(value: datetime | None) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value else None


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


@dataclass
class Snapshot:
    """One study as of one ``updated_at``, with what the pages derive from it."""

    study_id: int
    updated_at: datetime
    report: StudyReport
    # Pareto fronts already computed, by metrics; the objectives' is the report's.
    fronts: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    # Encoded trial rows, reused while the columns they were encoded with stay the same.
    rows: dict[int, bytes] = field(default_factory=dict)
    rows_columns: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    numbers: list[int] = field(init=False)
    metric_names: list[str] = field(init=False)
    param_names: list[str] = field(init=False)
    settled: int = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        trials = self.report.trials
        self.numbers = [t.number for t in trials]
        self.metric_names = self.report.metrics + sorted(
            {m for t in trials for m in t.metrics} - set(self.report.metrics)
        )
        self.param_names = sorted({p for t in trials for p in t.params})
        columns = (tuple(self.metric_names), tuple(self.param_names))
        if columns != self.rows_columns:
            self.rows, self.rows_columns = {}, columns
        self.fronts[tuple(self.report.metrics)] = self.report.pareto_front
        self.settled = -1
        for t in trials:
            if t.state == "running" or t.number != self.settled + 1:
                break
            self.settled = t.number
        self.trials_json()

    @classmethod
    def load(cls, catalog: Catalog, record: StudyView) -> Snapshot:
        return cls(record.id, record.updated_at, load_report(catalog, record.name))

    def refreshed(self, catalog: Catalog, record: StudyView) -> Snapshot:
        """The study as stored now, reading only the trials after the settled ones."""
        old = self.report
        if (record.id != self.study_id or record.objectives != old.objectives
                or record.slos != old.slos):
            return Snapshot.load(catalog, record)
        new = catalog.list_trials(record.name, after=self.settled)
        trials = old.trials[:bisect_right(self.numbers, self.settled)] + new
        report = StudyReport(
            name=old.name, model=record.model, hardware=record.hardware,
            objectives=record.objectives, slos=record.slos, trials=trials,
            default_number=next(
                (t.number for t in trials if t.is_default and t.state != "interrupted"), None),
        )
        by_number = {t.number: t for t in old.trials}
        fronts = {}
        for metrics, front in self.fronts.items():
            candidates = {n: by_number[n] for n in front} | {t.number: t for t in new}
            fronts[metrics] = pareto_front(list(candidates.values()), list(metrics),
                                           [self.direction(m) for m in metrics])
        report.pareto_front = fronts[tuple(report.metrics)]
        settled_rows = {n: row for n, row in self.rows.items() if n <= self.settled}
        return Snapshot(record.id, record.updated_at, report, fronts, settled_rows,
                        self.rows_columns)

    @property
    def version(self) -> str:
        return self.updated_at.isoformat()

    def direction(self, metric: str) -> str:
        """The objective's direction, or the way that is naturally better for other metrics."""
        for objective in self.report.objectives:
            if objective["metric"] == metric:
                return objective["direction"]
        return natural_direction(metric)

    @cached_property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for t in self.report.trials:
            counts[t.state] = counts.get(t.state, 0) + 1
        counts["total"] = len(self.report.trials)
        return counts

    def best(self) -> dict[str, dict[str, Any]]:
        """Per objective: the trial ``autotune export --pick max:/min:METRIC`` would take, its
        value and its gain over the default trial, each with its mark when it is a bound
        ("≥", "≤", "?" or "")."""
        out: dict[str, dict[str, Any]] = {}
        report = self.report
        for metric, direction in zip(report.metrics, report.directions, strict=True):
            best: dict[str, Any] = {"direction": direction, "trial": None, "value": None,
                                    "gain": None, "bound": "", "gain_bound": ""}
            how = "max" if direction == "maximize" else "min"
            try:
                record = pick_trial(report, number=None, pick=f"{how}:{metric}")
            except AutotuneError:  # no feasible trial measured it yet
                record = None
            if record is not None:
                default = (report.trial(report.default_number)
                           if report.default_number is not None else None)
                best.update(trial=record.number, value=number(record.metrics[metric]),
                            gain=number(report.gains(record).get(metric)),
                            bound=bound_mark(metric, record.metrics),
                            gain_bound=gain_mark(metric, record.metrics,
                                                 default.metrics if default else {}))
            out[metric] = best
        return out

    @cached_property
    def summary(self) -> dict[str, Any]:
        report = self.report
        return {
            "id": self.study_id,
            "name": report.name,
            "model": report.model,
            "hardware": report.hardware,
            "objectives": report.objectives,
            "slos": report.slos,
            "counts": self.counts,
            "best": self.best(),
            "default_trial": report.default_number,
            "pareto_front": report.pareto_front,
            "metrics": self.metric_names,
            "params": self.param_names,
            "directions": {m: self.direction(m) for m in self.metric_names},
            "units": {m: metric_unit(m) for m in self.metric_names},
            "updated_at": timestamp(self.updated_at),
            "version": self.version,
        }

    def _row(self, t: TrialView) -> bytes:
        row = self.rows.get(t.number)
        if row is None:
            row = dumps([
                t.number, t.state, t.is_default, t.feasible, t.failure_kind, t.failure_reason,
                [t.params.get(p) for p in self.param_names],
                [number(t.metrics.get(m)) for m in self.metric_names],
                timestamp(t.started_at), timestamp(t.finished_at),
                {m: mark for m in self.metric_names if (mark := bound_mark(m, t.metrics))},
            ])
            self.rows[t.number] = row
        return row

    def trials_json(self, after: int | None = None) -> bytes:
        """Trials numbered above ``after`` (all when None); column names are sent once."""
        start = 0 if after is None else bisect_right(self.numbers, after)
        head = dumps({
            "version": self.version,
            "updated_at": timestamp(self.updated_at),
            "counts": self.counts,
            "pareto_front": self.report.pareto_front,
            "columns": TRIAL_COLUMNS,
            "params": self.param_names,
            "metrics": self.metric_names,
            "directions": {m: self.direction(m) for m in self.metric_names},
        })
        with self._lock:
            rows = b",".join(self._row(t) for t in self.report.trials[start:])
        return head[:-1] + b',"trials":[' + rows + b"]}"

    def front(self, metrics: tuple[str, ...]) -> list[int]:
        """Feasible Pareto set over any metrics, each in its objective or natural direction."""
        with self._lock:
            front = self.fronts.pop(metrics, None)
            if front is None:
                directions = [self.direction(m) for m in metrics]
                front = pareto_front(self.report.trials, list(metrics), directions)
            self.fronts[metrics] = front  # the newest last (dicts keep insertion order)
            objectives = tuple(self.report.metrics)
            for key in [k for k in self.fronts if k != objectives][:-FRONTS_KEPT]:
                del self.fronts[key]
            return front


class Refreshing(Generic[T]):
    """The newest value per key, recomputed in the background when the key's version moves.

    ``compute(previous)`` gets the value it replaces (None the first time). A request for a
    version not computed yet waits up to ``wait_s`` for it, then gets the previous value; with
    no previous value it waits for the computation (and its error).
    """

    def __init__(self, executor: ThreadPoolExecutor, wait_s: float) -> None:
        self._executor = executor
        self._wait_s = wait_s
        self._values: dict[Hashable, tuple[datetime, T]] = {}
        self._jobs: dict[Hashable, tuple[datetime, Future[T]]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: datetime, compute: Callable[[T | None], T]) -> T:
        current = self._values.get(key)
        if current is not None and current[0] == version:
            return current[1]
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job[0] != version:
                previous = current[1] if current is not None else None
                future = self._executor.submit(self._run, key, version, compute, previous)
                job = self._jobs[key] = (version, future)
        if current is None:
            return job[1].result()
        try:
            return job[1].result(timeout=self._wait_s)
        except FutureTimeout:
            return current[1]
        except Exception:
            log.exception("re-reading %r failed; serving the previous data", key)
            return current[1]

    def _run(
        self, key: Hashable, version: datetime, compute: Callable[[T | None], T],
        previous: T | None,
    ) -> T:
        try:
            value = compute(previous)
        except BaseException:
            with self._lock:
                self._forget(key, version)
            raise
        with self._lock:
            current = self._values.get(key)
            if current is None or current[0] <= version:
                self._values[key] = (version, value)
            self._forget(key, version)
        return value

    def _forget(self, key: Hashable, version: datetime) -> None:
        job = self._jobs.get(key)
        if job is not None and job[0] == version:
            del self._jobs[key]


class StudyData:
    """The storage as the dashboard sees it. Thread-safe; one per app."""

    def __init__(self, catalog: Catalog, *, wait_s: float = 0.5) -> None:
        self.catalog = catalog
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dashboard")
        self.snapshots: Refreshing[Snapshot] = Refreshing(self.executor, wait_s)
        self.figures: Refreshing[dict[str, Any]] = Refreshing(self.executor, wait_s)

    def studies(self) -> list[StudyView]:
        """Every autotune study in the storage; none while its tables do not exist."""
        if not self.catalog.has_schema():
            return []
        return self.catalog.list_studies()

    def record(self, study_id: int) -> StudyView:
        record = next((s for s in self.studies() if s.id == study_id), None)
        if record is None:
            raise NotFoundError(f"there is no study #{study_id} in this storage")
        return record

    def snapshot(self, record: StudyView) -> Snapshot:
        def read(previous: Snapshot | None) -> Snapshot:
            if previous is None:
                return Snapshot.load(self.catalog, record)
            return previous.refreshed(self.catalog, record)

        return self.snapshots.get(record.id, record.updated_at, read)

    def study(self, study_id: int) -> Snapshot:
        return self.snapshot(self.record(study_id))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
