"""Confirm a pick: measure the chosen trial's configuration again on fresh servers.

A study ranks configurations from one (robust) measurement each; before a configuration goes to
production, ``confirm`` starts it ``times`` more times, each on a fresh engine, and compares the
new figures with the interval the study recorded for that trial.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from autotune.db.models import TrialRecord
from autotune.devices import detect_pool
from autotune.engines import create
from autotune.space import Space
from autotune.trial import TrialOutcome, TrialRunner

METRIC = "output_throughput"


@dataclass
class Confirmation:
    trial: int
    recorded: float
    interval: tuple[float, float] | None
    values: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def holds(self) -> bool:
        """Every fresh run completed and their median lies inside the recorded interval."""
        if self.failures or not self.values or self.interval is None:
            return False
        low, high = self.interval
        return low <= self.median <= high

    def inside(self, value: float) -> bool:
        return self.interval is not None and self.interval[0] <= value <= self.interval[1]

    def comment_lines(self) -> list[str]:
        low, high = self.interval or (float("nan"), float("nan"))
        runs = ", ".join(f"{v:.1f}" for v in self.values) or "none completed"
        lines = [
            f"# confirmed on {len(self.values)} fresh server(s): {METRIC} {runs} "
            f"(median {self.median:.1f}); study recorded {self.recorded:.1f}, "
            f"interval [{low:.1f}, {high:.1f}]: {'holds' if self.holds else 'DOES NOT hold'}",
        ]
        lines += [f"# confirmation failure: {f}" for f in self.failures]
        return lines


def confirm_trial(
    space: Space, record: TrialRecord, *, times: int, log_dir: Path,
) -> Confirmation:
    """Run ``record``'s configuration ``times`` on fresh engines. ``space`` is one this machine
    vouches for (``autotune.trusted_space``), not merely the one stored with the study."""
    pool = detect_pool(space.engine.devices)
    metrics = record.metrics
    interval = None
    if f"{METRIC}_ci_low" in metrics and f"{METRIC}_ci_high" in metrics:
        interval = (metrics[f"{METRIC}_ci_low"], metrics[f"{METRIC}_ci_high"])
    result = Confirmation(record.number, metrics.get(METRIC, float("nan")), interval)
    for attempt in range(times):
        runner = TrialRunner(space, create(space.engine.kind), pool,
                             log_dir / f"confirm-{record.number}-{attempt + 1}")
        outcome: TrialOutcome = runner.run(record.number, dict(record.params),
                                           is_default=record.is_default)
        if outcome.state == "complete" and METRIC in outcome.metrics:
            result.values.append(outcome.metrics[METRIC])
        else:
            reason = outcome.failure.reason if outcome.failure else outcome.state
            result.failures.append(f"run {attempt + 1}: {reason}")
    return result
