"""The ``workload`` section of a space file: prompts and load shape (pydantic schemas).

A leaf module (it imports no autotune code), so the load driver, the prompt builders and the
space file can all use these models without importing one another.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

__all__ = [
    "ChatJsonlPrompts", "ConcurrencyLoad", "FixedLength", "JsonlPrompts", "LengthSpec",
    "MultiTurn", "NormalLength", "PoissonLoad", "PromptsSpec", "RandomPrompts", "SharegptPrompts",
    "SharedPrefixPrompts", "SteadyState", "TraceColumns", "TraceLoad", "TracePrompts",
    "UniformLength", "WorkloadSpec",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FixedLength(_Strict):
    kind: Literal["fixed"] = "fixed"
    tokens: int = Field(gt=0)

    def draw(self, rng: random.Random) -> int:
        return self.tokens


class UniformLength(_Strict):
    """Integers from ``low`` to ``high``, both included, equally likely."""

    kind: Literal["uniform"] = "uniform"
    low: int = Field(gt=0)
    high: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.low > self.high:
            raise ValueError(f"empty range: low {self.low} > high {self.high}")
        return self

    def draw(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)


class NormalLength(_Strict):
    """A normal distribution, rounded and clipped to ``[min, max]``."""

    kind: Literal["normal"] = "normal"
    mean: float = Field(gt=0)
    std: float = Field(ge=0)
    min: int = Field(default=1, gt=0)
    max: int | None = Field(default=None, gt=0)

    def draw(self, rng: random.Random) -> int:
        value = max(self.min, round(rng.gauss(self.mean, self.std)))
        return value if self.max is None else min(self.max, value)


LengthSpec = Annotated[FixedLength | UniformLength | NormalLength, Field(discriminator="kind")]
# "data": the data's own output length (a dataset's reference answer counted with the served
# model's /tokenize, a plain JSONL line's ``output_tokens``); a number or a distribution
# overrides the data.
def _output_form(value: object) -> str:
    if isinstance(value, dict | BaseModel):
        return "distribution"
    return "data" if isinstance(value, str) else "number"


OutputTokens = Annotated[
    Annotated[Literal["data"], Tag("data")] | Annotated[int, Field(gt=0), Tag("number")]
    | Annotated[LengthSpec, Tag("distribution")],
    Discriminator(_output_form),
]
TooLong = Literal["filter", "truncate", "send"]


class RandomPrompts(_Strict):
    """Random token ids. With ``range_ratio`` r, each request's input and output lengths are
    drawn uniformly from [floor(n·(1 − r)), ceil(n·(1 + r))] (output at least 1), as
    ``vllm bench serve --random-range-ratio`` draws them; 0: every request the same."""

    kind: Literal["random"] = "random"
    input_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)
    range_ratio: float = Field(default=0.0, ge=0, lt=1)


class _Dataset(_Strict):
    path: str
    output_tokens: OutputTokens = "data"
    # A prompt whose input plus output exceeds the engine's max_model_len: left out (and the
    # next record taken), cut to fit (its end), or sent as it is (no /tokenize needed).
    too_long: TooLong = "filter"


class JsonlPrompts(_Dataset):
    """One JSON object a line: ``field`` (the prompt text) and optionally ``output_tokens``."""

    kind: Literal["jsonl"] = "jsonl"
    field: str = "prompt"


class MultiTurn(_Strict):
    """Send a conversation's later user turns too, each with the whole history."""

    max_turns: int = Field(default=4, gt=0, description="user turns per conversation, at most")
    think_time_s: float = Field(default=0.0, ge=0, description="pause before each later turn")


class SharegptPrompts(_Dataset):
    """A JSON list of ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}``."""

    kind: Literal["sharegpt"] = "sharegpt"
    multi_turn: MultiTurn | None = None


class ChatJsonlPrompts(_Dataset):
    """OpenAI chat JSONL: one ``{"messages": [{"role": ..., "content": ...}, ...]}`` a line."""

    kind: Literal["chat"] = "chat"
    multi_turn: MultiTurn | None = None


class SharedPrefixPrompts(_Strict):
    """``num_prefixes`` system prompts of ``prefix_tokens`` tokens; each request is one of them
    followed by a suffix of its own (``suffix_tokens``). Share ratio: prefix / (prefix +
    suffix); each prefix is shared by num_requests / num_prefixes requests."""

    kind: Literal["shared_prefix"] = "shared_prefix"
    num_prefixes: int = Field(gt=0)
    prefix_tokens: int = Field(gt=0)
    suffix_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)
    api: Literal["completions", "chat"] = Field(
        default="completions", description="chat: system + user messages to the chat API")


