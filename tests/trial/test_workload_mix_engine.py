"""A weighted mix of two workloads measured in one trial on one real vLLM CPU server: both
workloads' figures under their names, the aggregates, and the constraints of each workload's
own SLOs, as the trial records them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autotune.devices import CpuSlotPool
from autotune.engines import create
from autotune.space.model import Space
from autotune.space.workload_mix import ATTAINMENT_WEIGHTED, ATTAINMENT_WORST
from autotune.study.recording import measured
from autotune.testing.spaces import small_space
from autotune.trial import TrialRunner

pytestmark = pytest.mark.engine


class CountingLauncher:
    """The real vLLM launcher, counting its starts."""

    def __init__(self) -> None:
        self.inner = create("vllm")
        self.starts = 0

    def start(self, *args: Any, **kwargs: Any) -> Any:
        self.starts += 1
        return self.inner.start(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _workload(input_tokens: int, output_tokens: int, requests: int, concurrency: int
              ) -> dict[str, Any]:
    return {"prompts": {"kind": "random", "input_tokens": input_tokens,
                        "output_tokens": output_tokens},
            "num_requests": requests, "warmup_requests": 2,
            "load": {"kind": "concurrency", "concurrency": concurrency},
            "steady_state": None}  # one wave each: the counts below are per workload


def test_a_mix_is_measured_workload_by_workload_on_one_server(
    tmp_path: Path, demo_model: Path
) -> None:
    data = small_space(tmp_path, demo_model)
    del data["workload"], data["slos"]
    data["workloads"] = {
        # SLOs that hold on any host, and one that no request can meet: the attainment
        # figures are then known without depending on the host's speed.
        "chat": {"weight": 7, "workload": _workload(64, 16, 16, 4),
                 "slos": {"ttft_p95_ms": 30000, "e2e_p95_ms": 60000}},
        "rag": {"weight": 3, "workload": _workload(256, 8, 8, 2),
                "slos": {"ttft_p95_ms": 0.001}},
    }
    data["aggregate"] = {"min_slo_attainment": 0.5}
    data["objectives"] = [{"metric": "request_goodput"}, {"metric": "chat.ttft_p95_ms"}]
    # One small capacity search, on the primary (first) workload: it runs once per trial.
    data["capacity"] = {"start_rate": 4, "max_rate": 8, "bisection_steps": 0,
                        "requests_per_point": 8, "max_concurrency": 8}
    space = Space.model_validate(data)
    launcher = CountingLauncher()
    runner = TrialRunner(space, launcher, CpuSlotPool(slots=1), tmp_path / "logs")
    phases: list[str] = []
    outcome = runner.run(1, {}, is_default=True, on_phase=phases.append)
    assert outcome.state == "complete", outcome.failure
    assert launcher.starts == 1
    assert [p for p in phases if p.startswith("benchmarking")] == [
        "benchmarking chat", "benchmarking rag"]
    assert phases.count("searching SLO capacity") == 1
    m = outcome.metrics
    print({k: round(v, 3) for k, v in sorted(m.items()) if "." in k or "slo_" in k
           or k in ("request_goodput", "output_throughput", "ttft_p95_ms")})

    # Each workload's own figures, under its name.
    assert m["chat.completed"] == 16 and m["rag.completed"] == 8
    assert m["chat.total_output_tokens"] == 16 * 16 and m["rag.total_output_tokens"] == 8 * 8
    assert m["chat.total_input_tokens"] == 16 * 64 and m["rag.total_input_tokens"] == 8 * 256
    assert m["chat.goodput_fraction"] == 1.0 and m["rag.goodput_fraction"] == 0.0
    assert m["rag.request_goodput"] == 0.0 < m["chat.request_goodput"]
    for name in ("chat", "rag"):
        assert m[f"{name}.ttft_p95_ms"] > 0 and m[f"{name}.output_throughput"] > 0
        assert m[f"{name}.measurement_runs"] == 1
        # Each run had prompts of its own: vLLM's prefix cache found next to nothing.
        assert m[f"{name}.prefix_cache_hit_rate"] < 0.25
    # The aggregates.
    assert m[ATTAINMENT_WORST] == 0.0
    assert m[ATTAINMENT_WEIGHTED] == pytest.approx(0.7)
    assert m["request_goodput"] == pytest.approx(0.7 * m["chat.request_goodput"])
    assert m["output_throughput"] == pytest.approx(
        0.7 * m["chat.output_throughput"] + 0.3 * m["rag.output_throughput"])
    assert m["ttft_p95_ms"] == max(m["chat.ttft_p95_ms"], m["rag.ttft_p95_ms"])
    assert m["completed"] == 24 and m["error_rate"] == 0.0
    assert m["capacity_load_points"] >= 1  # on the chat workload, once
    assert [x["workload"] for x in outcome.measurements] == ["chat", "rag"]

    # As the study records the trial: the objectives and each workload's own constraints.
    result = measured(space, outcome)
    assert result.values == [pytest.approx(m["request_goodput"]), m["chat.ttft_p95_ms"]]
    assert set(result.constraints) == {"chat.ttft_p95_ms", "chat.e2e_p95_ms", "rag.ttft_p95_ms",
                                       "error_rate", ATTAINMENT_WORST}
    assert result.constraints["chat.ttft_p95_ms"] < 0 < result.constraints["rag.ttft_p95_ms"]
    assert result.constraints[ATTAINMENT_WORST] == pytest.approx(0.5)
    assert not result.feasible
    assert result.columns["metrics"]["rag.completed"] == 8
