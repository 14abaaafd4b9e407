"""Steady-state load levels against the mock server: the window leaves out ramp-up and drain,
holds its floors, and the throughputs are the window's completion rate (bench/steady.py)."""

from __future__ import annotations

from typing import Any

import pytest

from autotune.bench.driver import BenchResult, HttpLoadDriver
from autotune.bench.steady import DRAIN, MEASURED, RAMP, SteadyPlan, SteadyWindow
from autotune.space import SteadyState
from autotune.space.workload import WorkloadSpec
from autotune.testing.mock_openai import Behaviour, MockOpenAI

TOKENS = 4


def _workload(load: dict[str, Any], **update: Any) -> WorkloadSpec:
    data: dict[str, Any] = {
        "prompts": {"kind": "random", "input_tokens": 8, "output_tokens": TOKENS},
        "num_requests": 8, "load": load, "request_timeout_s": 10,
        "steady_state": {"per_concurrency": 4, "min_duration_s": 0.3},
    }
    data.update(update)
    return WorkloadSpec.model_validate(data)


def _run(server: MockOpenAI, workload: WorkloadSpec) -> BenchResult:
    server.behaviour = Behaviour(tokens=TOKENS, first_token_delay_s=0.01, token_delay_s=0.005)
    return HttpLoadDriver().run(server.endpoint, workload, {"e2e_p95_ms": 10_000})


def test_a_closed_loop_level_measures_only_its_steady_window(server: MockOpenAI) -> None:
    result = _run(server, _workload({"kind": "concurrency", "concurrency": 4}))
    window = result.window
    assert window is not None and window.opened is not None and window.closed is not None
    m = result.metrics
    # Ramp-up: the 4 opening requests and those sent until 4 had completed; never measured.
    assert window.sent[RAMP] >= 4
    ramp = sorted(r.done_at for r in window.records)[:4]
    assert window.opened == pytest.approx(max(ramp), abs=0.01)
    # The window: at least 4 x concurrency requests (> num_requests 8) and 0.3 s.
    assert m["steady_window_requests"] == window.sent[MEASURED] >= 16
    assert m["steady_window_s"] == pytest.approx(window.closed - window.opened)
    assert m["steady_window_s"] >= 0.3 and m["steady_window_short"] == 0
    assert m["completed"] == len(result.records) == window.sent[MEASURED]
    assert all(window.opened <= r.sent_at <= window.closed for r in result.records)
    # Drain: the load was held (requests sent after the window closed) until the last
    # measured request finished; none of them is measured.
    # (a drain request is sent at or after the close, each when a user's request finished
    # while a measured one was still running; those still running at the end are cancelled)
    assert window.sent[DRAIN] >= 1
    last_measured = max(r.done_at for r in result.records)
    assert window.closed < last_measured
    assert not [r for r in result.records if r.sent_at > window.closed]
    sent = [s for s in server.requests if s.path == "/v1/completions"]
    # Every ramp and measured request reached the server; a drain request cancelled at the end
    # may not have (CI, 2026-12-05: 3 drain requests counted, none of them received).
    assert window.sent[RAMP] + window.sent[MEASURED] <= len(sent) <= sum(window.sent.values())
    # Throughput: the requests that completed inside the window, over its length.
    inside = [r for r in window.records if window.opened <= r.done_at <= window.closed]
    assert m["request_throughput"] == pytest.approx(len(inside) / m["steady_window_s"])
    assert m["output_throughput"] == pytest.approx(TOKENS * len(inside) / m["steady_window_s"])


def test_an_open_loop_level_runs_for_its_time_floor(server: MockOpenAI) -> None:
    result = _run(server, _workload({"kind": "poisson", "rate": 100}, seed=3))
    window = result.window
    assert window is not None and window.opened is not None
    m = result.metrics
    # An open loop opens its window at the first completion; its floor: rate x 0.3 s = 30.
    assert window.sent[RAMP] >= 1 and window.opened >= window.first_send
    assert m["steady_window_requests"] >= 30 and m["steady_window_s"] >= 0.3
    assert all(window.opened <= r.sent_at for r in result.records)
    assert m["request_throughput"] == pytest.approx(100, rel=0.5)


def test_a_window_short_of_prompts_says_so() -> None:
    plan = SteadyPlan(concurrency=2, requests=10, min_duration_s=100.0, max_requests=100)
    window = SteadyWindow(plan)
    phases = [window.on_send(0.0, 20 - i) for i in range(2)]
    window.on_done(1.0, phases[0])
    window.on_done(1.0, phases[1])
    assert window.opened == 1.0 and phases == [RAMP, RAMP]
    # the time floor cannot be met: the window closes where the drain's reserve begins
    sent = [window.on_send(1.0 + i, 17 - i) for i in range(16)]
    # the 16th measured send leaves 2 prompts: the drain's reserve (a concurrency)
    assert sent.count(MEASURED) == 16 and window.short and window.closed == 16.0
    assert window.facts()["steady_window_short"] == 1.0


def test_the_window_holds_several_times_the_concurrency() -> None:
    rule = SteadyState(per_concurrency=4, min_duration_s=5)
    workload = _workload({"kind": "concurrency", "concurrency": 48}, num_requests=16)
    plan = SteadyPlan.of(workload, rule)
    assert plan.requests == 192 and plan.prompts_needed() == 2 * 48 + 192
    rated = SteadyPlan.of(_workload({"kind": "poisson", "rate": 20}, num_requests=16), rule)
    assert rated.concurrency is None and rated.requests == 100  # 20 req/s for 5 s


def test_steady_state_off_is_one_wave(server: MockOpenAI) -> None:
    result = _run(server, _workload({"kind": "concurrency", "concurrency": 4},
                                    steady_state=None))
    assert result.window is None and result.metrics["completed"] == 8
    assert len([s for s in server.requests if s.path == "/v1/completions"]) == 8
