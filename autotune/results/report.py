"""A study as people read it: trials, the feasible Pareto front, gains over the vLLM default.

Built from autotune's own tables only, read through a ``Catalog``, so ``study show``, the
end-of-study table and the dashboard agree.

A configuration measured on several fresh servers (the confirm stage at the end of a study, or
``autotune confirm``) is shown by the MEAN of its runs, its first run included: the front, the
gains over the defaults and the export read those means (``fresh_means``), and ``servers``
says how many runs each trial's figures rest on. A capacity the ladder could not bracket is a
lower bound (``autotune.metrics.bound_mark``): it never wins a comparison as if exact
(``pareto_front``, ``best``, ``knee``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autotune.errors import StudyNotFoundError
from autotune.metrics import LOWER_BOUND_FLAG, bound_mark, gain_mark
from autotune.results.noise_model import configuration_key
from autotune.scoring import gain
from autotune.space import QUALITY_METRICS
from autotune.store.values import TrialView

if TYPE_CHECKING:
    from autotune.store import Catalog
    from autotune.store.base import FreshRun


@dataclass
class StudyReport:
    name: str
    model: str
    hardware: str
    objectives: list[dict[str, str]]
    slos: dict[str, float]
    trials: list[TrialView]
    pareto_front: list[int] = field(default_factory=list)
    default_number: int | None = None
    # Trial number → fresh servers its figures are the mean of (absent: 1, its own run).
    servers: dict[int, int] = field(default_factory=dict)
    # Trial number → its own run's figures, where a mean over fresh servers replaced them.
    first_runs: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return [o["metric"] for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o["direction"] for o in self.objectives]

    @property
    def quality_columns(self) -> list[str]:
        """Quality metrics some trial measured that are not objectives, in a fixed order."""
        present = {k for t in self.trials for k in t.metrics}
        return [m for m in QUALITY_METRICS if m in present and m not in self.metrics]

    def trial(self, number: int) -> TrialView | None:
        return next((t for t in self.trials if t.number == number), None)

    def servers_of(self, record: TrialView) -> int:
        """How many fresh servers ``record``'s figures rest on (1: its own run alone)."""
        return self.servers.get(record.number, 1)

    def gains(self, record: TrialView) -> dict[str, float | None]:
        """Per objective: times better than the default trial (None when not measurable, or
        not a number: both figures bounds the same way, ``gain_mark`` "?"). A gain marked
        "≥"/"≤" by ``gain_marks`` is a bound, not the gain."""
        default = self.trial(self.default_number) if self.default_number is not None else None
        if default is None or default.state != "complete":
            return {m: None for m in self.metrics}
        marks = self.gain_marks(record)
        return {
            m: None if marks[m] == "?" else gain(record.metrics.get(m, float("nan")),
                                                  default.metrics.get(m, float("nan")), d)
            for m, d in zip(self.metrics, self.directions, strict=True)
        }

    def gain_marks(self, record: TrialView) -> dict[str, str]:
        """Per objective, ``autotune.metrics.gain_mark``: "≥"/"≤" when the gain is a bound,
        "?" when it is not a number (trial and defaults both lower bounds), else ""."""
        default = self.trial(self.default_number) if self.default_number is not None else None
        base = default.metrics if default is not None else {}
        return {m: gain_mark(m, record.metrics, base) for m in self.metrics}

    def gain_texts(self, record: TrialView) -> dict[str, str]:
        """Per objective, the gain as people read it: "×1.80", "≥ ×1.80", or why there is no
        number."""
        out: dict[str, str] = {}
        marks = self.gain_marks(record)
        for metric, value in self.gains(record).items():
            if marks[metric] == "?":
                out[metric] = ("not a number: the defaults' figure and this one are both "
                               "lower bounds")
            elif value is None:
                out[metric] = "not measurable"
            else:
                out[metric] = (f"{marks[metric]} " if marks[metric] else "") + f"×{value:.2f}"
        return out

    def best(self, metric: str, direction: str, count: int = 1) -> list[TrialView]:
        """The ``count`` front trials best on ``metric`` (``rank_key``)."""
        front = [t for t in self.trials if t.number in self.pareto_front and metric in t.metrics]
        return sorted(front, key=lambda t: rank_key(t, metric, direction))[:count]

    def knee(self) -> TrialView | None:
        """The front trial nearest the ideal point, each objective scaled to [0, 1] over the
        front (``knee_of``); None with fewer than two objectives or two front trials."""
        front = [t for t in self.trials if t.number in self.pareto_front]
        return knee_of(front, self.metrics, self.directions)

    def changed(self, record: TrialView) -> dict[str, Any]:
        """The parameters of ``record`` that differ from the default trial's (all of them when
        the study has no default trial)."""
        default = self.trial(self.default_number) if self.default_number is not None else None
        if record.is_default:
            return {}
        base = default.params if default is not None else {}
        return {k: v for k, v in record.params.items() if k not in base or base[k] != v}

    def missed(self, record: TrialView) -> list[str] | None:
        """The constraints (SLOs, error rate, cost, quality) ``record`` violates, [] when it
        met them all, None when it was never measured."""
        if record.state != "complete" or not record.violations:
            return None
        return [k for k, v in record.violations.items() if v > 0]

    def trial_dict(self, record: TrialView) -> dict[str, Any]:
        return {
            "number": record.number,
            "state": record.state,
            "is_default": record.is_default,
            "params": record.params,
            "metrics": record.metrics,
            "feasible": record.feasible,
            "disturbed": record.disturbed,
            "measurements": record.measurements or [],
            "violations": record.violations,
            "failure_kind": record.failure_kind,
            "failure_reason": record.failure_reason,
            "failure_line": record.failure_line,
            "engine_command": record.engine_command,
            "engine_version": record.engine_version,
            "host": record.host,
            "devices": record.devices,
            "timings": {
                "startup_s": record.startup_s,
                "warmup_s": record.warmup_s,
                "benchmark_s": record.benchmark_s,
                "teardown_s": record.teardown_s,
            },
            "gain_over_default": self.gains(record),
            "gain_over_default_text": self.gain_texts(record),
            "bounds": {m: mark for m in record.metrics if (mark := bound_mark(m, record.metrics))},
            "servers": self.servers_of(record),
            "first_run": self.first_runs.get(record.number),
            "log_path": record.log_path,
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "study": self.name,
                "model": self.model,
                "hardware": self.hardware,
                "objectives": self.objectives,
                "slos": self.slos,
                "default_trial": self.default_number,
                "pareto_front": self.pareto_front,
                "trials": [self.trial_dict(t) for t in self.trials],
            },
            indent=2,
            default=str,
        )

    def to_csv(self) -> str:
        params = sorted({k for t in self.trials for k in t.params})
        metrics = sorted({k for t in self.trials for k in t.metrics})
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            ["number", "state", "feasible", "failure_kind", "pareto", "servers", *params,
             *metrics]
        )
        for t in self.trials:
            writer.writerow(
                [
                    t.number,
                    t.state,
                    t.feasible,
                    t.failure_kind or "",
                    t.number in self.pareto_front,
                    self.servers_of(t),
                    *(t.params.get(p, "") for p in params),
                    *(t.metrics.get(m, "") for m in metrics),
                ]
            )
        return out.getvalue()


