"""The ``ladder`` section of a space file: the load levels every started server is measured at.

A leaf module (pydantic, the metric catalogue and the capacity section's rate bracketing only),
so the space file and the ladder runner (bench/ladder.py) can both use it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autotune.metrics import directions, of_kind
from autotune.space.capacity import bracket_rates

MAX_LEVELS = 16
# How far a ladder whose every level held goes on by default: far past any one GPU server.
EXTEND_TO = {"concurrency": 4096.0, "rate": 10000.0}

# Trial metrics derived from the load curve (bench/ladder.py), with their better direction:
# capacity at SLO (which the ``capacity:`` section's bisection also gives) and the curve's own.
LADDER_METRICS = directions(of_kind("capacity", "ladder"))


class LadderSpec(BaseModel):
    """Load levels, lowest first: either ``levels`` or ``start`` / ``factor`` / ``max``.

    ``kind: concurrency`` holds that many requests in flight (closed loop); ``kind: rate``
    sends Poisson arrivals at that many requests/s, behind ``max_concurrency`` when set."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["concurrency", "rate"] = "concurrency"
    levels: list[float] | None = Field(default=None, min_length=1, max_length=MAX_LEVELS)
    start: float | None = Field(default=None, gt=0)
    factor: float = Field(default=2.0, gt=1)
    max: float | None = Field(default=None, gt=0)
    requests_per_level: int = Field(default=16, gt=0)
    max_concurrency: int | None = Field(
        default=None, gt=0, description="client gate of a rate ladder (its wait counts)"
    )
    early_stop: bool = Field(
        default=True, description="stop at the first level missing an SLO, or off the front"
    )
    front_margin: float = Field(
        default=0.1, ge=0, description="slack on the optimistic bound before a front stop"
    )
    min_capacity_rps: float | None = Field(
        default=None, gt=0, description="a constraint: capacity at SLO at least this"
    )
    extend: bool = Field(
        default=True, description="when every level holds, keep rising by factor until an "
        "SLO misses (or extend_to)"
    )
    extend_to: float | None = Field(
        default=None, gt=0, description="the highest load an extended ladder tries (default "
        f"concurrency {EXTEND_TO['concurrency']:g}, rate {EXTEND_TO['rate']:g} req/s)"
    )

    @model_validator(mode="after")
    def _levels(self) -> LadderSpec:
        if self.levels is not None and (self.start is not None or self.max is not None):
            raise ValueError("give either levels or start/factor/max, not both")
        if self.levels is None and (self.start is None or self.max is None):
            raise ValueError("give levels (a list), or start and max (and factor)")
        if self.start is not None and self.max is not None and self.max < self.start:
            raise ValueError(f"max ({self.max:g}) is below start ({self.start:g})")
        levels = self.resolved_levels()
        if len(levels) > MAX_LEVELS:
            raise ValueError(f"{len(levels)} levels: at most {MAX_LEVELS} (raise factor)")
        if any(v <= 0 for v in levels):
            raise ValueError("every level must be > 0")
        if any(b <= a for a, b in zip(levels, levels[1:], strict=False)):
            raise ValueError(f"levels must rise strictly, got {levels}")
        if self.kind == "concurrency" and any(not float(v).is_integer() for v in levels):
            raise ValueError(f"concurrency levels must be whole numbers, got {levels}")
        if self.kind == "concurrency" and self.max_concurrency is not None:
            raise ValueError("max_concurrency is for a rate ladder (a concurrency level is one)")
        return self

    def extension(self) -> list[float]:
        """The levels above the listed ones, in order: each the last times ``factor``
        (rounded up to a whole concurrency) up to ``extend_to``; [] without ``extend``."""
        if not self.extend:
            return []
        bound = self.extend_to if self.extend_to is not None else EXTEND_TO[self.kind]
        out, load = [], self.resolved_levels()[-1]
        while True:
            load = float(math.ceil(load * self.factor)) if self.kind == "concurrency" else (
                load * self.factor)
            if load > bound:
                return out
            out.append(load)

    def resolved_levels(self) -> list[float]:
        """The levels in order; ``start * factor**k`` up to ``max`` (``max`` itself last)."""
        if self.levels is not None:
            return [float(v) for v in self.levels]
        assert self.start is not None and self.max is not None
        # never more than needed to see that there are too many
        maximum = min(self.max, self.start * self.factor ** (MAX_LEVELS + 1))
        out = [float(round(v)) if self.kind == "concurrency" else v
               for v in bracket_rates(self.start, maximum, self.factor)]
        # a concurrency ladder rounds (1, 1.5, 2.25 → 1, 2, 2): drop the repeats
        return [v for i, v in enumerate(out) if i == 0 or v > out[i - 1]]
