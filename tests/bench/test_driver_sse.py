"""The load driver against the mock OpenAI server: how each SSE case is counted."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from autotune.bench.driver import BenchResult, Endpoint, EngineStalled, HttpLoadDriver
from autotune.bench.metrics import percentile
from autotune.bench.prompt_set import WorkloadError
from autotune.engines.process import free_port
from autotune.space.workload import WorkloadSpec
from autotune.testing.mock_openai import Behaviour, MockOpenAI

TOKENS = 4
REQUESTS = 4


def _workload(**update: Any) -> WorkloadSpec:
    data: dict[str, Any] = {
        "prompts": {"kind": "random", "input_tokens": 8, "output_tokens": TOKENS},
        "num_requests": REQUESTS,
        "steady_state": None,  # one wave: these count each request (steady: test_steady_state)
        "load": {"kind": "concurrency", "concurrency": 2},
        "request_timeout_s": 10,
    }
    data.update(update)
    return WorkloadSpec.model_validate(data)


def _run(server: MockOpenAI, behaviour: Behaviour | None = None, **workload: Any) -> BenchResult:
    if behaviour is not None:
        server.behaviour = behaviour
    return HttpLoadDriver().run(server.endpoint, _workload(**workload), {"e2e_p95_ms": 10_000})


def test_each_user_keeps_one_connection(server: MockOpenAI) -> None:
    # The body is read to its end after [DONE]: leaving it unread closes the connection, and
    # a real server then accepts a new one for every request (vLLM's client keeps its own).
    result = _run(server, num_requests=12)
    assert result.metrics["completed"] == 12
    peers = {s.peer for s in server.requests if s.path == "/v1/completions"}
    assert None not in peers and len(peers) == 2  # concurrency 2


def test_a_clean_stream_counts_every_token(server: MockOpenAI) -> None:
    result = _run(server)
    m = result.metrics
    assert m["completed"] == REQUESTS and m["failed"] == 0 and m["error_rate"] == 0
    assert m["total_output_tokens"] == REQUESTS * TOKENS
    assert m["total_input_tokens"] == REQUESTS * 8
    assert m["goodput_fraction"] == 1.0
    for record in result.records:
        assert record.ok and record.error == ""
        assert record.ttft is not None and record.e2e is not None and record.e2e >= record.ttft
        assert len(record.itls) == TOKENS - 1
        assert record.output_tokens == TOKENS and record.prompt_tokens == 8
    sent = [s.body for s in server.requests if s.path == "/v1/completions"]
    assert len(sent) == REQUESTS
    for body in sent:
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["ignore_eos"] is True and body["max_tokens"] == TOKENS
        assert body["model"] == server.served_name
        assert len(body["prompt"]) == 8 and all(isinstance(t, int) for t in body["prompt"])
    # The prompt ids come from the server's own /tokenize, once per run.
    assert [s.path for s in server.requests].count("/tokenize") == 1


def test_delays_show_in_ttft_itl_and_tpot(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(first_token_delay_s=0.05, token_delay_s=0.02))
    m = result.metrics
    assert m["completed"] == REQUESTS
    assert m["ttft_p50_ms"] >= 50 and m["itl_p50_ms"] > 0 and m["tpot_mean_ms"] > 0
    for record in result.records:
        assert record.ttft is not None and record.ttft >= 0.05
        assert len(record.itls) == TOKENS - 1
        # Single intervals may shrink in delivery; the last token cannot come before it was sent.
        assert record.ttft + sum(record.itls) >= 0.05 + 0.02 * (TOKENS - 1)
        assert record.e2e is not None and record.e2e >= 0.05 + 0.02 * (TOKENS - 1)


def test_chunks_with_empty_text_count_as_in_vllm_bench(server: MockOpenAI) -> None:
    """vLLM's benchmark times every chunk that has choices, text or not (a special token
    streams as an empty text): the first such chunk is the first token. SSE comments are
    not chunks."""
    result = _run(server, Behaviour(empty_chunks=3, first_token_delay_s=0.05,
                                    token_delay_s=0.05, keepalive_comments=True))
    assert result.metrics["completed"] == REQUESTS
    for record in result.records:
        assert record.ok
        assert len(record.itls) == 3 + TOKENS - 1  # every chunk with choices opened one
        # The empty chunks come right after the first delay; the first text 0.05 s later
        # would have made TTFT >= 0.1 s.
        assert record.ttft is not None and 0.05 <= record.ttft < 0.095
        assert sum(record.itls) >= 0.05 * (TOKENS - 1)


def test_e2e_ends_at_the_last_token_not_at_the_stream_close(server: MockOpenAI) -> None:
    """vLLM's E2EL is the time to the last token; a slow usage chunk or close is not latency."""
    result = _run(server, Behaviour(token_delay_s=0.01, usage_delay_s=0.3))
    assert result.metrics["completed"] == REQUESTS
    for record in result.records:
        assert record.ttft is not None and record.e2e is not None
        assert record.e2e == pytest.approx(record.ttft + sum(record.itls), abs=1e-6)
        assert record.e2e < 0.3
        assert record.done_at - record.sent_at >= 0.3  # the stream itself did last longer
    assert result.metrics["e2e_p99_ms"] < 300


