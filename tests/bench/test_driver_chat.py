"""The load driver's chat path against the mock server: what it sends to /v1/chat/completions
and how each chat SSE case is counted (as vLLM's chat benchmark counts it)."""

from __future__ import annotations

from typing import Any

import pytest

from autotune.bench.driver import BenchResult, HttpLoadDriver
from autotune.bench.prompt_set import Prompt
from autotune.space.workload import WorkloadSpec
from autotune.testing.mock_openai import Behaviour, MockOpenAI

TOKENS = 4
REQUESTS = 4
CHAT = "/v1/chat/completions"


def workload(**update: Any) -> WorkloadSpec:
    """A workload's load and limits; its prompts section is not used by ``measure``."""
    data: dict[str, Any] = {
        "prompts": {"kind": "random", "input_tokens": 8, "output_tokens": TOKENS},
        "num_requests": REQUESTS,
        "steady_state": None,  # one wave: these count each request (steady: test_steady_state)
        "load": {"kind": "concurrency", "concurrency": 2},
        "request_timeout_s": 10,
    }
    data.update(update)
    return WorkloadSpec.model_validate(data)


def chats(count: int = REQUESTS, max_tokens: int = TOKENS) -> list[Prompt]:
    return [
        Prompt(None, max_tokens, messages=(
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": f"question number {i} please"},
        ))
        for i in range(count)
    ]


def _run(server: MockOpenAI, behaviour: Behaviour | None = None, **update: Any) -> BenchResult:
    if behaviour is not None:
        server.behaviour = behaviour
    return HttpLoadDriver().measure(server.endpoint, chats(), workload(**update),
                                    {"e2e_p95_ms": 10_000})


def test_a_chat_goes_to_chat_completions_as_vllms_chat_benchmark_sends_it(
    server: MockOpenAI,
) -> None:
    result = _run(server)
    m = result.metrics
    assert m["completed"] == REQUESTS and m["failed"] == 0 and m["goodput_fraction"] == 1.0
    assert m["total_output_tokens"] == REQUESTS * TOKENS
    # The mock counts a message's words: "You answer briefly." + "question number i please"
    assert m["total_input_tokens"] == REQUESTS * 7
    assert [s.path for s in server.requests] == [CHAT] * REQUESTS  # no /tokenize: text prompts
    sent = [s.body for s in server.requests]
    assert sorted(b["messages"][1]["content"] for b in sent) == [
        f"question number {i} please" for i in range(REQUESTS)]
    for body in sent:
        assert body["messages"][0] == {"role": "system", "content": "You answer briefly."}
        assert body["max_completion_tokens"] == TOKENS and "max_tokens" not in body
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["ignore_eos"] is True and body["model"] == server.served_name
        assert "prompt" not in body
    for record in result.records:
        assert record.ok and record.conversation is None and record.turn == 0
        assert record.output_tokens == TOKENS and record.prompt_tokens == 7
        # vLLM's chat benchmark: the role-only first chunk is the first token event, so a
        # chat of n tokens has n gaps (the first one, role → first text, about 0).
        assert len(record.itls) == TOKENS
        assert record.e2e is not None and record.ttft is not None
        assert record.e2e == pytest.approx(record.ttft + sum(record.itls), abs=1e-6)


def test_the_role_chunk_comes_with_the_first_token_and_times_it(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(first_token_delay_s=0.05, token_delay_s=0.05))
    for record in result.records:
        assert record.ok and record.ttft is not None
        assert 0.05 <= record.ttft < 0.095  # the first text comes 0 s later, not 0.05 s
        assert len(record.itls) == TOKENS and record.itls[0] < 0.04
        assert sum(record.itls) >= 0.05 * (TOKENS - 1)


def test_without_a_role_chunk_the_first_text_is_the_first_token(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(role_chunk=False))
    assert result.metrics["completed"] == REQUESTS
    assert all(len(r.itls) == TOKENS - 1 for r in result.records)


def test_empty_deltas_and_a_finish_only_chunk_are_token_events(server: MockOpenAI) -> None:
    """vLLM's chat benchmark times every chunk with choices, whatever its delta holds."""
    result = _run(server, Behaviour(empty_chunks=2, finish_chunk=True, token_delay_s=0.01,
                                    usage_delay_s=0.2, keepalive_comments=True))
    assert result.metrics["completed"] == REQUESTS
    for record in result.records:
        assert record.ok
        assert len(record.itls) == 1 + 2 + TOKENS  # role, 2 empty, TOKENS texts, the finish
        assert record.e2e is not None and record.e2e < 0.2  # the usage chunk is not latency
        assert record.done_at - record.sent_at >= 0.2


def test_a_chat_stream_without_usage_is_truncated(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(usage=False))
    assert result.metrics["failed"] == REQUESTS
    assert all(r.error == f"truncated: 0 of {TOKENS} tokens" for r in result.records)


def test_an_error_mid_chat_stream_fails_the_request_with_its_error(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(error_after=2, token_delay_s=0.01))
    assert result.metrics["failed"] == REQUESTS and result.metrics["completed"] == 0
    for record in result.records:
        assert not record.ok and "mock error mid-stream" in record.error
        assert record.ttft is not None and len(record.itls) == 2  # role, t0, t1 were timed
        assert record.e2e is None


def test_a_non_200_chat_answer_fails_with_its_status(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(status=400))
    assert result.metrics["failed"] == REQUESTS
    assert all(r.error.startswith("HTTP 400: ") for r in result.records)


@pytest.mark.parametrize(
    "chunk",
    [
        '{"choices": [{"index": 0}]}',
        '{"choices": [{"index": 0, "delta": "text"}]}',
        '{"choices": [{"index": 0, "delta": {"content": 5}}]}',
    ],
)
def test_a_malformed_chat_chunk_fails_its_request_not_the_run(
    server: MockOpenAI, chunk: str,
) -> None:
    result = _run(server, Behaviour(bad_chunk=chunk))
    assert result.metrics["failed"] == REQUESTS
    for record in result.records:
        assert not record.ok and record.error.startswith("ValueError: malformed chat chunk")


def test_completions_and_chats_mix_in_one_run(server: MockOpenAI) -> None:
    prompts = [Prompt("plain words to complete", TOKENS), *chats(2)]
    result = HttpLoadDriver().measure(server.endpoint, prompts, workload(), {})
    assert result.metrics["completed"] == 3
    assert sorted(s.path for s in server.requests) == [CHAT, CHAT, "/v1/completions"]
    by_path = {s.path: s.body for s in server.requests}
    assert by_path["/v1/completions"]["prompt"] == "plain words to complete"
    assert by_path["/v1/completions"]["max_tokens"] == TOKENS
