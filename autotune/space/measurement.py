"""The ``measurement`` section of a space file, and the disturbance thresholds it defaults to.

A leaf schema: it imports no other autotune module, so ``space`` can load it without pulling
in the measurement machinery (``measurement`` imports the benchmark driver, which imports
``space``). ``stats.detect_disturbance`` takes its default thresholds from here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# When a measurement counts as disturbed (see stats.detect_disturbance).
MAX_CV = 0.15
MIN_WINDOW_RATIO = 0.6
MAX_ERROR_RATE = 0.01
MAX_FOREIGN_CPU_PCT = 10.0
MAX_FOREIGN_PEAK_PCT = 25.0
MAX_STEAL_PCT = 5.0


class MeasurementSpec(BaseModel):
    """The ``measurement`` section of a space file (defaults suit a quiet host)."""

    model_config = ConfigDict(extra="forbid")

    windows: int = Field(default=5, ge=2, le=50, description="time windows per measurement")
    max_repeats: int = Field(default=2, ge=0, le=10, description="re-measure a disturbed run")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    # Looser than stats' defaults: continuous batching on a quiet CPU host still drifts ~20%
    # between windows of a few seconds; these catch gross slow-downs (DESIGN's 2.2x).
    max_cv: float = Field(default=0.3, gt=0)
    min_window_ratio: float = Field(default=0.5, gt=0, le=1)
    max_error_rate: float = Field(default=MAX_ERROR_RATE, ge=0, le=1)
    max_foreign_cpu_pct: float = Field(default=MAX_FOREIGN_CPU_PCT, gt=0)
    max_foreign_peak_pct: float = Field(default=MAX_FOREIGN_PEAK_PCT, gt=0)
    max_steal_pct: float = Field(default=MAX_STEAL_PCT, gt=0)
