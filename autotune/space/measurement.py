"""The ``measurement`` section of a space file: repeats, windows and the thresholds at which a
measurement counts as disturbed. ``bench.stats.detect_disturbance`` judges with this section
(its defaults when it is given none): the thresholds have this one home. ``driver`` chooses the
load driver; ``vllm_bench_refusal`` says which workloads ``vllm bench serve`` cannot run (the
space refuses them at load)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from autotune.space.workload import (
    ChatJsonlPrompts,
    JsonlPrompts,
    SharedPrefixPrompts,
    SharegptPrompts,
    TraceLoad,
    TracePrompts,
    WorkloadSpec,
)


class MeasurementSpec(BaseModel):
    """The ``measurement`` section of a space file (defaults suit a quiet host)."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["builtin", "vllm_bench"] = Field(
        default="builtin",
        description="the load driver: autotune's own, or vLLM's `vllm bench serve` module")
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


def vllm_bench_refusal(workload: WorkloadSpec | None, is_mix: bool = False) -> str | None:
    """Why ``vllm bench serve`` cannot run this workload as the built-in driver would (None:
    it can). Its datasets are random, ShareGPT (one user message), prefix repetition and plain
    JSONL prompts, its loads a closed loop or Poisson arrivals."""
    if is_mix or workload is None:
        return ("vllm_bench runs one workload: a mix of workloads (`workloads:`) needs the "
                "built-in driver")
    prompts = workload.prompts
    if isinstance(workload.load, TraceLoad) or isinstance(prompts, TracePrompts):
        return ("vllm_bench cannot replay a trace (its prompts and arrival times): use the "
                "built-in driver")
    if isinstance(prompts, ChatJsonlPrompts):
        return ("vllm_bench has no chat JSONL dataset (prompts kind chat): use the built-in "
                "driver, or plain JSONL prompts (kind jsonl)")
    if isinstance(prompts, SharegptPrompts) and prompts.multi_turn is not None:
        return ("vllm_bench sends a ShareGPT conversation's first turn only: multi_turn needs "
                "the built-in driver")
    if isinstance(prompts, SharedPrefixPrompts) and prompts.api == "chat":
        return ("vllm_bench's prefix_repetition dataset sends completions: shared_prefix with "
                "api chat needs the built-in driver")
    if isinstance(prompts, JsonlPrompts | SharegptPrompts) and not isinstance(
            prompts.output_tokens, int):
        return (f"vllm_bench sends {prompts.kind} prompts through vLLM's ShareGPT reader, with "
                "one output length for every prompt: give output_tokens a number (vLLM's "
                "reader of per-prompt lengths needs pandas, which autotune does not install)")
    return None
