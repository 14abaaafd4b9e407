"""The ``workload`` section of a space file: prompts and load shape (pydantic schemas).

A leaf module (it imports no autotune code), so the load driver, the prompt builder and the
space file can all use these models without importing one another.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ConcurrencyLoad", "JsonlPrompts", "PoissonLoad", "RandomPrompts", "TraceLoad", "WorkloadSpec",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RandomPrompts(_Strict):
    kind: Literal["random"] = "random"
    input_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)


class JsonlPrompts(_Strict):
    kind: Literal["jsonl"] = "jsonl"
    path: str
    output_tokens: int = Field(gt=0)
    field: str = "prompt"


class ConcurrencyLoad(_Strict):
    kind: Literal["concurrency"] = "concurrency"
    concurrency: int = Field(gt=0)


class PoissonLoad(_Strict):
    kind: Literal["poisson"] = "poisson"
    rate: float = Field(gt=0, description="requests per second")
    max_concurrency: int | None = Field(default=None, gt=0)


class TraceLoad(_Strict):
    """Open-loop replay at the arrival times the prompts carry (a trace's timestamps, scaled
    by ``time_scale``: 0.5 replays twice as fast)."""

    kind: Literal["trace"] = "trace"
    time_scale: float = Field(default=1.0, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)


class WorkloadSpec(_Strict):
    prompts: Annotated[RandomPrompts | JsonlPrompts, Field(discriminator="kind")]
    num_requests: int = Field(gt=0)
    warmup_requests: int = Field(default=0, ge=0)
    load: Annotated[ConcurrencyLoad | PoissonLoad | TraceLoad, Field(discriminator="kind")]
    seed: int = 0
    request_timeout_s: float = Field(default=300.0, gt=0)
    # No token (nor any answer) from any request in flight for this long, or no /health answer
    # within it: the engine stalled (e.g. SIGSTOPped, or hung), and the trial fails.
    stall_timeout_s: float = Field(default=30.0, gt=0)
