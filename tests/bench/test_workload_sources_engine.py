"""Every prompt source against one real vLLM CPU server: each kind builds, fits the engine's
max_model_len and is served; runs of unique prompts share nothing in vLLM's prefix cache (its
own /metrics), a shared-prefix run shares most of its prompt tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from autotune.bench.driver import Endpoint, HttpLoadDriver
from autotune.bench.engine_metrics import engine_metrics
from autotune.bench.prompt_set import PromptSet
from autotune.bench.workload import build_prompts
from autotune.space.workload import WorkloadSpec
from tests.support.shared_engine import SharedEngine

pytestmark = pytest.mark.engine

SAMPLES = Path(__file__).resolve().parents[2] / "workloads"
MAX_MODEL_LEN = 512  # the quickstart's


@pytest.fixture(scope="module")
def endpoint(shared_engine: SharedEngine) -> Endpoint:
    assert shared_engine.space.model.max_model_len == MAX_MODEL_LEN
    return shared_engine.endpoint


def _workload(prompts: dict[str, Any], requests: int = 12, **more: Any) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "prompts": prompts, "num_requests": requests,
        "load": {"kind": "concurrency", "concurrency": 4},
        "steady_state": None,  # one wave: these count what each source sends
        **more})


def _build(endpoint: Endpoint, workload: WorkloadSpec, run_index: int = 0) -> PromptSet:
    return build_prompts(workload, endpoint.base_url, endpoint.served_name, run_index)


def _chat(endpoint: Endpoint, messages: list[dict[str, str]], max_tokens: int) -> dict[str, int]:
    response = httpx.post(f"{endpoint.base_url}/v1/chat/completions", timeout=120, json={
        "model": endpoint.served_name, "messages": messages, "max_tokens": max_tokens,
        "temperature": 0.0, "ignore_eos": True})
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    return {**body["usage"], "text": body["choices"][0]["message"]["content"]}


def _hit_rate(endpoint: Endpoint, workload: WorkloadSpec, run_index: int) -> float:
    before = httpx.get(f"{endpoint.base_url}/metrics", timeout=10).text
    result = HttpLoadDriver().run(endpoint, workload, {}, run_index)
    after = httpx.get(f"{endpoint.base_url}/metrics", timeout=10).text
    assert result.metrics["completed"] == workload.num_requests
    return engine_metrics(before, after)["prefix_cache_hit_rate"]


COMPLETION_SOURCES = {
    "random": {"kind": "random", "input_tokens": 64, "output_tokens": 16},
    "jsonl": {"kind": "jsonl", "path": str(SAMPLES / "prompts-sample.jsonl"),
              "output_tokens": {"kind": "uniform", "low": 8, "high": 64}},
    "shared_prefix": {"kind": "shared_prefix", "num_prefixes": 2, "prefix_tokens": 128,
                      "suffix_tokens": 32, "output_tokens": 16},
    "azure": {"kind": "trace", "format": "azure",
              "path": str(SAMPLES / "azure-trace-sample.csv")},
    "burstgpt": {"kind": "trace", "format": "burstgpt",
                 "path": str(SAMPLES / "burstgpt-sample.csv")},
    "mooncake": {"kind": "trace", "format": "mooncake", "too_long": "truncate",
                 "path": str(SAMPLES / "mooncake-trace-sample.jsonl")},
    "generic": {"kind": "trace", "format": "generic", "time_unit": "ms",
                "group_prefix_tokens": 64,
                "path": str(SAMPLES / "generic-trace-sample.csv"),
                "columns": {"timestamp": "arrival_ms", "input_tokens": "prompt_tokens",
                            "output_tokens": "completion_tokens", "group": "session"}},
}


@pytest.mark.parametrize("kind", list(COMPLETION_SOURCES))
def test_completion_sources_build_and_are_served(endpoint: Endpoint, kind: str) -> None:
    workload = _workload(COMPLETION_SOURCES[kind], requests=40)
    prompts = _build(endpoint, workload)
    assert len(prompts) == 40
    assert all(p.messages is None and p.input_tokens for p in prompts)
    assert all(p.input_tokens + p.max_tokens <= MAX_MODEL_LEN for p in prompts)
    result = HttpLoadDriver().run(endpoint, workload, {})
    assert result.metrics["completed"] == 40, [r.error for r in result.records if r.error][:3]
    print(f"{kind}: output {result.metrics['output_throughput']:.0f} tok/s, TTFT p95 "
          f"{result.metrics['ttft_p95_ms']:.0f} ms, filtered {prompts.filtered}, truncated "
          f"{prompts.truncated}")
    # the engine counted the prompt lengths the builder meant (ids, or text with its BOS)
    assert sorted(r.prompt_tokens for r in result.records) == sorted(
        p.input_tokens for p in prompts)
    assert result.metrics["prompts_filtered"] == prompts.filtered
    if kind in ("azure", "burstgpt", "generic"):  # their samples hold rows too long for 512
        assert prompts.filtered >= 1 and prompts.truncated == 0
    if kind == "mooncake":
        assert prompts.truncated >= 1 and prompts.filtered == 0
    if kind in ("shared_prefix", "mooncake", "generic"):  # some requests share a prefix
        assert 1 < len({p.group for p in prompts}) < 40


def test_a_too_long_text_prompt_is_filtered_or_truncated(endpoint: Endpoint) -> None:
    path = str(SAMPLES / "prompts-sample.jsonl")  # 4 of its 40 prompts are > 512 tokens
    filtered = _build(endpoint, _workload({"kind": "jsonl", "path": path, "output_tokens": 32},
                                          requests=40))
    truncated = _build(endpoint, _workload({"kind": "jsonl", "path": path, "output_tokens": 32,
                                            "too_long": "truncate"}, requests=40))
    assert filtered.filtered >= 4 and filtered.truncated == 0
    assert truncated.truncated == 4 and truncated.filtered == 0
    assert all(isinstance(p.body, str) for p in filtered)
    cut = [p for p in truncated if isinstance(p.body, list)]
    assert len(cut) == 4 and all(p.input_tokens == MAX_MODEL_LEN - 32 for p in cut)


@pytest.mark.parametrize("kind,file", [("sharegpt", "sharegpt-sample.json"),
                                       ("chat", "chat-sample.jsonl")])
def test_chat_datasets_fit_and_are_served_with_the_chat_template(
    endpoint: Endpoint, kind: str, file: str
) -> None:
    spec = {"kind": kind, "path": str(SAMPLES / file), "too_long": "truncate"}
    prompts = _build(endpoint, _workload(spec, requests=40))
    assert prompts.truncated >= 4 and prompts.filtered == 0  # 4 in 40 open with > 512 tokens
    for prompt in prompts[:6] + [p for p in prompts if p.input_tokens > 400][:2]:
        assert prompt.body is None and prompt.messages[-1]["role"] == "user"
        usage = _chat(endpoint, list(prompt.messages), prompt.max_tokens)
        assert usage["prompt_tokens"] == prompt.input_tokens
        assert usage["completion_tokens"] == prompt.max_tokens
        assert prompt.input_tokens + prompt.max_tokens <= MAX_MODEL_LEN


def test_multi_turn_conversations_fit_the_model_turn_by_turn(endpoint: Endpoint) -> None:
    spec = {"kind": "sharegpt", "path": str(SAMPLES / "sharegpt-sample.json"),
            "multi_turn": {"max_turns": 3, "think_time_s": 0.5}}
    prompts = _build(endpoint, _workload(spec, requests=20))
    conversations = [p for p in prompts if p.next_turns]
    assert conversations and all(len(p.next_turns) <= 2 for p in prompts)
    assert all(t.think_s == 0.5 for p in conversations for t in p.next_turns)
    prompt = max(conversations, key=lambda p: len(p.next_turns))
    history = list(prompt.messages)
    usage = _chat(endpoint, history, prompt.max_tokens)
    lengths = [usage["prompt_tokens"]]
    for turn in prompt.next_turns:  # as the driver sends them: the whole history each time
        history += [{"role": "assistant", "content": usage["text"]},
                    {"role": "user", "content": turn.content}]
        usage = _chat(endpoint, history, turn.max_tokens)
        assert usage["completion_tokens"] == turn.max_tokens
        assert usage["prompt_tokens"] + turn.max_tokens <= MAX_MODEL_LEN
        lengths.append(usage["prompt_tokens"])
    assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths)


def test_shared_prefix_chat_flavour_is_served(endpoint: Endpoint) -> None:
    spec = {"kind": "shared_prefix", "num_prefixes": 2, "prefix_tokens": 96,
            "suffix_tokens": 16, "output_tokens": 8, "api": "chat"}
    prompts = _build(endpoint, _workload(spec, requests=6))
    systems = {p.messages[0]["content"] for p in prompts}
    assert len(systems) == 2 and {p.group for p in prompts} == {"prefix-0", "prefix-1"}
    usage = _chat(endpoint, list(prompts[0].messages), 8)
    assert 96 <= usage["prompt_tokens"] <= 96 + 16 + 40  # re-tokenized text, the template


def test_trace_arrivals_follow_the_trace_scaled(endpoint: Endpoint) -> None:
    spec = COMPLETION_SOURCES["azure"]
    normal = _workload(spec, requests=20, warmup_requests=4,
                       load={"kind": "trace", "time_scale": 1.0})
    fast = normal.model_copy(update={"load": normal.load.model_copy(update={"time_scale": 0.5})})
    one, half = _build(endpoint, normal), _build(endpoint, fast)
    for part in (one[:4], one[4:]):
        assert part[0].arrival_s == 0.0
        assert [p.arrival_s for p in part] == sorted(p.arrival_s for p in part)
    assert one[-1].arrival_s > 1.0
    assert [p.arrival_s * 0.5 for p in one] == pytest.approx([p.arrival_s for p in half])
    later = _build(endpoint, normal, run_index=1)
    assert [p.body for p in later] != [p.body for p in one]


def test_unique_prompt_runs_miss_the_prefix_cache_and_shared_prefixes_hit_it(
    endpoint: Endpoint,
) -> None:
    unique = _workload({"kind": "random", "input_tokens": 256, "output_tokens": 8}, requests=24)
    dataset = _workload({"kind": "jsonl", "path": str(SAMPLES / "prompts-sample.jsonl"),
                         "output_tokens": 8}, requests=16)
    shared = _workload({"kind": "shared_prefix", "num_prefixes": 2, "prefix_tokens": 256,
                        "suffix_tokens": 32, "output_tokens": 8}, requests=24)
    rates = {
        "random run 0": _hit_rate(endpoint, unique, 0),
        "random run 1": _hit_rate(endpoint, unique, 1),
        "random run 0 again": _hit_rate(endpoint, unique, 0),  # the old behaviour: resent
        "jsonl run 0": _hit_rate(endpoint, dataset, 0),
        "jsonl run 1": _hit_rate(endpoint, dataset, 1),
        "jsonl run 2": _hit_rate(endpoint, dataset, 2),
        "shared prefix run 0": _hit_rate(endpoint, shared, 0),
        "shared prefix run 1": _hit_rate(endpoint, shared, 1),
    }
    print(rates)
    assert rates["random run 0"] < 0.05 and rates["random run 1"] < 0.05
    # the counters do see a resent prompt (its last block is computed again: 0.5 of 256 tokens
    # in blocks of 128)
    assert rates["random run 0 again"] > 0.4
    assert max(rates["jsonl run 1"], rates["jsonl run 2"]) < 0.05
    assert rates["shared prefix run 0"] > 0.6 and rates["shared prefix run 1"] > 0.6
