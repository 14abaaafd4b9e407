"""Per-token inter-token latencies are kept only while a measurement's figures are computed
from them (issue 24, item 13): a trial re-measured ``max_repeats`` times holds one run's ITLs
at a time, not every repeat's, and its figures (vLLM's ITL definitions: every interval of every
successful request) are those of the full lists."""

from __future__ import annotations

import copy

import pytest

from autotune.bench.driver import BenchResult, HttpLoadDriver
from autotune.bench.measurement import measure_once, measure_robustly
from autotune.bench.metrics import summarize
from autotune.space import WorkloadSpec
from autotune.space.measurement import MeasurementSpec
from autotune.testing.mock_openai import Behaviour, MockOpenAI

TOKENS = 40
REQUESTS = 12


def _workload() -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "prompts": {"kind": "random", "input_tokens": 8, "output_tokens": TOKENS},
        "num_requests": REQUESTS,
        "warmup_requests": 0,
        "load": {"kind": "concurrency", "concurrency": 4},
        "steady_state": None,
    })


def _itls(result: BenchResult) -> int:
    return sum(len(r.itls) for r in result.records) + sum(len(r.itls) for r in result.completed)


def test_repeats_keep_no_itls_of_earlier_runs() -> None:
    """Every run is disturbed (one request in six fails: error rate above the limit), so it is
    measured 1 + max_repeats times; when each next run starts, no earlier run holds ITLs."""
    spec = MeasurementSpec(max_repeats=2, max_error_rate=0.01)
    runs: list[BenchResult] = []
    held_at_start: list[int] = []
    with MockOpenAI() as server:
        server.script = [Behaviour(tokens=TOKENS)] * 5 + [Behaviour(status=500)]

        def run() -> BenchResult:
            held_at_start.append(sum(_itls(r) for r in runs))
            result = HttpLoadDriver().run(server.endpoint, _workload(), {})
            assert _itls(result) >= (REQUESTS - 2) * (TOKENS - 2)  # the run has them itself
            runs.append(result)
            return result

        robust = measure_robustly(run, server.base_url, spec, closed_loop=True, ours=lambda: [])
    assert len(robust.measurements) == 3, [m.disturbances for m in robust.measurements]
    assert held_at_start == [0, 0, 0]
    assert all(_itls(m.result) == 0 for m in robust.measurements)
    assert robust.metrics["itl_p50_ms"] > 0  # the figures themselves were kept


def test_figures_are_those_of_the_full_itl_lists() -> None:
    """The metrics and the windows (which place tokens in time from the ITLs) of a measurement
    equal those computed from an untouched copy of its run."""
    spec = MeasurementSpec(max_repeats=0)
    with MockOpenAI() as server:
        server.behaviour = Behaviour(tokens=TOKENS, token_delay_s=0.002)
        result = HttpLoadDriver().run(server.endpoint, _workload(), {})
    kept = copy.deepcopy(result)
    assert _itls(kept) > 0
    measured = measure_once(lambda: result, server.base_url, spec, closed_loop=True,
                            ours=lambda: [])
    assert _itls(measured.result) == 0
    assert measured.result.metrics == kept.metrics
    expected = summarize(kept.records, kept.benchmark_s, {})
    for stat in ("mean", "p50", "p90", "p95", "p99"):
        assert measured.result.metrics[f"itl_{stat}_ms"] == pytest.approx(
            expected[f"itl_{stat}_ms"])
    again = measure_once(lambda: kept, server.base_url, spec, closed_loop=True, ours=lambda: [])
    assert [w.to_dict() for w in measured.windows] == [w.to_dict() for w in again.windows]
