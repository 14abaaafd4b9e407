"""Confirm a pick: measure the chosen trial's configuration again on fresh servers.

A study ranks configurations from one (robust) measurement each; before a configuration goes to
production, ``confirm`` starts it ``times`` more times, each on a fresh engine, and counts how
many of the new figures fall inside the fresh-server interval the study reports for that trial
(``autotune.results.noise_model``). The runs are then kept with the study (``StudyStore.
add_fresh_runs``): they are the evidence its noise model learns the host's spread from.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from autotune.bench import binomial_cdf
from autotune.devices import detect_pool
from autotune.engines import create
from autotune.results import FRESH_METRICS, Interval, NoiseModel, configuration_key
from autotune.space import Space
from autotune.store.base import FreshRun
from autotune.store.values import TrialView
from autotune.trial import TrialOutcome, TrialRunner

METRIC = "output_throughput"
# An interval is refuted when so few runs fall inside that a calibrated interval would give so
# few (or fewer) less often than this: with K=5 at 95%, 3 inside or fewer.
REFUTED_BELOW = 0.05


@dataclass
class Confirmation:
    trial: int
    key: str
    recorded: dict[str, float]
    intervals: dict[str, Interval]  # the study's, before these runs
    runs: list[dict[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [r[METRIC] for r in self.runs if METRIC in r]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

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
    def holds(self) -> bool:
        """Every fresh run completed and no headline interval is refuted by its coverage."""
        if self.failures or not self.runs or not self.intervals:
            return False
        return not any(self.refuted(m) for m in self.intervals)

    def fresh_runs(self) -> list[FreshRun]:
        return [FreshRun(self.key, run, f"confirm of trial {self.trial}") for run in self.runs]

    def comment_lines(self) -> list[str]:
        lines = [f"# confirmed on {len(self.runs)} fresh server(s); "
                 + ("the study's intervals hold" if self.holds else "DOES NOT hold")]
        for metric in self.intervals or FRESH_METRICS:
            interval = self.intervals.get(metric)
            values = [r[metric] for r in self.runs if metric in r]
            if interval is None and not values:
                continue
            runs = ", ".join(f"{v:.1f}" for v in values) or "none completed"
            inside, total = self.coverage(metric)
            recorded = self.recorded.get(metric, float("nan"))
            shown = interval.text() if interval else "none"
            lines.append(
                f"# {metric}: {runs}; recorded {recorded:.1f}, {self.level(metric):.0%} "
                f"fresh-server interval {shown}: {inside} of {total} inside"
                + (" (REFUTED)" if self.refuted(metric) else ""))
        lines += [f"# confirmation failure: {f}" for f in self.failures]
        return lines

    def level(self, metric: str) -> float:
        interval = self.intervals.get(metric)
        return interval.level if interval else float("nan")


def confirm_trial(
    space: Space, record: TrialView, *, times: int, log_dir: Path, noise: NoiseModel,
) -> Confirmation:
    """Run ``record``'s configuration ``times`` on fresh engines and judge the intervals
    ``noise`` gives it. ``space`` is one this machine vouches for (``autotune.space.trust``),
    not merely the one stored with the study."""
    pool = detect_pool(space.engine.devices)
    recorded = {m: record.metrics[m] for m in FRESH_METRICS if m in record.metrics}
    result = Confirmation(record.number, configuration_key(record), recorded,
                          noise.intervals(record))
    for attempt in range(times):
        runner = TrialRunner(space, create(space.engine.kind), pool,
                             log_dir / f"confirm-{record.number}-{attempt + 1}")
        outcome: TrialOutcome = runner.run(record.number, dict(record.params),
                                           is_default=record.is_default)
        if outcome.state == "complete":
            result.runs.append({m: outcome.metrics[m] for m in FRESH_METRICS
                                if m in outcome.metrics})
        else:
            reason = outcome.failure.reason if outcome.failure else outcome.state
            result.failures.append(f"run {attempt + 1}: {reason}")
    return result