def rank_key(record: TrialView, metric: str, direction: str) -> tuple[float, int, int]:
    """Sort key, best first, for ``metric``: a bound counts at its bound (a "≥ 40 req/s" never
    outranks an exact 45: it may be higher, but nothing says so), and on equal figures the exact
    one ranks first; then the lower trial number."""
    value = record.metrics.get(metric, math.nan)
    sign = -1.0 if direction == "maximize" else 1.0
    key = sign * value if math.isfinite(value) else math.inf
    return key, 1 if bound_mark(metric, record.metrics) else 0, record.number


def _towards_better(record: TrialView, metric: str, direction: str) -> bool:
    """Whether ``record``'s ``metric`` is a bound whose true figure may be better than shown
    (a ≥ on a metric to maximize, a ≤ on one to minimize)."""
    mark = bound_mark(metric, record.metrics)
    return mark == ("≥" if direction == "maximize" else "≤")


def _dominates(a: TrialView, b: TrialView, metrics: list[str], directions: list[str]) -> bool:
    """``a`` dominates ``b`` for certain: ``a`` at its shown figures (a bound at its bound),
    ``b`` where a bound may be better than shown, unbeatable there."""
    strictly = False
    for metric, direction in zip(metrics, directions, strict=True):
        if _towards_better(b, metric, direction):
            return False
        x, y = a.metrics[metric], b.metrics[metric]
        if direction == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        strictly = strictly or x > y
    return strictly


