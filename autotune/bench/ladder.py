"""The load ladder: one started server measured at rising load levels, and what the curve says.

Pure: ``run_ladder`` runs the levels through a ``measure(level) -> figures`` callback (the HTTP
step measures a real server, tests pass a function), so the rules here are testable without an
engine. Latency only rises with load, so

* the ladder stops at the first level that misses an SLO: no higher level can hold, and the
  capacity lies between that level and the one before (``stop_reason`` says so);
* capacity at SLO is interpolated between those two levels (``bench.capacity.capacity_of``,
  one of the capacity module's two strategies);
* after each passing level an optimistic bound of the trial's objectives (higher levels can
  only gain rate up to ``max level / E2E now``, never interactivity) is compared with the
  study's current front: a bound some front point dominates ends the ladder ("off the front").

Every level's figures are stored with the trial as one ``measurements`` entry carrying
``LEVEL_KEY`` (see ``levels_of``), beside the repeats of the main measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autotune.bench.capacity import Capacity, capacity_of, slo_ratio
from autotune.metrics import CAPACITY_METRIC
from autotune.scoring import dominates
from autotune.space import LadderSpec

if TYPE_CHECKING:
    from autotune.bench.step import MeasureContext, Measured

LEVEL_KEY = "ladder_level"  # marks a ``measurements`` entry as one level of the ladder


@dataclass
class Level:
    """One measured level: its load (a concurrency, or an offered rate in requests/s)."""

    index: int
    load: float
    metrics: dict[str, float]
    slo_ratio: float  # worst measured / limit over the SLOs (≤ 1: every SLO held)
    holds: bool  # every SLO and the error-rate limit held
    extended: bool = False  # above the listed levels (every listed one held)

    @property
    def rate(self) -> float:
        """Achieved request rate (completed requests / s)."""
        return self.metrics.get("request_throughput", 0.0)

    @property
    def interactivity(self) -> float:
        """Output tokens/s one request sees while it streams: 1000 / mean TPOT (ms)."""
        tpot = self.metrics.get("tpot_mean_ms", math.nan)
        return 1000.0 / tpot if math.isfinite(tpot) and tpot > 0 else math.nan

    def to_dict(self, kind: str) -> dict[str, Any]:
        return {LEVEL_KEY: self.index, "kind": kind, "load": self.load, "holds": self.holds,
                **({"extended": True} if self.extended else {}),
                "slo_ratio": self.slo_ratio if math.isfinite(self.slo_ratio) else None,
                "metrics": {k: v for k, v in self.metrics.items() if math.isfinite(v)}}


@dataclass
class LadderResult:
    kind: str
    planned: list[float]
    levels: list[Level] = field(default_factory=list)
    stop_reason: str | None = None  # why the ladder stopped before its last level

    @property
    def capacity(self) -> Capacity:
        return capacity_of(self.levels)

    def as_metrics(self, n_devices: int, device_hour_usd: float | None) -> dict[str, float]:
        """The trial's curve metrics (``autotune.space.ladder.LADDER_METRICS``)."""
        return derived_metrics(self.capacity, n_devices, device_hour_usd) | {
            "ladder_levels_run": float(len(self.levels)),
            "ladder_levels_extended": float(sum(1 for lv in self.levels if lv.extended)),
            "ladder_stopped_early": float(self.stop_reason is not None),
        }

    def records(self) -> list[dict[str, Any]]:
        """One ``measurements`` entry per level; the stop reason rides on the last."""
        out = [level.to_dict(self.kind) for level in self.levels]
        if out and self.stop_reason:
            out[-1]["stop_reason"] = self.stop_reason
        return out


