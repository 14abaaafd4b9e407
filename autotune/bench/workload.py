"""Prompts for a benchmark: ``build_prompts`` turns the workload's ``prompts`` section into
the requests of one run.

Random prompts are lists of token ids, which vLLM's completions API accepts as ``prompt``: the
length is exact without a local tokenizer. The ids come from the server's own ``/tokenize`` of a
fixed English text, so they are ordinary tokens (no BOS/EOS or other special tokens). The other
kinds live in their own modules: datasets (ShareGPT, chat and plain JSONL), shared_prefix,
traces.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from autotune.bench.datasets import dataset_prompts
from autotune.bench.engine_tokenizer import EngineTokenizer
from autotune.bench.prompt_set import Prompt, PromptSet
from autotune.bench.shared_prefix import shared_prefix_prompts
from autotune.bench.traces import trace_prompts
from autotune.space import (
    RandomPrompts,
    SharedPrefixPrompts,
    TraceLoad,
    TracePrompts,
    WorkloadSpec,
)

__all__ = ["build_prompts", "random_prompts", "run_seed"]

PART_RUNS = 100_000  # run indices of one server stay below this


def run_seed(seed: int, run_index: int) -> int | str:
    """The seed of run ``run_index``: the workload's own for the first run, a derived one
    (string seeds hash deterministically in ``random.Random``) for each later run."""
    return seed if run_index == 0 else f"{seed}:{run_index}"


def random_prompts(
    spec: RandomPrompts, count: int, pool: list[int], seed: int | str
) -> list[Prompt]:
    rng = random.Random(seed)

    def length(mean: int) -> int:
        if not spec.range_ratio:  # no draw: the same prompts as before the ratio existed
            return mean
        low = max(1, math.floor(mean * (1 - spec.range_ratio)))
        return rng.randint(low, max(low, math.ceil(mean * (1 + spec.range_ratio))))

    return [random_prompt(rng, pool, length(spec.input_tokens), length(spec.output_tokens))
            for _ in range(count)]


def random_prompt(rng: random.Random, pool: Sequence[int], input_tokens: int,
                  output_tokens: int) -> Prompt:
    """``input_tokens`` token ids drawn from ``pool``, answered with ``output_tokens``."""
    return Prompt([rng.choice(pool) for _ in range(input_tokens)], output_tokens, input_tokens)


def build_prompts(
    workload: WorkloadSpec, base_url: str, model: str, run_index: int = 0, part: int = 0
) -> PromptSet:
    """Warm-up prompts first, then the measured ones (deterministic for a given seed and
    ``run_index``). Runs with different ``run_index`` on one server get prompts of their own
    (unless the workload shares prefixes on purpose, within a run), so none is served from
    the prefix cache because an earlier run sent it. The result says how many prompts were
    left out or cut to fit the engine's max_model_len (``PromptSet.counts()``). ``part`` k > 0:
    more prompts of the same run (a steady level that needs more than were built), none
    repeating part 0's or another part's; a shared-prefix run keeps its prefixes."""
    count = workload.warmup_requests + workload.num_requests
    spec = workload.prompts
    with EngineTokenizer(base_url, model) as tokenizer:
        if isinstance(spec, RandomPrompts):
            pool = tokenizer.pool()
            seed = run_seed(workload.seed, run_index)
            return PromptSet(random_prompts(spec, count, pool,
                                            f"{seed}:part{part}" if part else seed))
        if isinstance(spec, SharedPrefixPrompts):
            return shared_prefix_prompts(spec, count, workload.seed, run_index, tokenizer, part)
        if isinstance(spec, TracePrompts):
            scale = workload.load.time_scale if isinstance(workload.load, TraceLoad) else 1.0
            return trace_prompts(spec, count, workload.warmup_requests, workload.seed,
                                 run_index, tokenizer, scale)
        # a part reads records of a run index of its own: tagged apart from every other run's
        return dataset_prompts(spec, count, workload.seed, run_index + PART_RUNS * part,
                               tokenizer)
