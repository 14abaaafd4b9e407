"""The replay's measuring step: a trial's figures copied from the grid row of the configuration
its engine was started with; with a load ladder, the ladder re-run over the row's levels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from autotune.bench import MeasureContext, Measured, ladder_into
from autotune.engines.base import EngineConfig, RunningEngine
from autotune.replay.grid import Grid, GridError, GridLevel, GridRow

if TYPE_CHECKING:
    from autotune.quality import QualityProbe


class GridMeasurement:
    """The replay's measuring step (implements MeasuringStep): the recorded metrics, timings
    and disturbance verdict of the configuration the engine was started with. No load is
    driven and no quality probe or capacity search runs (a grid holds none of them).

    With a ``ladder:`` in the space, the load ladder is replayed over the row's recorded
    levels by the ladder's own code (``bench.ladder.run_ladder``): the curve metrics are
    derived from the levels, and with ``ladder.early_stop`` the ladder stops where a live one
    would (the first level missing an SLO; a bound the study's front dominates, the front read
    from ``front`` when the ladder starts, which the study runner sets as it does for the live
    step). ``timings["ladder_s"]`` is then the recorded seconds of the levels that ran
    (:func:`ladder_seconds`)."""

    quality: QualityProbe | None = None

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        # The study's current front, for the ladder's early stop (set by the study runner).
        self.front: Callable[[], Sequence[Sequence[float]]] | None = None

    def measure(
        self, engine: RunningEngine, config: EngineConfig, trial: MeasureContext
    ) -> Measured:
        trial.on_phase("replaying")
        row = self.grid.by_flags(config.flags)
        found = Measured(
            metrics=dict(row.metrics),
            timings={k: v for k, v in row.timings.items() if k not in ("startup_s", "teardown_s")},
            disturbed=bool(row.extra.get("disturbed", False)),
        )
        if trial.space.ladder is not None:
            self._ladder(row, trial, found)
        return found

    def _ladder(self, row: GridRow, trial: MeasureContext, found: Measured) -> None:
        if not row.levels:
            raise GridError(
                f"row {row.index} (line {row.line}) of {self.grid.path} has no ladder levels: "
                "a space with a ladder replays only a grid measured with one (format v2)"
            )
        ran: list[GridLevel] = []

        def measure(load: float) -> dict[str, float]:
            level = row.level_at(load)
            ran.append(level)
            return dict(level.metrics)

        # a grid holds the levels it measured: no extension above them
        ladder_into(found, trial, measure, self.front, extend=False)
        found.timings["ladder_s"] = ladder_seconds(row, ran)


def ladder_seconds(row: GridRow, ran: Sequence[GridLevel]) -> float:
    """The engine-seconds of the levels that ran: the row's recorded ``ladder_s`` (the whole
    ladder as it ran: a steady-state level's ramp-up and drain included) shared among its
    levels in proportion to their recorded seconds (a steady-state level records only its
    window's); the levels' own seconds when the row records no ``ladder_s``."""
    own = sum(level.benchmark_s for level in ran)
    recorded = row.timings.get("ladder_s")
    whole = sum(level.benchmark_s for level in row.levels)
    if recorded is None or whole <= 0:
        return own
    return recorded * own / whole
