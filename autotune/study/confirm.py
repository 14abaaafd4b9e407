"""Confirm a pick: measure a trial's configuration again on fresh servers.

A study ranks configurations from one (robust) measurement each; before a configuration goes to
production, ``confirm`` starts it ``times`` more times, each on a fresh engine, and counts how
many of the new figures fall inside the fresh-server interval the study reports for that trial
(``autotune.results.noise_model``), and how far their median lies from the figure the study
reports (on the headline metrics and the study's objectives). The runs are then kept with the
study (``StudyStore.add_fresh_runs``): they are the evidence its noise model learns the host's
spread from, and the report shows the mean over them.

The confirm stage (``ConfirmStage``) does the same at the end of every study, inside its
budget, for the front's picks and the defaults (docs/search.md, "Confirm stage").
"""

from __future__ import annotations

import math
import os
import socket
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autotune.bench import binomial_cdf
from autotune.results import (
    FRESH_METRICS,
    Interval,
    NoiseModel,
    StudyReport,
    configuration_key,
    measured_metrics,
)
from autotune.space import Space
from autotune.space.sections import ConfirmStageSpec
from autotune.store.base import FreshRun
from autotune.store.values import TrialView
from autotune.trial import TrialOutcome, TrialRunner

METRIC = "output_throughput"
# An interval is refuted when so few runs fall inside that a calibrated interval would give so
# few (or fewer) less often than this: with K=5 at 95%, 3 inside or fewer.
REFUTED_BELOW = 0.05
# Where a fresh run's engine logs go: one folder per run.
RunnerFor = Callable[[str], TrialRunner]


