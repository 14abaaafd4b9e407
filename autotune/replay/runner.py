"""A trial answered from a grid: the ordinary ``TrialRunner`` with the replay launcher and the
grid's measuring step, its timings those recorded, and what the trial held an engine for."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from autotune.devices import CpuSlotPool, DevicePool
from autotune.replay.grid import Grid
from autotune.replay.launcher import ReplayLauncher
from autotune.replay.step import GridMeasurement
from autotune.space import Space
from autotune.trial import PhaseCallback, TrialOutcome, TrialRunner
from autotune.trial_state import FailureKind

# What a trial's engine spends its time on (TrialOutcome.timings); their sum is engine-seconds.
ENGINE_PHASES = ("startup_s", "warmup_s", "benchmark_s", "ladder_s", "quality_s", "capacity_s",
                 "teardown_s")
ENGINE_S = "engine_s"


def engine_seconds(timings: Mapping[str, float]) -> float:
    """Seconds an engine was held for a trial: start, each measurement, teardown (0 for a
    configuration rejected before launch)."""
    return sum(float(timings.get(k, 0.0)) for k in ENGINE_PHASES)


class ReplayTrialRunner(TrialRunner):
    """A TrialRunner over a measured grid (docs/grid-format.md): the replay launcher and the
    grid's measuring step, everything else the ordinary trial (rejection rules, flag building,
    devices, the outcome). No load is driven, no quality probe or capacity search runs."""

    def __init__(
        self,
        space: Space,
        grid: Grid,
        *,
        pool: DevicePool | None = None,
        log_dir: Path | None = None,
    ) -> None:
        if pool is None:
            # DevicePool declares ``kind`` as a plain (invariant) attribute, so mypy does not
            # accept CpuSlotPool's narrower Literal["cpu"] as one; it is one at run time.
            pool = cast(DevicePool, CpuSlotPool(slots=1))
        launcher = ReplayLauncher(grid, write_logs=log_dir is not None)
        super().__init__(space, launcher, pool, log_dir or Path(os.devnull),
                         measuring=GridMeasurement(grid))
        self.grid = grid

    def run(
        self,
        number: int,
        params: Mapping[str, Any],
        *,
        is_default: bool,
        on_phase: PhaseCallback = lambda _: None,
    ) -> TrialOutcome:
        """The ordinary trial, its timings those recorded (a failed start's too: the replay
        fails at once), and ``timings["engine_s"]``: what the trial held an engine for."""
        outcome = super().run(number, params, is_default=is_default, on_phase=on_phase)
        if outcome.state == "failed" and outcome.failure is not None \
                and outcome.failure.kind != FailureKind.INTERRUPTED:
            outcome.timings.update(self.grid.by_flags(outcome.flags).timings)
        outcome.timings[ENGINE_S] = engine_seconds(outcome.timings)
        return outcome
