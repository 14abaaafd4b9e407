"""The ``quality:`` section of a space file and the views of the quality metrics it needs.

Imports only the metric catalogue (``autotune.metrics``, where the quality metrics' facts are),
so ``autotune.space.model`` and the quality probe can both use it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autotune.metrics import directions, lookup, of_kind

# Metric name → the direction that is better. Every trial with a ``quality:`` section gets them
# (the agreement ones only once the study has its reference outputs).
QUALITY_METRICS = directions(of_kind("quality"))
# Recorded beside them, never an objective or a constraint.
QUALITY_INFO_METRICS = tuple(m.name for m in of_kind("quality_info"))
# How a table heads them (their short names).
QUALITY_LABELS = {m.name: m.short_name for m in of_kind("quality")}

Scoring = Literal["exact", "contains", "numeric"]


class QualitySpec(BaseModel):
    """What the quality probe measures on each trial's live server (docs/quality.md)."""

    model_config = ConfigDict(extra="forbid")

    prompts: str = Field(description="JSONL file: one {prompt, answer?, scoring?} object per line")
    num_prompts: int | None = Field(
        default=64, gt=0, description="use the file's first N rows (null: all)"
    )
    max_tokens: int = Field(default=32, gt=0, description="greedy tokens generated per prompt")
    stop: list[str] = Field(default_factory=list, description="stop strings for generation")
    scoring: Scoring = Field(
        default="exact", description="how answers are graded unless a row says otherwise"
    )
    reference: Literal["default", "none"] = Field(
        default="default",
        description="default: agreement with the study's first (vLLM-default) trial; "
        "none: labelled accuracy only",
    )
    top_logprobs: int = Field(default=5, ge=1, le=20, description="logprobs asked per position")
    batch_size: int = Field(default=16, gt=0, description="prompts per completions request")
    timeout_s: float = Field(default=300.0, gt=0, description="per-request timeout")
    reference_wait_s: float = Field(
        default=900.0,
        ge=0,
        description="how long a trial waits for the reference while the default trial runs",
    )
    min: dict[str, float] = Field(
        default_factory=dict, description="constraints metric ≥ value, e.g. agreement ≥ 0.98"
    )
    max: dict[str, float] = Field(
        default_factory=dict, description="constraints metric ≤ value, e.g. drift ≤ 0.05"
    )

    @field_validator("min", "max")
    @classmethod
    def _quality_metric(cls, bounds: dict[str, float]) -> dict[str, float]:
        for key in bounds:
            if key not in QUALITY_METRICS:
                raise ValueError(
                    f"{key!r} is not a quality metric; use one of {', '.join(QUALITY_METRICS)}"
                )
        return bounds

    @model_validator(mode="after")
    def _needs_reference(self) -> QualitySpec:
        if self.reference == "none":
            needing = [k for k in (*self.min, *self.max) if k not in ("quality_accuracy",)]
            if needing:
                raise ValueError(
                    f"{', '.join(needing)} compare with the reference: remove "
                    "`reference: none` or those bounds"
                )
        both = set(self.min) & set(self.max)
        if both:
            raise ValueError(f"{', '.join(sorted(both))}: give min or max, not both")
        return self

    def constraint_bounds(self) -> dict[str, tuple[str, float]]:
        """Constraint name (the metric's) → ("min" | "max", bound)."""
        out: dict[str, tuple[str, float]] = {k: ("min", v) for k, v in self.min.items()}
        out.update({k: ("max", v) for k, v in self.max.items()})
        return out


def format_quality(metric: str, value: float | None) -> str:
    """A quality metric as people read it, by its catalogued unit: a share as a percentage,
    points of accuracy, nats as a plain number."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return "—"
    found = lookup(metric)
    unit = found.unit if found is not None else "fraction"
    if unit == "pt":
        return f"{value * 100:+.1f} pt"
    if unit == "fraction":
        return f"{value:.1%}"
    return f"{value:.3g}"