@dataclass
class Confirmation:
    trial: int
    key: str
    recorded: dict[str, float]  # the figures the study reports (means over fresh servers)
    intervals: dict[str, Interval]  # the study's, before these runs
    runs: list[dict[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    objectives: tuple[str, ...] = ()  # judged by their median too, beside the intervals

    def values_of(self, metric: str) -> list[float]:
        return [r[metric] for r in self.runs if metric in r and math.isfinite(r[metric])]

    @property
    def values(self) -> list[float]:
        return self.values_of(METRIC)

    def median_of(self, metric: str) -> float:
        values = self.values_of(metric)
        return statistics.median(values) if values else float("nan")

    @property
    def median(self) -> float:
        return self.median_of(METRIC)

    def deviation(self, metric: str) -> float:
        """The runs' median against the recorded figure, relative (−0.16: 16 % below)."""
        recorded = self.recorded.get(metric, float("nan"))
        if not (math.isfinite(recorded) and recorded):
            return float("nan")
        return self.median_of(metric) / recorded - 1

    def inside(self, value: float, metric: str = METRIC) -> bool:
        interval = self.intervals.get(metric)
        return interval is not None and interval.contains(value)

    def coverage(self, metric: str = METRIC) -> tuple[int, int]:
        """(runs inside the recorded interval, runs that measured ``metric``)."""
        values = [r[metric] for r in self.runs if metric in r]
        return sum(1 for v in values if self.inside(v, metric)), len(values)

    def refuted(self, metric: str) -> bool:
        """Fewer runs inside than a ``level`` interval plausibly gives (binomial, 5%)."""
        interval = self.intervals.get(metric)
        inside, total = self.coverage(metric)
        if interval is None or not total:
            return False
        return binomial_cdf(inside, total, interval.level) < REFUTED_BELOW

    @property
    def judged(self) -> list[str]:
        """The metrics judged: the intervals' (headline metrics), then the objectives."""
        return list(dict.fromkeys([*self.intervals, *self.objectives]))

    @property
    def holds(self) -> bool:
        """Every fresh run completed and no interval (headline metrics and objectives alike)
        is refuted by its coverage."""
        if self.failures or not self.runs or not self.intervals:
            return False
        return not any(self.refuted(m) for m in self.judged)

    def fresh_runs(self) -> list[FreshRun]:
        return [FreshRun(self.key, run, f"confirm of trial {self.trial}") for run in self.runs]

    def comment_lines(self) -> list[str]:
        lines = [f"# confirmed on {len(self.runs)} fresh server(s); "
                 + ("the study's intervals hold" if self.holds else "DOES NOT hold")]
        for metric in self.judged or FRESH_METRICS:
            interval = self.intervals.get(metric)
            values = self.values_of(metric)
            if interval is None and not values:
                continue
            runs = ", ".join(f"{v:.1f}" for v in values) or "none completed"
            inside, total = self.coverage(metric)
            recorded = self.recorded.get(metric, float("nan"))
            shown = interval.text() if interval else "none"
            off = self.deviation(metric)
            median = (f"; median {self.median_of(metric):.1f} ({off:+.1%} of the reported "
                      "figure)" if math.isfinite(off) else "")
            lines.append(
                f"# {metric}: {runs}{median}; reported {recorded:.1f}, "
                f"{self.level(metric):.0%} fresh-server interval {shown}: {inside} of {total} "
                "inside" + (" (REFUTED)" if self.refuted(metric) else ""))
        lines += [f"# confirmation failure: {f}" for f in self.failures]
        return lines

    def level(self, metric: str) -> float:
        interval = self.intervals.get(metric)
        return interval.level if interval else float("nan")


def fresh_figures(outcome: TrialOutcome, metrics: Sequence[str]) -> dict[str, float]:
    """What a fresh-server run keeps of a complete outcome."""
    return {m: float(outcome.metrics[m]) for m in metrics if m in outcome.metrics}


def confirm_trial(
    space: Space, record: TrialView, *, times: int, log_dir: Path, noise: NoiseModel,
    objectives: Sequence[str] = (), runner_for: RunnerFor | None = None,
) -> Confirmation:
    """Run ``record``'s configuration ``times`` on fresh engines and judge the intervals
    ``noise`` gives it, and the medians of ``objectives`` (the study's objective metrics)
    against the figures ``record`` shows. ``space`` is one this machine vouches for
    (``autotune.space.trust``), not merely the one stored with the study. ``runner_for``:
    the TrialRunner of one fresh run, given its log folder's name (default: the space's
    engine on its devices, detected)."""
    if runner_for is None:
        from autotune.devices import detect_pool
        from autotune.engines import create

        pool = detect_pool(space.engine.devices)

        def runner_for(folder: str) -> TrialRunner:
            return TrialRunner(space, create(space.engine.kind), pool, log_dir / folder)

    kept = measured_metrics(objectives)
    recorded = {m: record.metrics[m] for m in kept if m in record.metrics}
    result = Confirmation(record.number, configuration_key(record), recorded,
                          noise.intervals(record), objectives=tuple(objectives))
    for attempt in range(times):
        runner = runner_for(f"confirm-{record.number}-{attempt + 1}")
        outcome = runner.run(record.number, dict(record.params), is_default=record.is_default)
        if outcome.state == "complete":
            result.runs.append(fresh_figures(outcome, kept))
        else:
            reason = outcome.failure.reason if outcome.failure else outcome.state
            result.failures.append(f"run {attempt + 1}: {reason}")
    return result


# -- the confirm stage -------------------------------------------------------------------------

# Markers kept among the study's fresh runs (no figures: the noise model and the report skip
# them): who runs the stage (several workers), and that it finished for a budget.
STAGE_KEY = "confirm-stage"
STAGE_SOURCE = "confirm stage"


def stage_reserve(spec: ConfirmStageSpec, objectives: int, budget: int) -> int:
    """Engine starts the stage keeps of a ``budget`` of ``budget`` (``search.trials``): one per
    missing fresh server of each possible candidate (the defaults, ``per_objective`` per
    objective, the knee), never leaving the search fewer than ``min_search_trials``."""
    if not spec.enabled:
        return 0
    candidates = 1 + spec.per_objective * objectives + (1 if spec.knee and objectives > 1
                                                       else 0)
    return max(0, min(candidates * (spec.servers - 1), budget - spec.min_search_trials))


def candidates(report: StudyReport, spec: ConfirmStageSpec) -> list[tuple[TrialView, str]]:
    """The configurations the stage confirms, in order, each once (by configuration): the
    defaults (every gain is over them), the ``per_objective`` best front trials on each
    objective (``StudyReport.best``: a lower bound ranks at its bound), then the knee."""
    picked: list[tuple[TrialView, str]] = []
    keys: set[str] = set()

    def add(record: TrialView | None, why: str) -> None:
        if record is not None and record.state == "complete" \
                and (key := configuration_key(record)) not in keys:
            keys.add(key)
            picked.append((record, why))

    if report.default_number is not None:
        add(report.trial(report.default_number), "the defaults")
    for metric, direction in zip(report.metrics, report.directions, strict=True):
        for rank, record in enumerate(report.best(metric, direction, spec.per_objective), 1):
            add(record, f"best {metric}" if rank == 1 else f"#{rank} on {metric}")
    if spec.knee:
        add(report.knee(), "the knee of the front")
    return picked


@dataclass(frozen=True)
class Start:
    """One fresh server the stage starts."""

    record: TrialView
    why: str


def plan(report: StudyReport, spec: ConfirmStageSpec, *, runs: dict[str, int],
         allowed: int) -> list[Start]:
    """The stage's starts, at most ``allowed``: each candidate up to ``spec.servers`` fresh
    servers in all, ``runs`` (by configuration key) those it has (its trials, earlier fresh
    runs); candidates in ``candidates`` order."""
    starts: list[Start] = []
    for record, why in candidates(report, spec):
        missing = spec.servers - runs.get(configuration_key(record), 0)
        starts += [Start(record, why)] * max(0, missing)
    return starts[:max(0, allowed)]


def finished_marker(budget: int) -> str:
    return f"{STAGE_SOURCE} finished (budget {budget})"


def claim_marker(budget: int) -> str:
    return f"{STAGE_SOURCE} claimed (budget {budget}) by {socket.gethostname()}:{os.getpid()}"


def stage_state(fresh: Sequence[FreshRun], budget: int) -> tuple[int, bool, bool]:
    """From the study's fresh runs: (starts the stage has spent, whether it finished for
    ``budget``, whether a process claimed it for ``budget``)."""
    spent = sum(1 for r in fresh if r.source.startswith(f"{STAGE_SOURCE}:"))
    finished = any(r.key == STAGE_KEY and r.source == finished_marker(budget) for r in fresh)
    claimed = any(r.key == STAGE_KEY and r.source.startswith(
        f"{STAGE_SOURCE} claimed (budget {budget}) ") for r in fresh)
    return spent, finished, claimed


def stage_run(record: TrialView, figures: dict[str, float] | None, reason: str = "") -> FreshRun:
    """A start the stage spent, as kept with the study: its figures, or none (its reason)."""
    source = f"{STAGE_SOURCE}: trial {record.number}" + (f" failed: {reason}" if reason else "")
    return FreshRun(configuration_key(record), figures or {}, source)
