"""The replay launcher, registered as the ``replay`` engine: ``start`` receives the same
``EngineConfig`` a vLLM launch would, looks the configuration up in the grid by its engine flags,
and either raises the recorded ``EngineFailure`` or returns a ``ReplayedEngine``, which has no
process and no HTTP server (its measuring step is ``autotune.replay.step.GridMeasurement``).

The grid was measured on vLLM, so the launcher builds a configuration's flags, its device count
and its host-fault fallback as vLLM's launcher does (``VllmConventions``): the flags it looks up
are those the measured engine was started with. Its health is its own: a replayed engine serves
nothing, so a failed benchmark stands as recorded.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from autotune.devices import DeviceSet
from autotune.engines.base import EngineConfig, RunningEngine, register
from autotune.engines.failures import EngineFailure
from autotune.engines.vllm import VllmConventions, render_flags
from autotune.replay.grid import Grid, GridError, GridRow
from autotune.trial_state import FailureKind

GRID_ENV = "AUTOTUNE_REPLAY_GRID"


class ReplayedEngine:
    """A RunningEngine that never ran here: it carries the recorded metrics of its row."""

    def __init__(
        self, row: GridRow, grid: Grid, argv: list[str], served_name: str, log_path: Path
    ) -> None:
        self.row = row
        self.base_url = f"replay://{grid.path or 'grid'}#{row.index}"
        self.served_name = served_name
        self.argv = argv
        self.log_path = log_path
        self.startup_s = float(row.timings.get("startup_s", 0.0))
        self.version = str(grid.meta.get("engine_version") or "replay")
        self.metrics = dict(row.metrics)
        self._stopped = False

    def alive(self) -> bool:
        return not self._stopped

    def failure(self) -> EngineFailure:
        return EngineFailure(FailureKind.CRASHED, "a replayed engine has no process to fail")

    def pids(self) -> list[int]:
        return []

    def stop(self) -> float:
        """The recorded teardown time (a replay tears nothing down)."""
        self._stopped = True
        return float(self.row.timings.get("teardown_s", 0.0))


class ReplayLauncher(VllmConventions):
    """Implements EngineLauncher over a grid. ``write_logs`` writes a one-line engine log per
    trial (which row answered), as a real launch leaves its log with the trial."""

    name = "replay"

    def __init__(self, grid: Grid, *, write_logs: bool = True) -> None:
        self.grid = grid
        self.write_logs = write_logs

    def healthy(self, engine: RunningEngine) -> bool:
        """No: a replayed engine has no server to ask (a benchmark failure stands)."""
        return False

    def argv(self, config: EngineConfig, port: int | None = None) -> list[str]:
        return ["replay", config.model, *render_flags(config.flags)]

    def start(
        self, config: EngineConfig, devices: DeviceSet, log_path: Path,
        *, stop: threading.Event | None = None,
    ) -> ReplayedEngine:
        row = self.grid.by_flags(config.flags)
        if self.write_logs:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(
                f"replayed from grid {self.grid.path} row {row.index}: {row.state}"
                + (f" ({row.failure_kind}: {row.failure_reason})" if row.failure_kind else "")
                + "\n"
            )
        if row.state != "complete":
            raise row.failure()
        return ReplayedEngine(row, self.grid, self.argv(config), config.served_name, log_path)


@register("replay")
def _launcher_from_env() -> ReplayLauncher:
    path = os.environ.get(GRID_ENV)
    if not path:
        raise GridError(f"the replay engine needs {GRID_ENV}=PATH of a grid file")
    return ReplayLauncher(Grid.load(path))
