"""How a trial is scored: objective values, SLO constraints, feasibility, Pareto front, gains.

Constraints follow Optuna's convention (feasible when every value ≤ 0). Each SLO gives
``(measured − limit) / limit`` (in a mix of workloads, each workload's SLOs under its name:
``chat.ttft_p95_ms``); the error-rate limit gives ``error_rate − max_error_rate`` (in a mix, the
worst workload's error rate); a quality bound (``quality.min`` / ``quality.max``) and a mix's
``aggregate.min_slo_attainment`` give the raw margin ``bound − measured`` or
``measured − bound``. With a load ladder the primary workload's SLOs define capacity instead of
bounding the main measurement: the constraint is ``capacity_rps`` (``(min − capacity) / min``
against ``min_capacity_rps``, else met when some level held every SLO), so a configuration that
misses the SLOs at the main measurement's load but holds them at a lower one is feasible.
A trial whose engine failed is told to Optuna as infeasible with the worst values below, so
samplers learn to avoid that region instead of ignoring it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from autotune.metrics import CAPACITY_METRIC, COST_METRIC
from autotune.space import ATTAINMENT_WORST, Space

# Objective values told to Optuna for a failed trial: no throughput, 100 s latency.
FAILED_MAXIMIZE_VALUE = 0.0
FAILED_MINIMIZE_VALUE = 1e5
ERROR_RATE_CONSTRAINT = "error_rate"
# With a load ladder, capacity at SLO is the constraint the ladder's SLOs are told through.
CAPACITY_CONSTRAINT = CAPACITY_METRIC


def constrained_slos(space: Space) -> dict[str, float]:
    """The SLO limits told as constraints on the trial's metrics: every one, except that with
    a load ladder the primary workload's (the ladder's) SLOs count through ``capacity_rps``."""
    if space.ladder is None:
        return dict(space.slo_limits)
    primary = space.mix[0]
    by_ladder = {primary.metric(key) for key in primary.slos}
    return {k: v for k, v in space.slo_limits.items() if k not in by_ladder}


def constraint_names(space: Space) -> list[str]:
    names = [*constrained_slos(space), ERROR_RATE_CONSTRAINT]
    if space.aggregation.min_slo_attainment is not None:
        names.append(ATTAINMENT_WORST)
    if space.cost is not None and space.cost.max_per_1m_output_tokens_usd is not None:
        names.append(COST_METRIC)
    if space.quality is not None:
        names += list(space.quality.constraint_bounds())
    if space.ladder is not None:
        names.append(CAPACITY_CONSTRAINT)
    return names


def violations(space: Space, metrics: Mapping[str, float]) -> dict[str, float]:
    """Constraint value per SLO (≤ 0 means met), plus the error-rate constraint."""
    out: dict[str, float] = {}
    for key, limit in constrained_slos(space).items():
        measured = metrics.get(key, math.nan)
        out[key] = 1.0 if not math.isfinite(measured) else (measured - limit) / limit
    error_rate = metrics.get("error_rate", 1.0)
    out[ERROR_RATE_CONSTRAINT] = error_rate - space.max_error_rate
    least = space.aggregation.min_slo_attainment
    if least is not None:
        attained = metrics.get(ATTAINMENT_WORST, math.nan)
        out[ATTAINMENT_WORST] = least - attained if math.isfinite(attained) else 1.0
    if space.cost is not None and space.cost.max_per_1m_output_tokens_usd is not None:
        limit = space.cost.max_per_1m_output_tokens_usd
        cost = metrics.get(COST_METRIC, math.inf)
        out[COST_METRIC] = 1.0 if not math.isfinite(cost) else (cost - limit) / limit
    if space.ladder is not None:
        least = space.ladder.min_capacity_rps
        capacity = metrics.get(CAPACITY_CONSTRAINT, math.nan)
        if not (math.isfinite(capacity) and capacity > 0):
            out[CAPACITY_CONSTRAINT] = 1.0  # no level held the SLOs
        else:
            out[CAPACITY_CONSTRAINT] = (least - capacity) / least if least is not None else 0.0
    if space.quality is not None:
        # Quality metrics are fractions or nats: the raw margin, unscaled. Unmeasured (no
        # reference, probe failed) counts as violated.
        for key, (kind, bound) in space.quality.constraint_bounds().items():
            measured = metrics.get(key, math.nan)
            if not math.isfinite(measured):
                out[key] = 1.0
            else:
                out[key] = bound - measured if kind == "min" else measured - bound
    return out


def cost_per_1m_output_tokens(
    device_hour_usd: float, n_devices: int, output_throughput: float
) -> float:
    """Dollars per million output tokens at the measured rate, the devices fully paid."""
    if output_throughput <= 0:
        return math.inf
    return device_hour_usd * n_devices / 3600.0 / output_throughput * 1e6


def slos_hold(space: Space, metrics: Mapping[str, float]) -> bool:
    """Whether one load point of the primary workload (``space.mix[0]``: the only one, or a
    mix's first; its metrics unprefixed) met its latency SLOs and the error-rate limit."""
    for key, limit in space.mix[0].slos.items():
        measured = metrics.get(key, math.nan)
        if not (math.isfinite(measured) and measured <= limit):
            return False
    return metrics.get("error_rate", 1.0) <= space.max_error_rate


def failed_violations(space: Space) -> dict[str, float]:
    return {name: 1.0 for name in constraint_names(space)}


def is_feasible(constraints: Mapping[str, float]) -> bool:
    return all(value <= 0 for value in constraints.values())


def objective_values(space: Space, metrics: Mapping[str, float]) -> list[float]:
    values = []
    for objective in space.objectives:
        value = metrics.get(objective.metric, math.nan)
        if not math.isfinite(value):
            value = failed_value(objective.resolved_direction)
        values.append(float(value))
    return values


def failed_value(direction: str) -> float:
    return FAILED_MAXIMIZE_VALUE if direction == "maximize" else FAILED_MINIMIZE_VALUE


def failed_values(space: Space) -> list[float]:
    return [failed_value(d) for d in space.directions]


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = False
    for x, y, direction in zip(a, b, directions, strict=True):
        if direction == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def pareto_indices(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (duplicates all kept)."""
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p, directions) for j, q in enumerate(points) if j != i)
    ]


def gain(value: float, default: float, direction: str) -> float | None:
    """How many times better than the default (> 1 is better), or None when undefined."""
    if not (math.isfinite(value) and math.isfinite(default)):
        return None
    if direction == "maximize":
        return value / default if default > 0 else None
    return default / value if value > 0 else None
