"""Replay: studies answered from a measured grid (docs/grid-format.md) instead of live engines,
so search strategies can be compared over hundreds of studies in seconds.

Where the replay sits. ``grid`` reads the grid (rows keyed by the engine flags each was started
with). ``launcher`` is a real ``EngineLauncher`` (registered as the ``replay`` engine): ``start``
receives the same ``EngineConfig`` a vLLM launch would and either raises the recorded
``EngineFailure`` or returns a ``ReplayedEngine``. A replayed engine has no HTTP server, so the
load driver cannot run against it: the trial's measuring step is ``step.GridMeasurement``, which
copies the recorded metrics verbatim; with a load ladder (grid format v2: the row's ``levels``)
its curve metrics are re-derived from the recorded levels by the ladder's own code, with its
early stop. ``runner.ReplayTrialRunner`` wires the two into an ordinary ``TrialRunner``, so
everything else of a trial is the study's own code: the flags are built as for vLLM,
known-invalid configurations are rejected by ``autotune.space.rules`` before any launch, devices
are acquired and released, and the study scores the outcome with ``autotune.scoring``. Nothing
is re-measured. ``engine_seconds`` sums what a replayed trial held an engine for.
"""

from autotune.replay.grid import Grid, GridError, GridLevel, GridMiss, GridRow
from autotune.replay.launcher import GRID_ENV, ReplayedEngine, ReplayLauncher
from autotune.replay.runner import ENGINE_PHASES, ENGINE_S, ReplayTrialRunner, engine_seconds
from autotune.replay.step import GridMeasurement

__all__ = [
    "ENGINE_PHASES",
    "ENGINE_S",
    "GRID_ENV",
    "Grid",
    "GridError",
    "GridLevel",
    "GridMeasurement",
    "GridMiss",
    "GridRow",
    "ReplayLauncher",
    "ReplayTrialRunner",
    "ReplayedEngine",
    "engine_seconds",
]