def derived_metrics(
    capacity: Capacity, n_devices: int, device_hour_usd: float | None
) -> dict[str, float]:
    per_device = capacity.output_throughput / max(n_devices, 1)
    out = {
        CAPACITY_METRIC: capacity.rate,
        "throughput_per_device_at_capacity": per_device,
        "interactivity_at_capacity": capacity.interactivity,
        "capacity_is_lower_bound": float(capacity.lower_bound),
    }
    if device_hour_usd is not None:
        out["cost_per_1m_at_capacity"] = (
            device_hour_usd / 3600.0 / per_device * 1e6 if per_device > 0 else math.inf
        )
    return out


def optimistic_metrics(
    levels: Sequence[Level], kind: str, top_load: float, margin: float, n_devices: int,
    device_hour_usd: float | None,
) -> dict[str, float]:
    """The best curve metrics the rest of the ladder could still give, with ``margin`` slack.

    Rate: a closed loop of ``c`` requests completes ``c / E2E`` per second and E2E only rises
    with load, so no level up to ``top_load`` beats ``top_load / E2E(now)``; a rate ladder
    never completes more than it offers. Interactivity only falls with load. Tokens per
    request are the workload's, so throughput scales with the rate."""
    now = levels[-1]
    e2e_s = now.metrics.get("e2e_mean_ms", math.nan) / 1000.0
    if kind == "concurrency" and math.isfinite(e2e_s) and e2e_s > 0:
        rate_bound = top_load / e2e_s
    else:
        rate_bound = top_load
    rate_bound = max(rate_bound, now.rate) * (1 + margin)
    per_request = now.metrics.get("output_throughput", 0.0) / now.rate if now.rate > 0 else 0.0
    best_inter = max((lv.interactivity for lv in levels if math.isfinite(lv.interactivity)),
                     default=math.nan)
    bound = Capacity(rate_bound, rate_bound * per_request, best_inter * (1 + margin))
    return derived_metrics(bound, n_devices, device_hour_usd)


def off_front(
    bound: Mapping[str, float],
    objectives: Sequence[tuple[str, str]],
    front: Sequence[Sequence[float]],
) -> int | None:
    """The index of a front point that dominates ``bound`` on the objectives, else None. An
    objective the curve does not bound (e.g. a quality metric) makes nothing dominated."""
    mine = []
    for metric, _ in objectives:
        value = bound.get(metric, math.nan)
        if not math.isfinite(value):
            return None
        mine.append(value)
    for i, point in enumerate(front):
        if len(point) == len(mine) and dominates(point, mine, [d for _, d in objectives]):
            return i
    return None


FrontCheck = Callable[[Sequence[Level]], str | None]


def front_check(
    spec: LadderSpec,
    objectives: Sequence[tuple[str, str]],
    front: Sequence[Sequence[float]],
    n_devices: int,
    device_hour_usd: float | None,
    extend: bool = True,
) -> FrontCheck | None:
    """The front stop of one ladder against the study's ``front`` (None with no front): after a
    passing level, the reason to stop when a front point dominates the optimistic bound. The
    bound runs to the highest load the ladder may reach: its extension's top when it may
    extend (so the stop is rarely possible then), its last listed level when not."""
    if not front:
        return None
    top = ([*spec.resolved_levels(), *(spec.extension() if extend else [])])[-1]

    def check(levels: Sequence[Level]) -> str | None:
        bound = optimistic_metrics(levels, spec.kind, top, spec.front_margin, n_devices,
                                   device_hour_usd)
        if off_front(bound, objectives, front) is None:
            return None
        shown = ", ".join(f"{m} {'≤' if d == 'maximize' else '≥'} {bound[m]:.4g}"
                          for m, d in objectives)
        return f"at best {shown}, which the study's front already dominates"

    return check


