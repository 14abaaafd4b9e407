"""Prompts for a benchmark: random prompts of exact token lengths, or a JSONL file.

Random prompts are lists of token ids, which vLLM's completions API accepts as ``prompt``: the
length is exact without a local tokenizer. The ids come from the server's own ``/tokenize`` of a
fixed English text, so they are ordinary tokens (no BOS/EOS or other special tokens).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import httpx

from autotune.bench.workload_spec import JsonlPrompts, RandomPrompts, WorkloadSpec

_SEED_TEXT = (
    "The quick brown fox jumps over the lazy dog while the committee reviews the annual "
    "budget report, and engineers measure latency, throughput and memory on every server "
    "in the cluster before the release. A small river runs through the old town; children "
    "play near the bridge, merchants sell bread, apples, cheese and coffee, and the clock "
    "in the square strikes noon. Modern systems schedule requests in batches, cache keys "
    "and values, and stream tokens back to users who expect answers within a second. "
    "def compute(values): return sum(v * v for v in values) / max(len(values), 1)\n"
    "Numbers like 3.14159, 2718, 42 and 1000000 appear in tables, logs and invoices. "
)


@dataclass(frozen=True)
class Turn:
    """A later user turn of a conversation: sent ``think_s`` seconds after the model answered
    the turn before, with the whole history."""

    content: str
    max_tokens: int
    think_s: float = 0.0


@dataclass(frozen=True)
class Prompt:
    """One request of a workload.

    ``body`` (token ids or text) goes to ``/v1/completions``; when ``messages`` is set instead
    (OpenAI chat messages) the request goes to ``/v1/chat/completions`` and the server's chat
    template applies. ``arrival_s`` (trace replay) is the send time as an offset from the
    run's start; ``next_turns`` are a conversation's later user turns, each sent with the
    whole history (including the model's own answers) after the workload's think time;
    ``group`` names the conversation or shared prefix the request belongs to.
    """

    body: list[int] | str | None
    max_tokens: int
    input_tokens: int | None = None
    messages: tuple[dict[str, str], ...] | None = None
    arrival_s: float | None = None
    next_turns: tuple[Turn, ...] = ()
    group: str | None = None


class WorkloadError(Exception):
    pass


def token_pool(base_url: str, model: str, timeout_s: float = 30.0) -> list[int]:
    """Ordinary token ids of the served model, from its /tokenize endpoint."""
    try:
        response = httpx.post(
            f"{base_url}/tokenize",
            json={"model": model, "prompt": _SEED_TEXT, "add_special_tokens": False},
            timeout=timeout_s,
        )
        response.raise_for_status()
        tokens = response.json()["tokens"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise WorkloadError(f"cannot tokenize with the engine's /tokenize: {exc}") from exc
    pool = sorted(set(int(t) for t in tokens))
    if not pool:
        raise WorkloadError("the engine's /tokenize returned no tokens")
    return pool


def random_prompts(spec: RandomPrompts, count: int, pool: list[int], seed: int) -> list[Prompt]:
    rng = random.Random(seed)
    return [
        Prompt(
            [rng.choice(pool) for _ in range(spec.input_tokens)],
            spec.output_tokens,
            spec.input_tokens,
        )
        for _ in range(count)
    ]


def jsonl_prompts(spec: JsonlPrompts, count: int, seed: int) -> list[Prompt]:
    path = Path(spec.path).expanduser()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise WorkloadError(f"cannot read prompts file {path}: {exc.strerror or exc}") from exc
    texts: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text = record[spec.field]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise WorkloadError(
                f"{path}:{number}: expected a JSON object with a {spec.field!r} string"
            ) from exc
        if not isinstance(text, str):
            raise WorkloadError(f"{path}:{number}: {spec.field!r} must be a string")
        texts.append(text)
    if not texts:
        raise WorkloadError(f"{path}: no prompts")
    rng = random.Random(seed)
    rng.shuffle(texts)
    return [Prompt(texts[i % len(texts)], spec.output_tokens) for i in range(count)]


def build_prompts(
    workload: WorkloadSpec, base_url: str, model: str, run_index: int = 0
) -> list[Prompt]:
    """Warm-up prompts first, then the measured ones (deterministic for a given seed and
    ``run_index``). Runs with different ``run_index`` on one server get prompts of their own
    (unless the workload shares prefixes on purpose), so none is served from the prefix cache
    because an earlier run sent it."""
    count = workload.warmup_requests + workload.num_requests
    if isinstance(workload.prompts, RandomPrompts):
        pool = token_pool(base_url, model)
        seed = workload.seed if run_index == 0 else hash((workload.seed, run_index))
        return random_prompts(workload.prompts, count, pool, seed)
    prompts = jsonl_prompts(workload.prompts, count * (run_index + 1), workload.seed)
    return prompts[count * run_index:]  # the file's next prompts (it wraps when it runs out)
