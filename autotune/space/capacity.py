"""The ``capacity`` section of a space file (the bisection search for capacity at SLO), and the
bracketing rates it shares with a rate ladder given as ``start`` / ``factor`` / ``max``.

A leaf module (pydantic only): the space file reads it, and ``bench.capacity`` runs it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CapacitySpec(BaseModel):
    """The ``capacity`` section of a space file."""

    model_config = ConfigDict(extra="forbid")

    start_rate: float = Field(default=1.0, gt=0, description="first rate tried (requests/s)")
    max_rate: float = Field(default=256.0, gt=0, description="never try above this rate")
    bisection_steps: int = Field(default=3, ge=0, le=10)
    requests_per_point: int = Field(default=48, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)


def bracket_rates(start: float, maximum: float, factor: float = 2.0) -> list[float]:
    """The bracketing rates: ``start * factor**k`` below ``maximum``, then ``maximum`` (the
    load ladder's ``start``/``factor``/``max`` levels are these too)."""
    rates, rate = [], start
    while rate < maximum * (1 - 1e-9):
        rates.append(rate)
        rate *= factor
    return [*rates, maximum]
