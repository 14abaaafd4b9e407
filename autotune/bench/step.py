"""The measuring step of a trial: what is measured on an engine once it serves.

``TrialRunner`` starts the engine, hands it to a ``MeasuringStep`` and tears it down; a step
never starts or stops an engine. The default step is ``HttpMeasurement`` (bench/http_step.py:
the load driver under robust measurement, the quality probe, the SLO-capacity search); a replay
answers from a measured grid instead (``GridMeasurement`` in replay/step.py).

A leaf module: it names the types it talks about only for type checkers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from autotune.devices import DevicePool, DeviceSet
    from autotune.engines.base import EngineConfig, RunningEngine
    from autotune.engines.failures import EngineFailure
    from autotune.quality import QualityProbe, Reference
    from autotune.space import Space


@dataclass(frozen=True)
class MeasureContext:
    """What a step knows of the trial it measures."""

    space: Space
    number: int
    is_default: bool
    pool: DevicePool
    devices: DeviceSet
    log_path: Path  # the engine's log: a step writes its result files beside it
    on_phase: Callable[[str], None] = lambda _: None


@dataclass
class Measured:
    """What a step found. With ``failure`` set, the engine served but the trial failed (no
    request succeeded, the workload could not be built); the figures found so far are kept."""

    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    disturbed: bool = False
    notes: list[str] = field(default_factory=list)
    failure: EngineFailure | None = None
    # The study's quality reference, when this (default) trial recorded it.
    quality_reference: Reference | None = None


@runtime_checkable
class MeasuringStep(Protocol):
    """Measures one started engine for one trial.

    ``quality`` is the step's quality probe, if it runs one: the study hands it the stored
    reference. ``front`` is the study's current front (objective values of its non-dominated
    feasible trials), for a load ladder's early stop: the study sets it, a step outside a study
    has None. ``measure`` returns failures in ``Measured.failure`` and raises only for
    KeyboardInterrupt and bugs; the trial tears the engine down either way.
    """

    quality: QualityProbe | None
    front: Callable[[], Sequence[Sequence[float]]] | None

    def measure(
        self, engine: RunningEngine, config: EngineConfig, trial: MeasureContext
    ) -> Measured: ...