def pareto_front(
    trials: list[TrialView], metrics: list[str], directions: list[str]
) -> list[int]:
    """Trial numbers of the feasible Pareto set over the objectives. A lower bound is no
    exact figure: a trial whose figure may be better than shown is never dropped because of
    that figure (``_dominates``)."""
    feasible = [
        t
        for t in trials
        if t.state == "complete" and t.feasible and all(m in t.metrics for m in metrics)
    ]
    return sorted(t.number for t in feasible
                  if not any(_dominates(o, t, metrics, directions) for o in feasible
                             if o is not t))


def knee_of(front: list[TrialView], metrics: list[str],
            directions: list[str]) -> TrialView | None:
    """The trial nearest the ideal point (every objective at its best over ``front``), each
    objective scaled to [0, 1] over the front; a bound counts at its bound. None with fewer
    than two objectives or two trials."""
    front = [t for t in front if all(math.isfinite(t.metrics.get(m, math.nan)) for m in metrics)]
    if len(metrics) < 2 or len(front) < 2:
        return None

    def shortfall(record: TrialView) -> tuple[float, int]:
        total = 0.0
        for metric, direction in zip(metrics, directions, strict=True):
            values = [t.metrics[metric] for t in front]
            low, high = min(values), max(values)
            if high == low:
                continue
            best = high if direction == "maximize" else low
            total += ((best - record.metrics[metric]) / (high - low)) ** 2
        return total, record.number

    return min(front, key=shortfall)


def fresh_means(
    trials: list[TrialView], runs: Iterable[FreshRun],
) -> tuple[list[TrialView], dict[int, int], dict[int, dict[str, float]]]:
    """Each complete trial with its figures replaced by the mean over every fresh server its
    configuration ran on: the complete trials of the same configuration (its own first run
    included) and the fresh-server runs kept with the study. Only figures some fresh run
    measured are averaged (the rest stay the first run's); a mean with a lower bound in it is
    a lower bound (``capacity_is_lower_bound`` 1). Returns the trials, the servers per trial
    number (where more than one) and the first runs replaced."""
    by_key: dict[str, list[Mapping[str, float]]] = {}
    fresh_keys: dict[str, set[str]] = {}
    for t in trials:
        if t.state == "complete":
            by_key.setdefault(configuration_key(t), []).append(t.metrics)
    for run in runs:
        if run.key in by_key and run.metrics:  # a failed start or a marker has no figures
            by_key[run.key].append(run.metrics)
            fresh_keys.setdefault(run.key, set()).update(run.metrics)
    out: list[TrialView] = []
    servers: dict[int, int] = {}
    first: dict[int, dict[str, float]] = {}
    for t in trials:
        key = configuration_key(t) if t.state == "complete" else ""
        group = by_key.get(key, [])
        averaged = fresh_keys.get(key, set()) & set(t.metrics)
        if len(group) < 2 or not averaged:
            out.append(t)
            continue
        metrics = dict(t.metrics)
        for name in averaged:
            values = [float(m[name]) for m in group
                      if isinstance(m.get(name), int | float) and math.isfinite(m[name])]
            if not values:
                continue
            metrics[name] = (max(values) if name == LOWER_BOUND_FLAG
                             else statistics.fmean(values))
        servers[t.number] = len(group)
        first[t.number] = {n: t.metrics[n] for n in averaged}
        out.append(dataclasses.replace(t, metrics=metrics))
    return out, servers, first


def load_report(catalog: Catalog, name: str) -> StudyReport:
    """Study ``name`` as stored now; StudyNotFoundError when the catalog has no such study."""
    study = catalog.get_study(name)
    if study is None:
        raise StudyNotFoundError(name, catalog.url)
    trials, servers, first_runs = fresh_means(catalog.list_trials(name),
                                              catalog.fresh_runs(name))
    report = StudyReport(
        name=name,
        model=study.model,
        hardware=study.hardware,
        objectives=study.objectives,
        slos=study.slos,
        trials=trials,
        servers=servers,
        first_runs=first_runs,
    )
    report.pareto_front = pareto_front(trials, report.metrics, report.directions)
    default = next((t.number for t in trials if t.is_default and t.state != "interrupted"), None)
    report.default_number = default
    return report
