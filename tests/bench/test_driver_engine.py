"""The load driver against one real vLLM CPU server: chats through the demo model's chat
template, 3-turn conversations that resend their history, and a short trace replay."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from autotune.bench.driver import BenchResult, Endpoint, HttpLoadDriver
from autotune.bench.engine_metrics import PREFIX_HITS, PREFIX_QUERIES, counter_delta
from autotune.bench.prompt_set import Prompt, Turn
from autotune.space.workload import WorkloadSpec
from tests.support.shared_engine import SharedEngine

pytestmark = pytest.mark.engine

TOKENS = 16
WORDS = ("river", "budget", "latency", "bridge", "coffee", "cluster", "report", "apple")


@pytest.fixture(scope="module")
def endpoint(shared_engine: SharedEngine) -> Endpoint:
    return shared_engine.endpoint


def workload(load: dict[str, Any], warmup: int = 0) -> WorkloadSpec:
    """Load, limits and warm-up; the prompts section is not used by ``measure`` (a trace load
    needs trace prompts: their file is not read)."""
    prompts = ({"kind": "trace", "path": "not-read.csv", "format": "azure"}
               if load["kind"] == "trace"
               else {"kind": "random", "input_tokens": 8, "output_tokens": TOKENS})
    return WorkloadSpec.model_validate({
        "prompts": prompts,
        "num_requests": 1, "warmup_requests": warmup, "load": load, "request_timeout_s": 120,
        "steady_state": None,  # one wave: these count what was sent (steady: test_ladder_engine)
    })


def question(tag: str, i: int) -> str:
    """A user message of its own (no prefix-cache hits between runs or prompts)."""
    return f"{tag} {i}: tell me about the {WORDS[i % len(WORDS)]} and the number {i * 37}."


def _figures(name: str, result: BenchResult) -> None:
    m = result.metrics
    print(f"{name}: output {m['output_throughput']:.1f} tok/s, TTFT p95 {m['ttft_p95_ms']:.1f} ms,"
          f" E2E p95 {m['e2e_p95_ms']:.1f} ms, {m['completed']:.0f} requests")


def _metrics(endpoint: Endpoint) -> str:
    return httpx.get(f"{endpoint.base_url}/metrics", timeout=30).text


def test_chats_go_through_the_chat_template(endpoint: Endpoint) -> None:
    prompts = [Prompt(None, TOKENS, messages=({"role": "system", "content": "Answer briefly."},
                                              {"role": "user", "content": question("chat", i)}))
               for i in range(10)]
    result = HttpLoadDriver().measure(endpoint, prompts, workload(
        {"kind": "concurrency", "concurrency": 4}, warmup=2), {"ttft_p95_ms": 60_000})
    _figures("chat", result)
    m = result.metrics
    assert m["completed"] == 8 and m["failed"] == 0 and m["goodput_fraction"] == 1.0
    assert m["total_output_tokens"] == 8 * TOKENS
    assert m["output_throughput"] > 0 and 0 < m["ttft_p95_ms"] < m["e2e_p95_ms"]
    plain = httpx.post(f"{endpoint.base_url}/tokenize", timeout=30, json={
        "model": endpoint.served_name, "prompt": "Answer briefly. " + question("chat", 2),
    }).json()["count"]
    for record in result.records:
        assert record.ok and record.output_tokens == TOKENS
        # The template's role tags come on top of the messages' own tokens.
        assert record.prompt_tokens > plain
        # The role chunk opens the stream; more token events than tokens there are not.
        assert 1 <= len(record.itls) <= TOKENS
        assert record.ttft is not None and record.e2e is not None and record.ttft < record.e2e


def test_a_conversation_resends_its_history_and_hits_the_prefix_cache(
    endpoint: Endpoint,
) -> None:
    prompts = [
        Prompt(None, TOKENS, messages=({"role": "system", "content": "Answer briefly."},
                                       {"role": "user", "content": question("talk", i)}),
               next_turns=(Turn(question("then", i), TOKENS, think_s=0.2),
                           Turn(question("finally", i), TOKENS, think_s=0.2)))
        for i in range(4)
    ]
    before = _metrics(endpoint)
    result = HttpLoadDriver().measure(endpoint, prompts, workload(
        {"kind": "concurrency", "concurrency": 2}), {"ttft_p95_ms": 60_000})
    after = _metrics(endpoint)
    _figures("3-turn conversations", result)
    m = result.metrics
    print(f"  first turns TTFT p95 {m['first_turn_ttft_p95_ms']:.1f} ms, later turns "
          f"{m['later_turn_ttft_p95_ms']:.1f} ms; conversation p50 "
          f"{m['conversation_duration_p50_ms']:.0f} ms (no think time)")
    assert m["completed"] == 12 and m["failed"] == 0
    assert m["conversations_completed"] == 4 and m["conversations_failed"] == 0
    for i in range(4):
        turns = sorted((r for r in result.records if r.conversation == i), key=lambda r: r.turn)
        assert [r.turn for r in turns] == [0, 1, 2]
        for earlier, later in zip(turns, turns[1:], strict=False):
            # The history: the earlier prompt, its answer and one more user message.
            assert later.prompt_tokens > earlier.prompt_tokens + TOKENS // 2
            assert later.sent_at - earlier.done_at >= 0.2
    # Each later turn's prompt starts with the one before it: the prefix cache serves it.
    hits = counter_delta(before, after, PREFIX_HITS)
    queries = counter_delta(before, after, PREFIX_QUERIES)
    assert hits is not None and queries
    print(f"  prefix-cache hit rate {hits / queries:.2f}")
    assert hits / queries > 0.2
    assert m["conversation_duration_p50_ms"] > 0
    assert m["conversation_duration_p95_ms"] < result.benchmark_s * 1000


def test_a_trace_is_replayed_at_its_arrival_times(endpoint: Endpoint) -> None:
    offsets = [0.0, 0.3, 0.4, 0.9, 1.2, 1.25, 1.8, 2.0]
    prompts = [Prompt(question("trace", i), TOKENS, arrival_s=10 + t)
               for i, t in enumerate(offsets)]
    result = HttpLoadDriver().measure(endpoint, prompts, workload({"kind": "trace"}), {})
    _figures("trace replay", result)
    m = result.metrics
    assert m["completed"] == len(offsets) and m["failed"] == 0
    sent = sorted(r.sent_at - result.started_at for r in result.records)
    for want, got in zip(offsets, sent, strict=True):
        assert want - 0.005 <= got <= want + 0.3  # the engine shares these 2 cores
    assert result.benchmark_s >= offsets[-1]
    assert m["request_throughput"] <= len(offsets) / offsets[-1]
