"""A Ray study's confirm stage runs its fresh servers on the cluster: a local one-node Ray
(``ray.init``, one ``autotune_cpu_slot``) and the mock launcher (an OpenAI server inside the Ray
task, measured over HTTP there), so a whole study with its stage takes seconds, no vLLM."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from autotune.space.model import Space
from autotune.space.sections import ConfirmStageSpec

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="Ray is not installed (pip install '.[ray]'; setup.sh --dev does)"),
]

SPACE: dict[str, Any] = {
    "name": "mock",
    "model": {"path": "/nonexistent/mock-model", "max_model_len": 512},
    "engine": {"command": ["vllm", "serve"], "flags": {"dtype": "float16"}},
    "workload": {
        "prompts": {"kind": "random", "input_tokens": 8, "output_tokens": 4},
        "num_requests": 8,
        "warmup_requests": 2,
        "load": {"kind": "concurrency", "concurrency": 2},
        "request_timeout_s": 10,
        "steady_state": None,
    },
    "slos": {"e2e_p95_ms": 5000},
    "objectives": [{"metric": "output_throughput", "direction": "maximize"}],
    "measurement": {"max_repeats": 0},
    "parameters": {"max_num_seqs": {"choices": [8, 16, 32], "default": 16}},
    "search": {"sampler": "random", "seed": 0},
}


@pytest.fixture
def local_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, resources={"autotune_cpu_slot": 1}, include_dashboard=False,
             log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


def test_the_confirm_stage_of_a_ray_study_runs_on_the_cluster(local_ray, tmp_path: Path,
                                                            monkeypatch) -> None:
    from autotune.cluster import ClusterDevices, RayTrialRunner
    from autotune.cluster.ray_runner import live_nodes
    from autotune.store import open_catalog
    from autotune.study import run_study
    from autotune.testing.mock_engine import MockLauncher

    monkeypatch.setenv("AUTOTUNE_DEVICES", "cpu:0")  # the node's one core
    space = Space.model_validate({**SPACE, "search": {
        **SPACE["search"], "confirm_stage": ConfirmStageSpec(
            per_objective=0, knee=False, min_search_trials=3).model_dump()}})
    devices = ClusterDevices(live_nodes(), "cpu", "local")
    runner = RayTrialRunner(space, devices, tmp_path / "logs", launcher=MockLauncher())
    made: list[RayTrialRunner] = []
    fresh = runner.fresh

    def recording(log_dir: Path) -> RayTrialRunner:
        made.append(fresh(log_dir))
        return made[-1]

    monkeypatch.setattr(runner, "fresh", recording)
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run_study(space, url, name="mock", trials=4, trial_runner=runner)
    trials = result.report.trials
    assert {t.state for t in trials} <= {"complete", "reused"}, [t.state for t in trials]
    measured = [t.number for t in trials if t.state == "complete"]
    assert result.run.confirm_starts == 1  # the defaults on a fresh server
    [stage] = made
    assert isinstance(stage, RayTrialRunner) and stage.cluster is runner.cluster
    assert stage.log_dir == (tmp_path / "logs" / "confirm-stage-4-1").resolve()
    # it ran as a Ray task on the node: recorded there, its log written by the task
    node = live_nodes()[0].node_id
    assert stage.ran_on == {result.report.default_number: [node]}
    assert runner.ran_on == {number: [node] for number in measured}
    assert any(stage.log_dir.glob("trial-*.log"))
    runs = [r for r in open_catalog(url).fresh_runs("mock")
            if r.source.startswith("confirm stage: trial")]
    assert len(runs) == 1 and runs[0].metrics
    assert result.report.servers_of(result.report.trial(result.report.default_number)) == 2