def run_ladder(
    measure: Callable[[float], Mapping[str, float]],
    spec: LadderSpec,
    slos: Mapping[str, float],
    max_error_rate: float,
    front_check: FrontCheck | None = None,
    on_level: Callable[[int, float], None] = lambda _i, _load: None,
    extend: bool = True,
) -> LadderResult:
    """Measure ``spec``'s levels in order: ``measure(load)`` returns one level's figures.
    With ``spec.early_stop``, stop at the first level missing an SLO, or when
    ``front_check(levels so far)`` names a reason (the bound is off the study's front).
    When every listed level held (and ``extend``: a replayed grid has no other levels), go
    on rising (``spec.extension()``) until a level misses, so capacity is bracketed; only a
    ladder that reached ``extend_to`` holding keeps it a lower bound."""
    planned = spec.resolved_levels()
    result = LadderResult(spec.kind, planned)
    above = spec.extension() if extend else []
    for index, load in enumerate([*planned, *above]):
        extended = index >= len(planned)
        if extended and not all(level.holds for level in result.levels):
            break  # the listed levels found the edge: nothing to extend
        on_level(index, load)
        metrics = {k: float(v) for k, v in measure(load).items()}
        ratio = slo_ratio(metrics, slos)
        holds = ratio <= 1.0 and metrics.get("error_rate", 1.0) <= max_error_rate
        level = Level(index, load, metrics, ratio, holds, extended)
        result.levels.append(level)
        if extended and not holds:
            break  # the edge, bracketed
        # the last level run: the ladder's last, or the last listed one missing (no extension)
        last = index == len(planned) + len(above) - 1 or (index == len(planned) - 1
                                                            and not holds)
        if not spec.early_stop or last:
            continue
        if not holds:
            result.stop_reason = (
                f"level {index + 1} ({_load_text(spec.kind, load)}) missed the SLOs"
                + (": no level can hold them" if index == 0 else ": higher levels cannot hold")
            )
            break
        why = front_check(result.levels) if front_check is not None else None
        if why:
            result.stop_reason = f"off the front after level {index + 1}: {why}"
            break
    return result


def _load_text(kind: str, load: float) -> str:
    return f"concurrency {load:g}" if kind == "concurrency" else f"{load:g} req/s"


def pareto_values(
    values: Sequence[Sequence[float]], directions: Sequence[str]
) -> list[list[float]]:
    """The non-dominated points of ``values`` (the study's feasible trials' objective values)."""
    return [list(p) for p in values
            if not any(dominates(q, p, directions) for q in values if q is not p)]


def levels_of(measurements: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The ladder entries of a trial's stored ``measurements``, in level order."""
    found = [m for m in measurements or [] if LEVEL_KEY in m]
    return sorted(found, key=lambda m: m[LEVEL_KEY])


def repeats_of(measurements: Sequence[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    """The main measurement's repeats: the stored entries that are not ladder levels."""
    return [m for m in measurements or [] if LEVEL_KEY not in m]


def ladder_into(
    found: Measured,
    trial: MeasureContext,
    measure: Callable[[float], Mapping[str, float]],
    front: Callable[[], Sequence[Sequence[float]]] | None,
    on_level: Callable[[int, float], None] = lambda _i, _load: None,
    extend: bool = True,
) -> None:
    """Run the space's ladder (``trial.space.ladder``, set) through ``measure`` on the
    primary workload's SLOs, with the early stop against the study's ``front`` when the
    ladder asks for it, and add what it says to ``found``: the curve metrics, one
    ``measurements`` entry per level, the early stop's reason as a note. Shared by the live
    step and the replay, so both stop and score alike."""
    space, spec = trial.space, trial.space.ladder
    assert spec is not None
    n_devices = len(trial.devices.ids)
    price = space.cost.device_hour_usd if space.cost is not None else None
    points = list(front()) if front is not None and spec.early_stop else []
    objectives = [(o.metric, o.resolved_direction) for o in space.objectives]
    ladder = run_ladder(measure, spec, space.mix[0].slos, space.max_error_rate,
                        front_check(spec, objectives, points, n_devices, price, extend),
                        on_level, extend)
    found.metrics.update(ladder.as_metrics(n_devices, price))
    found.measurements.extend(ladder.records())
    if ladder.stop_reason:
        found.notes.append(f"load ladder stopped early: {ladder.stop_reason}")
