"""The ``measurement`` section of a space file: repeats, windows and the thresholds at which a
measurement counts as disturbed. ``bench.stats.detect_disturbance`` judges with this section
(its defaults when it is given none): the thresholds have this one home."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MeasurementSpec(BaseModel):
    """The ``measurement`` section of a space file (defaults suit a quiet host)."""

    model_config = ConfigDict(extra="forbid")

    windows: int = Field(default=5, ge=2, le=50, description="time windows per measurement")
    max_repeats: int = Field(default=2, ge=0, le=10, description="re-measure a disturbed run")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    # Continuous batching on a quiet CPU host still drifts ~20% between windows of a few
    # seconds; these catch gross slow-downs (DESIGN's 2.2x).
    max_cv: float = Field(default=0.3, gt=0)
    min_window_ratio: float = Field(default=0.5, gt=0, le=1)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_foreign_cpu_pct: float = Field(default=10.0, gt=0)
    max_foreign_peak_pct: float = Field(default=25.0, gt=0)
    max_steal_pct: float = Field(default=5.0, gt=0)
