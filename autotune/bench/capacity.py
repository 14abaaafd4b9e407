"""SLO capacity: the highest request rate at which every SLO still holds, on one running server.

Bracketing then bisection over Poisson request rates: double the rate from ``start_rate``
until a load point misses an SLO (or ``max_rate`` is reached), then bisect between the last
rate that held and the first that did not, ``bisection_steps`` times. Every load point is
measured on the same engine (one engine start per trial), and the answer is the highest rate
that held. This is how fleets are sized: requests/s per replica at the SLO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


class CapacitySpec(BaseModel):
    """The ``capacity`` section of a space file."""

    model_config = ConfigDict(extra="forbid")

    start_rate: float = Field(default=1.0, gt=0, description="first rate tried (requests/s)")
    max_rate: float = Field(default=256.0, gt=0, description="never try above this rate")
    bisection_steps: int = Field(default=3, ge=0, le=10)
    requests_per_point: int = Field(default=48, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)


@dataclass
class LoadPoint:
    rate: float
    metrics: dict[str, float]
    holds: bool


@dataclass
class CapacityResult:
    rate: float  # highest rate that held every SLO (0 when even start_rate missed)
    output_throughput: float  # output tokens/s measured at that rate
    resolution: float  # width of the final bracket: the answer is within this of the truth
    points: list[LoadPoint] = field(default_factory=list)

    def as_metrics(self) -> dict[str, float]:
        return {
            "capacity_request_rate": self.rate,
            "capacity_output_throughput": self.output_throughput,
            "capacity_resolution_rps": self.resolution,
            "capacity_load_points": float(len(self.points)),
        }


def bracket_rates(start: float, maximum: float, factor: float = 2.0) -> list[float]:
    """The bracketing rates: ``start * factor**k`` below ``maximum``, then ``maximum`` (the
    load ladder's ``start``/``factor``/``max`` levels are these too)."""
    rates, rate = [], start
    while rate < maximum * (1 - 1e-9):
        rates.append(rate)
        rate *= factor
    return [*rates, maximum]


def find_capacity(
    measure: Callable[[float], Mapping[str, float]],
    holds: Callable[[Mapping[str, float]], bool],
    spec: CapacitySpec,
) -> CapacityResult:
    """``measure(rate)`` runs one load point and returns its metrics; ``holds(metrics)`` says
    whether every SLO (and the error limit) held there."""
    points: list[LoadPoint] = []

    def probe(rate: float) -> LoadPoint:
        metrics = dict(measure(rate))
        point = LoadPoint(rate, metrics, holds(metrics))
        points.append(point)
        return point

    best: LoadPoint | None = None
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