class TraceColumns(_Strict):
    """Which columns (CSV) or keys (JSONL) of a generic trace hold what."""

    timestamp: str = "timestamp"
    input_tokens: str = "input_tokens"
    output_tokens: str = "output_tokens"
    group: str | None = None
    hash_ids: str | None = None


class TracePrompts(_Strict):
    """Requests of a production trace: arrival time, input and output lengths (and which
    share a prefix). Bodies are token ids of those lengths."""

    kind: Literal["trace"] = "trace"
    path: str
    format: Literal["azure", "burstgpt", "mooncake", "generic"]
    columns: TraceColumns | None = Field(default=None, description="format generic only")
    time_unit: Literal["s", "ms", "us"] | None = Field(
        default=None, description="generic numeric timestamps (default s)")
    block_tokens: int = Field(default=512, gt=0, description="tokens per hash id")
    group_prefix_tokens: int = Field(
        default=0, ge=0, description="requests of one group share their first N tokens")
    too_long: Literal["filter", "truncate"] = "filter"

    @model_validator(mode="after")
    def _generic_only(self) -> TracePrompts:
        if self.format != "generic" and (self.columns is not None or self.time_unit is not None):
            raise ValueError(f"columns and time_unit are for format generic, not {self.format}")
        return self


PromptsSpec = Annotated[
    RandomPrompts | JsonlPrompts | SharegptPrompts | ChatJsonlPrompts | SharedPrefixPrompts
    | TracePrompts,
    Field(discriminator="kind"),
]


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


class SteadyState(_Strict):
    """How long a concurrency or Poisson load runs, and which of its requests are measured
    (docs/measurement.md, "Steady state"). Ramp-up (the requests sent before the load first
    turned over: ``concurrency`` completions, or the first completion of an open loop) and
    drain (requests sent only to keep the load up while the measured ones finish) are not
    measured. The measured window closes once it holds at least ``num_requests`` requests,
    ``per_concurrency`` times the concurrency (closed loop) and ``min_duration_s`` seconds, or
    when ``max_requests`` measured requests were sent."""

    per_concurrency: float = Field(default=4.0, ge=1, description="window requests per slot")
    min_duration_s: float = Field(default=3.0, ge=0, description="window length, at least")
    max_requests: int = Field(default=4000, gt=0, description="window requests, at most")

    def window_requests(self, num_requests: int, concurrency: int | None) -> int:
        """The fewest measured requests of a window (before the time floor)."""
        per_slot = math.ceil(self.per_concurrency * concurrency) if concurrency else 0
        return min(self.max_requests, max(num_requests, per_slot))


class WorkloadSpec(_Strict):
    prompts: PromptsSpec
    num_requests: int = Field(gt=0, description="measured requests (a steady window's least)")
    warmup_requests: int = Field(default=0, ge=0)
    load: Annotated[ConcurrencyLoad | PoissonLoad | TraceLoad, Field(discriminator="kind")]
    seed: int = 0
    request_timeout_s: float = Field(default=300.0, gt=0)
    # No token (nor any answer) from any request in flight for this long, or no /health answer
    # within it: the engine stalled (e.g. SIGSTOPped, or hung), and the trial fails.
    stall_timeout_s: float = Field(default=30.0, gt=0)
    # None (``steady_state: null``): one wave of ``num_requests``, measured whole, as before
    # steady windows existed (benchmarks/steady_state.py compares the two). A trace load is
    # always replayed whole.
    steady_state: SteadyState | None = Field(default_factory=SteadyState)

    @property
    def steady(self) -> SteadyState | None:
        """The steady-state rule this workload's load runs under (None: one wave)."""
        return None if isinstance(self.load, TraceLoad) else self.steady_state

    @model_validator(mode="after")
    def _trace_load_needs_a_trace(self) -> WorkloadSpec:
        if isinstance(self.load, TraceLoad) and not isinstance(self.prompts, TracePrompts):
            raise ValueError(
                "load kind trace replays arrival times: it needs prompts of kind trace, "
                f"not {self.prompts.kind}"
            )
        return self
