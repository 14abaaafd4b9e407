"""Multi-turn conversations against the mock server: every turn resends the whole history with
the model's own answers, after its think time; turns and conversations are measured."""

from __future__ import annotations

import time
from typing import Any

import pytest

from autotune.bench.driver import HttpLoadDriver
from autotune.bench.metrics import RequestRecord
from autotune.bench.prompt_set import Prompt, Turn, WorkloadError
from autotune.space.workload import WorkloadSpec
from autotune.testing.mock_openai import Behaviour, MockOpenAI, Seen

TOKENS = 3
ANSWER = "t0 t1 t2 "  # the mock's answer of TOKENS tokens


def workload(**update: Any) -> WorkloadSpec:
    """A workload's load and limits; its prompts section is not used by ``measure``."""
    data: dict[str, Any] = {
        "prompts": {"kind": "random", "input_tokens": 8, "output_tokens": TOKENS},
        "num_requests": 1,
        "steady_state": None,  # one wave: these count each turn (steady: test_steady_state)
        "load": {"kind": "concurrency", "concurrency": 2},
        "request_timeout_s": 10,
    }
    data.update(update)
    return WorkloadSpec.model_validate(data)


def conversation(i: int, turns: int = 3, think_s: float = 0.0) -> Prompt:
    return Prompt(
        None, TOKENS, group=f"conv-{i}",
        messages=({"role": "system", "content": "Be brief."},
                  {"role": "user", "content": f"conversation {i} opens"}),
        next_turns=tuple(Turn(f"conversation {i} turn {k}", TOKENS + k, think_s)
                         for k in range(1, turns)),
    )


def _run(server: MockOpenAI, prompts: list[Prompt], behaviour: Behaviour | None = None,
         **update: Any):
    if behaviour is not None:
        server.behaviour = behaviour
    return HttpLoadDriver().measure(server.endpoint, prompts, workload(**update),
                                    {"ttft_p95_ms": 10_000})


def _sent_in(server: MockOpenAI, i: int) -> list[Seen]:
    """What the mock received of conversation ``i``, in order."""
    return [s for s in server.requests
            if s.body["messages"][1]["content"] == f"conversation {i} opens"]


def test_each_turn_resends_the_history_with_the_models_own_answers(server: MockOpenAI) -> None:
    server.script = [Behaviour(tokens=TOKENS), Behaviour(tokens=TOKENS + 1),
                     Behaviour(tokens=TOKENS + 2)]
    result = _run(server, [conversation(0)], load={"kind": "concurrency", "concurrency": 1})
    sent = [s.body for s in server.requests]
    opening = [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "conversation 0 opens"}]
    second = opening + [{"role": "assistant", "content": ANSWER},
                        {"role": "user", "content": "conversation 0 turn 1"}]
    third = second + [{"role": "assistant", "content": "t0 t1 t2 t3 "},
                      {"role": "user", "content": "conversation 0 turn 2"}]
    assert [b["messages"] for b in sent] == [opening, second, third]
    assert [b["max_completion_tokens"] for b in sent] == [TOKENS, TOKENS + 1, TOKENS + 2]
    records = result.records
    assert [(r.conversation, r.turn, r.ok) for r in records] == [(0, 0, True), (0, 1, True),
                                                                   (0, 2, True)]
    # Each later turn's prompt holds the history: more tokens every turn.
    assert records[0].prompt_tokens < records[1].prompt_tokens < records[2].prompt_tokens
    assert records[1].prompt_tokens == records[0].prompt_tokens + TOKENS + 4


def test_turns_and_conversations_are_measured(server: MockOpenAI) -> None:
    result = _run(server, [conversation(i) for i in range(4)],
                  Behaviour(first_token_delay_s=0.02, token_delay_s=0.005))
    m = result.metrics
    assert m["completed"] == 12 and m["failed"] == 0  # every turn is a request
    assert m["conversations_completed"] == 4 and m["conversations_failed"] == 0
    for part in ("first_turn", "later_turn"):
        assert m[f"{part}_ttft_p95_ms"] >= 20 and m[f"{part}_e2e_p50_ms"] >= 20
    assert m["ttft_p95_ms"] >= 20 and m["goodput_fraction"] == 1.0
    by_conversation: dict[int | None, list[RequestRecord]] = {}
    for record in result.records:
        by_conversation.setdefault(record.conversation, []).append(record)
    assert sorted(by_conversation) == [0, 1, 2, 3]
    durations = sorted(1000 * sum(r.e2e or 0 for r in c) for c in by_conversation.values())
    assert m["conversation_duration_p50_ms"] == pytest.approx(
        (durations[1] + durations[2]) / 2)
    assert [r.turn for r in by_conversation[2]] == [0, 1, 2]


