"""The chat kinds and a trace driven from their builders through the load driver
(``HttpLoadDriver.run``) against one real vLLM CPU server, with the shipped sample files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from autotune.bench.driver import BenchResult, Endpoint, HttpLoadDriver
from autotune.bench.engine_metrics import engine_metrics
from autotune.bench.workload import build_prompts
from autotune.space.workload import WorkloadSpec
from tests.support.shared_engine import SharedEngine

pytestmark = pytest.mark.engine

SAMPLES = Path(__file__).resolve().parents[2] / "workloads"
MAX_MODEL_LEN = 512  # the quickstart's


@pytest.fixture(scope="module")
def endpoint(shared_engine: SharedEngine) -> Endpoint:
    return shared_engine.endpoint


def _workload(prompts: dict[str, Any], requests: int, **more: Any) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "prompts": prompts, "num_requests": requests, "request_timeout_s": 120,
        "load": {"kind": "concurrency", "concurrency": 3},
        "steady_state": None,  # one wave: these count what each kind sends
        **more})


def _run(endpoint: Endpoint, workload: WorkloadSpec, run_index: int = 0) -> BenchResult:
    result = HttpLoadDriver().run(endpoint, workload, {"ttft_p95_ms": 60_000}, run_index)
    errors = [r.error for r in result.records if r.error]
    assert not errors, errors[:3]
    return result


def test_sharegpt_single_turn_chats_through_the_driver(endpoint: Endpoint) -> None:
    workload = _workload({"kind": "sharegpt", "path": str(SAMPLES / "sharegpt-sample.json"),
                          "output_tokens": 12, "too_long": "truncate"}, requests=6)
    result = _run(endpoint, workload, run_index=1)
    m = result.metrics
    assert m["completed"] == 6 and m["failed"] == 0 and len(result.records) == 6
    assert all(r.conversation is None and r.output_tokens == 12 for r in result.records)
    assert all(0 < r.prompt_tokens <= MAX_MODEL_LEN - 12 for r in result.records)
    assert "conversations_completed" not in m
    assert m["output_throughput"] > 0 and 0 < m["ttft_p95_ms"] < m["e2e_p95_ms"]


def test_chat_jsonl_multi_turn_resends_a_growing_history(endpoint: Endpoint) -> None:
    workload = _workload({"kind": "chat", "path": str(SAMPLES / "chat-sample.jsonl"),
                          "output_tokens": 10, "too_long": "truncate",
                          "multi_turn": {"max_turns": 3, "think_time_s": 0.2}}, requests=4)
    prompts = build_prompts(workload, endpoint.base_url, endpoint.served_name, 2)
    turns = sum(1 + len(p.next_turns) for p in prompts)
    assert turns > 4  # some conversations have later turns
    result = _run(endpoint, workload, run_index=2)
    records = result.records
    assert len(records) == turns and result.metrics["completed"] == turns
    assert result.metrics["conversations_completed"] == 4
    later = [r for r in records if r.turn > 0]
    assert later
    by_conversation: dict[int, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.conversation, r.turn)):
        assert record.conversation is not None
        by_conversation.setdefault(record.conversation, []).append(record.prompt_tokens)
    for lengths in by_conversation.values():
        # each turn resends the history: the last prompt, its answer and the new user message
        assert all(b > a + 10 for a, b in zip(lengths, lengths[1:], strict=False)), lengths
    # a later turn starts only after the think time following the answer before it
    ordered = sorted(records, key=lambda r: (r.conversation, r.turn))
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.conversation == before.conversation:
            assert after.sent_at - before.done_at >= 0.19


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_shared_prefix_through_the_driver_hits_the_prefix_cache(
    endpoint: Endpoint, api: str
) -> None:
    workload = _workload({"kind": "shared_prefix", "num_prefixes": 2, "prefix_tokens": 384,
                          "suffix_tokens": 16, "output_tokens": 8, "api": api}, requests=8)
    before = httpx.get(f"{endpoint.base_url}/metrics", timeout=10).text
    result = _run(endpoint, workload, run_index=3)
    after = httpx.get(f"{endpoint.base_url}/metrics", timeout=10).text
    assert result.metrics["completed"] == 8
    lengths = [r.prompt_tokens for r in result.records]
    if api == "completions":
        assert lengths == [400] * 8
    else:  # re-tokenized text plus the chat template's tokens
        assert all(384 <= n <= 400 + 40 for n in lengths), lengths
    hit_rate = engine_metrics(before, after)["prefix_cache_hit_rate"]
    print(f"shared_prefix {api}: prefix-cache hit rate {hit_rate:.2f}")
    assert hit_rate > 0.5  # 6 of 8 find their prefix's 3 blocks of 128 cached


def test_azure_trace_replay_follows_the_arrival_offsets(endpoint: Endpoint) -> None:
    workload = _workload({"kind": "trace", "format": "azure",
                          "path": str(SAMPLES / "azure-trace-sample.csv")}, requests=16,
                         load={"kind": "trace", "time_scale": 1.2})
    prompts = build_prompts(workload, endpoint.base_url, endpoint.served_name, 4)
    offsets = sorted(p.arrival_s for p in prompts)
    assert offsets[0] == 0.0 and 2.0 < offsets[-1] < 8.0
    result = _run(endpoint, workload, run_index=4)
    assert result.metrics["completed"] == 16
    sends = sorted(r.sent_at - result.started_at for r in result.records)
    print("trace send lag (s):", [round(s - o, 3) for s, o in zip(sends, offsets, strict=True)])
    assert all(abs(s - o) < 0.3 for s, o in zip(sends, offsets, strict=True))
    assert sorted(r.prompt_tokens for r in result.records) == sorted(
        p.input_tokens for p in prompts)
    assert result.benchmark_s >= offsets[-1]
