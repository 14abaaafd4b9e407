"""Trace replay against the mock server: each prompt is sent at its arrival time, open loop."""

from __future__ import annotations

from typing import Any

import pytest

from autotune.bench.driver import BenchResult, HttpLoadDriver
from autotune.bench.prompt_set import Prompt, Turn, WorkloadError
from autotune.space.workload import WorkloadSpec
from autotune.testing.mock_openai import Behaviour, MockOpenAI

TOKENS = 3
# Early by the event loop's clock resolution at most; late by the host's scheduling (a 2-core
# host shared with other test runs).
EARLY_S, LATE_S = 0.005, 0.1


def trace(**load: Any) -> WorkloadSpec:
    """A trace workload; its prompts are given to ``measure`` directly (the file is not read)."""
    return WorkloadSpec.model_validate({
        "prompts": {"kind": "trace", "path": "not-read.csv", "format": "azure"},
        "num_requests": 1,
        "load": {"kind": "trace", **load},
        "request_timeout_s": 10,
    })


def arrivals(offsets: list[float]) -> list[Prompt]:
    return [Prompt(f"request at {t}", TOKENS, arrival_s=t) for t in offsets]


def _replay(server: MockOpenAI, prompts: list[Prompt], behaviour: Behaviour | None = None,
            **update: Any) -> BenchResult:
    if behaviour is not None:
        server.behaviour = behaviour
    spec = trace().model_copy(update=update) if update else trace()
    return HttpLoadDriver().measure(server.endpoint, prompts, spec, {})


def test_each_request_is_sent_at_its_arrival_time(server: MockOpenAI) -> None:
    offsets = [0.0, 0.15, 0.2, 0.5, 0.8]
    result = _replay(server, arrivals(offsets))
    assert result.metrics["completed"] == len(offsets)
    sent = sorted(r.sent_at - result.started_at for r in result.records)
    for want, got in zip(offsets, sent, strict=True):
        assert want - EARLY_S <= got <= want + LATE_S
    assert result.benchmark_s >= 0.8
    # In the order of arrival, whatever the prompts' order.
    prompts = [s.body["prompt"] for s in server.requests]
    assert prompts == [f"request at {t}" for t in offsets]


def test_arrivals_count_from_the_runs_first_and_in_any_order(server: MockOpenAI) -> None:
    """A run after the warm-up starts at its own first arrival, not the trace's."""
    prompts = arrivals([5.0, 5.5, 5.3, 5.1])
    result = _replay(server, prompts, warmup_requests=1)  # the 5.0 one warms up
    assert result.benchmark_s < 1.0  # not 5 s of idling first
    assert [s.body["prompt"] for s in server.requests] == [
        "request at 5.0", "request at 5.1", "request at 5.3", "request at 5.5"]
    sent = sorted(r.sent_at - result.started_at for r in result.records)
    for want, got in zip([0.0, 0.2, 0.4], sent, strict=True):
        assert want - EARLY_S <= got <= want + LATE_S


def test_replay_is_open_loop(server: MockOpenAI) -> None:
    """Requests that last longer than the gaps between arrivals do not delay the next ones."""
    offsets = [0.0, 0.05, 0.1, 0.15]
    result = _replay(server, arrivals(offsets), Behaviour(first_token_delay_s=0.4))
    sent = sorted(r.sent_at - result.started_at for r in result.records)
    for want, got in zip(offsets, sent, strict=True):
        assert want - EARLY_S <= got <= want + LATE_S
    assert all(r.ttft is not None and r.ttft >= 0.4 for r in result.records)
    assert all(r.queued_s == 0 for r in result.records)


def test_a_concurrency_cap_holds_arrivals_and_keeps_their_wait(server: MockOpenAI) -> None:
    offsets = [0.0, 0.0, 0.0]
    result = _replay(server, arrivals(offsets), Behaviour(first_token_delay_s=0.1),
                     load=trace(max_concurrency=1).load)
    queued = sorted(r.queued_s for r in result.records)
    assert queued[0] < 0.05 and queued[1] >= 0.1 and queued[2] >= 0.2
    assert all(r.ttft is not None and r.ttft < 0.3 for r in result.records)


def test_a_traced_conversation_starts_at_its_arrival(server: MockOpenAI) -> None:
    talk = Prompt(None, TOKENS, arrival_s=0.3, messages=({"role": "user", "content": "hi"},),
                  next_turns=(Turn("more", TOKENS, think_s=0.1),))
    result = _replay(server, [*arrivals([0.0]), talk])
    turns = sorted((r for r in result.records if r.conversation is not None),
                   key=lambda r: r.turn)
    assert [r.turn for r in turns] == [0, 1] and all(r.ok for r in turns)
    assert 0.3 - EARLY_S <= turns[0].sent_at - result.started_at <= 0.3 + LATE_S
    assert turns[1].sent_at - turns[0].done_at >= 0.1


def test_a_trace_load_needs_every_arrival_time(server: MockOpenAI) -> None:
    prompts = [*arrivals([0.0]), Prompt("no time", TOKENS)]
    with pytest.raises(WorkloadError, match="prompt 1 has no arrival time"):
        _replay(server, prompts)
    assert server.requests == []