def test_think_time_is_waited_between_turns_and_left_out_of_the_duration(
    server: MockOpenAI,
) -> None:
    result = _run(server, [conversation(i, turns=3, think_s=0.3) for i in range(2)])
    records = result.records
    for i in (0, 1):
        turns = [r for r in records if r.conversation == i]
        for before, after in zip(turns, turns[1:], strict=False):
            assert after.sent_at - before.done_at >= 0.3
    m = result.metrics
    assert m["conversations_completed"] == 2
    assert m["conversation_duration_p95_ms"] < 2 * 300  # two think times, not counted
    assert result.benchmark_s >= 0.6


def test_think_time_longer_than_the_stall_limit_is_not_a_stall(server: MockOpenAI) -> None:
    """Nothing is in flight while a user thinks: the watchdog does not count it."""
    started = time.monotonic()
    result = _run(server, [conversation(0, turns=2, think_s=0.8)], stall_timeout_s=0.3,
                  load={"kind": "concurrency", "concurrency": 1})
    assert result.metrics["completed"] == 2 and time.monotonic() - started >= 0.8


def test_concurrency_counts_conversations_in_flight(server: MockOpenAI) -> None:
    result = _run(server, [conversation(i, turns=2, think_s=0.1) for i in range(4)],
                  Behaviour(token_delay_s=0.01), load={"kind": "concurrency", "concurrency": 2})
    spans = {}
    for record in result.records:
        first, last = spans.get(record.conversation, (record.sent_at, record.done_at))
        spans[record.conversation] = (min(first, record.sent_at), max(last, record.done_at))
    assert len(spans) == 4
    for first, _ in spans.values():
        # at most 2 conversations (not requests) are open at any conversation's start
        assert sum(1 for a, b in spans.values() if a <= first < b) <= 2
    # a third conversation waits for a whole conversation, think time included, to end
    starts = sorted(a for a, _ in spans.values())
    assert starts[2] - starts[0] >= 0.1


def test_under_poisson_the_rate_and_the_gate_count_conversations(server: MockOpenAI) -> None:
    result = _run(server, [conversation(i, turns=2, think_s=0.05) for i in range(3)],
                  load={"kind": "poisson", "rate": 1000, "max_concurrency": 1})
    assert result.metrics["conversations_completed"] == 3
    first_turns = sorted(r.queued_s for r in result.records if r.turn == 0)
    assert first_turns[-1] >= 2 * 0.05  # waited for two whole conversations at the gate
    assert all(r.queued_s == 0 for r in result.records if r.turn > 0)


def test_a_failed_turn_ends_its_conversation(server: MockOpenAI) -> None:
    server.script = [Behaviour(), Behaviour(status=503), Behaviour()]
    result = _run(server, [conversation(0, turns=4)],
                  load={"kind": "concurrency", "concurrency": 1})
    assert len(server.requests) == 2  # turns 2 and 3 were never sent
    records = result.records
    assert [(r.turn, r.ok) for r in records] == [(0, True), (1, False), (2, False), (3, False)]
    assert records[1].error.startswith("HTTP 503")
    assert records[2].error == records[3].error == "not sent: turn 1 of its conversation failed"
    m = result.metrics
    assert m["conversations_failed"] == 1 and m["conversations_completed"] == 0
    assert m["failed"] == 3 and m["completed"] == 1 and m["error_rate"] == 0.75


def test_warm_up_counts_conversations(server: MockOpenAI) -> None:
    result = _run(server, [conversation(i, turns=2) for i in range(3)], warmup_requests=1)
    assert len(_sent_in(server, 0)) == 2  # the warm-up conversation was sent, both turns
    assert {r.conversation for r in result.records} == {0, 1}  # numbered within the run
    assert result.metrics["completed"] == 4


def test_a_conversation_needs_chat_messages(server: MockOpenAI) -> None:
    prompt = Prompt("a completion prompt", TOKENS, next_turns=(Turn("and then?", TOKENS),))
    with pytest.raises(WorkloadError, match="prompt 1 has later turns but no chat messages"):
        HttpLoadDriver().measure(server.endpoint, [conversation(0), prompt], workload(), {})
    assert server.requests == []  # nothing sent


def test_a_prompt_with_nothing_to_send_is_refused(server: MockOpenAI) -> None:
    with pytest.raises(WorkloadError, match="prompt 0 has neither a body nor chat messages"):
        HttpLoadDriver().measure(server.endpoint, [Prompt(None, TOKENS)], workload(), {})