def test_a_stalled_engine_ends_the_run_with_a_stall(server: MockOpenAI) -> None:
    """No token from any request for ``stall_timeout_s``: the run stops, it does not wait for
    the request timeout (300 s by default)."""
    server.behaviour = Behaviour(token_delay_s=0.01, stall_after=2, stall_s=20)
    started = time.monotonic()
    with pytest.raises(EngineStalled, match=r"engine stalled: no token from any of 2 "
                       r"requests in flight for .* s \(stall_timeout_s 0.5\)"):
        HttpLoadDriver().run(server.endpoint, _workload(stall_timeout_s=0.5,
                                                        request_timeout_s=60), {})
    assert time.monotonic() - started < 5


def test_idle_gaps_between_arrivals_are_not_a_stall(server: MockOpenAI) -> None:
    """Under a slow Poisson load nothing is in flight between requests: no stall."""
    result = _run(server, Behaviour(token_delay_s=0.001), load={"kind": "poisson", "rate": 2},
                  num_requests=3, stall_timeout_s=0.2, seed=3)
    assert result.metrics["completed"] == 3


def test_client_queueing_under_a_concurrency_cap_is_recorded(server: MockOpenAI) -> None:
    """As ``vllm bench serve`` does, a request's send time is after the client's concurrency
    gate, and the time it waited there is kept apart (``queued_s``)."""
    result = _run(server, Behaviour(token_delay_s=0.02),
                  load={"kind": "poisson", "rate": 1000, "max_concurrency": 1}, num_requests=4)
    assert result.metrics["completed"] == 4
    queued = sorted(r.queued_s for r in result.records)
    assert queued[0] < 0.05 and queued[-1] >= 2 * 0.02 * (TOKENS - 1)
    for record in result.records:
        assert record.e2e is not None and record.e2e < 0.5 * (TOKENS * 0.02 * 4)


def test_an_error_chunk_mid_stream_fails_the_request_with_its_error(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(error_after=2, token_delay_s=0.01))
    m = result.metrics
    assert m["completed"] == 0 and m["failed"] == REQUESTS and m["error_rate"] == 1.0
    assert m["total_output_tokens"] == 0
    for record in result.records:
        assert not record.ok and "mock error mid-stream" in record.error
        # The tokens that came before the error were timed.
        assert record.ttft is not None and len(record.itls) == 1
        assert record.e2e is None


def test_an_early_close_fails_the_request_and_keeps_the_run(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(close_after=2))
    assert result.metrics["failed"] == REQUESTS and result.metrics["completed"] == 0
    for record in result.records:
        assert not record.ok and record.error.startswith("ClientPayloadError")
        assert record.ttft is not None and len(record.itls) == 1
        assert record.done_at >= record.sent_at > 0


def test_a_non_200_status_fails_every_request_with_the_status(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(status=503))
    assert result.metrics["failed"] == REQUESTS
    for record in result.records:
        assert record.error.startswith("HTTP 503: ") and "mock status 503" in record.error
        assert record.ttft is None and record.itls == []


