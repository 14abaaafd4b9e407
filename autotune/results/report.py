"""A study as people read it: trials, the feasible Pareto front, gains over the vLLM default.

Built from autotune's own tables only, read through a ``Catalog``, so ``study show``, the
end-of-study table and the dashboard agree.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autotune.errors import StudyNotFoundError
from autotune.scoring import gain, pareto_indices
from autotune.space import QUALITY_METRICS
from autotune.store.values import TrialView

if TYPE_CHECKING:
    from autotune.store import Catalog


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

    def gains(self, record: TrialView) -> dict[str, float | None]:
        """Per objective: times better than the default trial (None when not measurable)."""
        default = self.trial(self.default_number) if self.default_number is not None else None
        if default is None or default.state != "complete":
            return {m: None for m in self.metrics}
        return {
            m: gain(record.metrics.get(m, float("nan")), default.metrics.get(m, float("nan")), d)
            for m, d in zip(self.metrics, self.directions, strict=True)
        }

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
            ["number", "state", "feasible", "failure_kind", "pareto", *params, *metrics]
        )
        for t in self.trials:
            writer.writerow(
                [
                    t.number,
                    t.state,
                    t.feasible,
                    t.failure_kind or "",
                    t.number in self.pareto_front,
                    *(t.params.get(p, "") for p in params),
                    *(t.metrics.get(m, "") for m in metrics),
                ]
            )
        return out.getvalue()


def pareto_front(
    trials: list[TrialView], metrics: list[str], directions: list[str]
) -> list[int]:
    """Trial numbers of the feasible Pareto set over the objectives."""
    feasible = [
        t
        for t in trials
        if t.state == "complete" and t.feasible and all(m in t.metrics for m in metrics)
    ]
    points = [[t.metrics[m] for m in metrics] for t in feasible]
    return sorted(feasible[i].number for i in pareto_indices(points, directions))


def load_report(catalog: Catalog, name: str) -> StudyReport:
    """Study ``name`` as stored now; StudyNotFoundError when the catalog has no such study."""
    study = catalog.get_study(name)
    if study is None:
        raise StudyNotFoundError(name, catalog.url)
    trials = catalog.list_trials(name)
    report = StudyReport(
        name=name,
        model=study.model,
        hardware=study.hardware,
        objectives=study.objectives,
        slos=study.slos,
        trials=trials,
    )
    report.pareto_front = pareto_front(trials, report.metrics, report.directions)
    default = next((t.number for t in trials if t.is_default and t.state != "interrupted"), None)
    report.default_number = default
    return report
