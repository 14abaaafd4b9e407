"""Shared-prefix prompts: ``num_prefixes`` system prompts, each followed by suffixes of its own,
as vLLM's ``prefix_repetition`` benchmark dataset builds them.

Every run draws new prefixes and suffixes (its seed derived from the workload's and the run
index), so the prefix cache is shared within a run, on purpose, and never across runs.
Requests are assigned to prefixes in turn and then shuffled: each prefix serves
``count / num_prefixes`` requests (one more for the first ``count % num_prefixes``).
"""

from __future__ import annotations

import random

from autotune.bench.engine_tokenizer import EngineTokenizer
from autotune.bench.prompt_set import Prompt, PromptSet, WorkloadError
from autotune.space import SharedPrefixPrompts


def shared_prefix_prompts(
    spec: SharedPrefixPrompts, count: int, seed: int, run_index: int, tokenizer: EngineTokenizer,
    part: int = 0,
) -> PromptSet:
    """``count`` requests of run ``run_index``; a ``part`` > 0 (more requests of the same run)
    keeps the run's prefixes and draws suffixes of its own."""
    pool = tokenizer.pool()
    limit = tokenizer.limit()
    length = spec.prefix_tokens + spec.suffix_tokens
    if length + spec.output_tokens > limit:
        raise WorkloadError(
            f"prompts.prefix_tokens + suffix_tokens + output_tokens ({length} + "
            f"{spec.output_tokens}) exceed the engine's max_model_len {limit}")
    rng = random.Random(f"{seed}:{run_index}:shared_prefix")
    prefixes = [[rng.choice(pool) for _ in range(spec.prefix_tokens)]
                for _ in range(spec.num_prefixes)]
    if part:
        rng = random.Random(f"{seed}:{run_index}:shared_prefix:part{part}")
    owners = [j % spec.num_prefixes for j in range(count)]
    rng.shuffle(owners)
    prompts = []
    texts: dict[int, str] = {}
    for owner in owners:
        suffix = [rng.choice(pool) for _ in range(spec.suffix_tokens)]
        group = f"prefix-{owner}"
        if spec.api == "chat":
            if owner not in texts:
                texts[owner] = tokenizer.text(prefixes[owner])
            messages = ({"role": "system", "content": texts[owner]},
                        {"role": "user", "content": tokenizer.text(suffix)})
            prompts.append(Prompt(None, spec.output_tokens, messages=messages, group=group))
        else:
            prompts.append(Prompt(prefixes[owner] + suffix, spec.output_tokens, length,
                                  group=group))
    return PromptSet(prompts)