@pytest.mark.parametrize(
    "chunk",
    [
        "not json",
        '"a string"',
        "null",
        "[1, 2]",
        '{"choices": "x"}',
        '{"choices": [7]}',
        '{"usage": "x"}',
        '{"choices": [], "usage": {"completion_tokens": "many"}}',
    ],
)
def test_a_malformed_chunk_fails_its_request_not_the_run(server: MockOpenAI, chunk: str) -> None:
    result = _run(server, Behaviour(bad_chunk=chunk))
    assert result.metrics["failed"] == REQUESTS
    for record in result.records:
        assert not record.ok
        assert record.error.split(":")[0] in ("JSONDecodeError", "ValueError")
        assert record.ttft is not None  # the token before the bad chunk was timed


def test_failed_requests_leave_the_latencies_of_the_others(server: MockOpenAI) -> None:
    server.script = [Behaviour(), Behaviour(first_token_delay_s=0.5, error_after=2)]
    result = _run(server, num_requests=6)
    m = result.metrics
    assert m["completed"] == 3 and m["failed"] == 3 and m["error_rate"] == 0.5
    assert m["total_output_tokens"] == 3 * TOKENS
    ok = [r for r in result.records if r.ok]
    failed = [r for r in result.records if not r.ok]
    assert all(r.ttft is not None and r.ttft >= 0.5 for r in failed)  # timed, yet left out:
    assert m["ttft_p99_ms"] == pytest.approx(1000 * percentile([r.ttft for r in ok], 99))
    assert m["ttft_p99_ms"] < 500


def test_a_stream_without_usage_is_counted_as_truncated(server: MockOpenAI) -> None:
    """With ignore_eos the driver needs the usage chunk to know every token came."""
    result = _run(server, Behaviour(usage=False))
    assert result.metrics["failed"] == REQUESTS
    assert all(r.error == f"truncated: 0 of {TOKENS} tokens" for r in result.records)


def test_fewer_tokens_than_asked_is_truncation(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(tokens=2))
    assert result.metrics["failed"] == REQUESTS
    assert all(r.error == f"truncated: 2 of {TOKENS} tokens" for r in result.records)


def test_a_timeout_fails_the_request(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(token_delay_s=0.2), request_timeout_s=0.3)
    assert result.metrics["failed"] == REQUESTS
    assert all(r.error.startswith("TimeoutError") for r in result.records)


def test_warmup_requests_are_sent_but_not_measured(server: MockOpenAI) -> None:
    result = _run(server, warmup_requests=3)
    assert len(result.records) == REQUESTS and result.metrics["completed"] == REQUESTS
    assert [s.path for s in server.requests].count("/v1/completions") == REQUESTS + 3
    assert result.warmup_s > 0 and result.benchmark_s > 0


def test_poisson_load_with_a_concurrency_cap(server: MockOpenAI) -> None:
    result = _run(server, Behaviour(token_delay_s=0.005),
                  load={"kind": "poisson", "rate": 200, "max_concurrency": 2}, num_requests=8)
    assert result.metrics["completed"] == 8 and result.metrics["failed"] == 0


def test_a_refused_connection_fails_every_request(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"question {i}"}) for i in range(3)))
    endpoint = Endpoint(f"http://127.0.0.1:{free_port()}", "nothing")
    workload = _workload(prompts={"kind": "jsonl", "path": str(prompts), "output_tokens": 4,
                                  "too_long": "send"})  # no /tokenize needed
    result = HttpLoadDriver().run(endpoint, workload, {})
    assert result.metrics["failed"] == REQUESTS and result.metrics["completed"] == 0
    assert all(r.error.startswith("ClientConnectorError") for r in result.records)


def test_only_an_unbuildable_workload_raises(tmp_path: Path) -> None:
    endpoint = Endpoint(f"http://127.0.0.1:{free_port()}", "nothing")
    with pytest.raises(WorkloadError, match="cannot tokenize"):
        HttpLoadDriver().run(endpoint, _workload(), {})
    missing = {"kind": "jsonl", "path": str(tmp_path / "missing.jsonl"), "output_tokens": 4}
    with pytest.raises(WorkloadError, match="cannot read prompts file"):
        HttpLoadDriver().run(endpoint, _workload(prompts=missing), {})
