"""Capacity at SLO: the highest request rate at which every SLO still holds, on one running
server. This is how fleets are sized: requests/s per replica at the SLOs. Two strategies give
the one metric ``capacity_rps`` (``autotune.metrics.CAPACITY_METRIC``):

* **Ladder interpolation** (``capacity_of``; the space's ``ladder:``): fixed load levels in
  rising order, the first failing one ends them. Capacity is the achieved request rate
  interpolated linearly to where the worst SLO ratio (measured / limit) crosses 1 between the
  last passing and the first failing level; the figures at capacity (throughput,
  interactivity) are interpolated at the same point. ``bench.ladder`` runs the levels.
* **Rate bisection** (``find_capacity``; the space's ``capacity:``): double the Poisson rate
  from ``start_rate`` until a load point misses an SLO (or ``max_rate`` is reached), then bisect
  between the last rate that held and the first that did not, ``bisection_steps`` times. The
  answer is the highest rate that held, within ``capacity_resolution_rps``.

Every load point is measured on the same engine (one engine start per trial).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autotune.metrics import CAPACITY_METRIC
from autotune.space import CapacitySpec, bracket_rates


class LoadPoint(Protocol):
    """A measured load level as interpolation needs it (``bench.ladder.Level``)."""

    @property
    def metrics(self) -> Mapping[str, float]: ...
    @property
    def slo_ratio(self) -> float: ...
    @property
    def holds(self) -> bool: ...
    @property
    def rate(self) -> float: ...
    @property
    def interactivity(self) -> float: ...


@dataclass
class Capacity:
    """Where the curve crosses the SLOs. ``lower_bound``: every level held (the ladder never
    reached the SLOs' edge), so the answer is the top level's rate, not the edge."""

    rate: float
    output_throughput: float
    interactivity: float
    lower_bound: bool = False


def slo_ratio(metrics: Mapping[str, float], slos: Mapping[str, float]) -> float:
    """The worst measured / limit over ``slos``; inf when one was not measured (0 with none)."""
    worst = 0.0
    for key, limit in slos.items():
        value = metrics.get(key, math.nan)
        worst = max(worst, value / limit if math.isfinite(value) else math.inf)
    return worst


def capacity_of(levels: Sequence[LoadPoint]) -> Capacity:
    """Capacity at SLO from levels in rising load order (the first failing one ends them)."""
    last_pass: LoadPoint | None = None
    for level in levels:
        if not level.holds:
            return _between(last_pass, level)
        last_pass = level
    if last_pass is None:
        return Capacity(0.0, 0.0, math.nan)
    return Capacity(last_pass.rate, last_pass.metrics.get("output_throughput", 0.0),
                    last_pass.interactivity, lower_bound=True)


def _between(passed: LoadPoint | None, failed: LoadPoint) -> Capacity:
    """Interpolate from ``passed`` (or zero load) to ``failed`` where the SLO ratio is 1. A
    level that failed on errors (ratio ≤ 1) or whose rate fell gives ``passed`` itself."""
    if passed is None:
        return Capacity(0.0, 0.0, math.nan)
    p_tput = passed.metrics.get("output_throughput", 0.0)
    rise = failed.slo_ratio - passed.slo_ratio
    if not (math.isfinite(failed.slo_ratio) and failed.slo_ratio > 1 and rise > 0
            and failed.rate > passed.rate):
        return Capacity(passed.rate, p_tput, passed.interactivity)
    t = (1.0 - passed.slo_ratio) / rise

    def lerp(a: float, b: float) -> float:
        return a + t * (b - a) if math.isfinite(b) else a

    return Capacity(lerp(passed.rate, failed.rate),
                    lerp(p_tput, failed.metrics.get("output_throughput", 0.0)),
                    lerp(passed.interactivity, failed.interactivity))


@dataclass
class RatePoint:
    """One load point of the bisection: its offered Poisson rate."""

    rate: float
    metrics: dict[str, float]
    holds: bool


@dataclass
class CapacityResult:
    rate: float  # highest rate that held every SLO (0 when even start_rate missed)
    output_throughput: float  # output tokens/s measured at that rate
    resolution: float  # width of the final bracket: the answer is within this of the truth
    points: list[RatePoint] = field(default_factory=list)

    def as_metrics(self) -> dict[str, float]:
        return {
            CAPACITY_METRIC: self.rate,
            "capacity_output_throughput": self.output_throughput,
            "capacity_resolution_rps": self.resolution,
            "capacity_load_points": float(len(self.points)),
        }


def find_capacity(
    measure: Callable[[float], Mapping[str, float]],
    holds: Callable[[Mapping[str, float]], bool],
    spec: CapacitySpec,
) -> CapacityResult:
    """``measure(rate)`` runs one load point and returns its metrics; ``holds(metrics)`` says
    whether every SLO (and the error limit) held there."""
    points: list[RatePoint] = []

    def probe(rate: float) -> RatePoint:
        metrics = dict(measure(rate))
        point = RatePoint(rate, metrics, holds(metrics))
        points.append(point)
        return point

    best: RatePoint | None = None
    low, high = 0.0, spec.start_rate
    for rate in bracket_rates(spec.start_rate, spec.max_rate):
        point = probe(rate)
        if not point.holds:
            high = rate
            break
        best, low = point, rate
    else:
        assert best is not None
        return CapacityResult(low, best.metrics.get("output_throughput", 0.0), 0.0, points)
    for _ in range(spec.bisection_steps):
        middle = (low + high) / 2
        point = probe(middle)
        if point.holds:
            best, low = point, middle
        else:
            high = middle
    throughput = best.metrics.get("output_throughput", 0.0) if best else 0.0
    return CapacityResult(low, throughput, high - low, points)
