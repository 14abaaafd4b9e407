"""Known-invalid combinations, rejected before any engine starts.

Each rule reads the trial's parameters (plus fixed engine flags, the model's config.json and the
number of devices present) and returns a reason, or None when the rule does not object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RuleContext:
    values: Mapping[str, Any]  # effective parameter values: swept params + fixed flags
    max_model_len: int
    devices_present: int
    model_config: Mapping[str, Any]


Rule = Callable[[RuleContext], str | None]


def _chunked_prefill_off_needs_budget(ctx: RuleContext) -> str | None:
    chunked = ctx.values.get("enable_chunked_prefill")
    budget = ctx.values.get("max_num_batched_tokens")
    if chunked is False and budget is not None and budget < ctx.max_model_len:
        return (
            f"chunked prefill is off and max_num_batched_tokens ({budget}) < max_model_len "
            f"({ctx.max_model_len}): vLLM refuses to start (a whole prompt must fit one step)"
        )
    return None


def _budget_covers_sequences(ctx: RuleContext) -> str | None:
    budget = ctx.values.get("max_num_batched_tokens")
    seqs = ctx.values.get("max_num_seqs")
    if budget is not None and seqs is not None and budget < seqs:
        return (
            f"max_num_batched_tokens ({budget}) < max_num_seqs ({seqs}): vLLM refuses to start "
            "(every running sequence needs at least one token per step)"
        )
    return None


def _parallel_fits_devices(ctx: RuleContext) -> str | None:
    tp = int(ctx.values.get("tensor_parallel_size") or 1)
    pp = int(ctx.values.get("pipeline_parallel_size") or 1)
    if tp * pp > ctx.devices_present:
        return (
            f"tensor_parallel_size × pipeline_parallel_size = {tp * pp} > "
            f"{ctx.devices_present} device(s) present"
        )
    return None


def _tp_divides_heads(ctx: RuleContext) -> str | None:
    tp = int(ctx.values.get("tensor_parallel_size") or 1)
    heads = ctx.model_config.get("num_attention_heads")
    if heads and tp > 1 and heads % tp:
        return (
            f"the model's num_attention_heads ({heads}) is not divisible by "
            f"tensor_parallel_size ({tp})"
        )
    return None


RULES: tuple[Rule, ...] = (
    _chunked_prefill_off_needs_budget,
    _budget_covers_sequences,
    _parallel_fits_devices,
    _tp_divides_heads,
)


def check(ctx: RuleContext) -> str | None:
    """First reason a configuration is known to be invalid, or None."""
    for rule in RULES:
        reason = rule(ctx)
        if reason:
            return reason
    return None


def known_before_devices(values: Mapping[str, Any], max_model_len: int) -> str | None:
    """The rules that need neither the devices nor the model's config: what a search can
    rule out before it proposes a configuration (the trial checks every rule again)."""
    return check(RuleContext(values=values, max_model_len=max_model_len,
                             devices_present=1 << 30, model_config={}))
