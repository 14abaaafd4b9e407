"""A real study on the CPU quickstart model (the session's study "e2e", tests/e2e/conftest.py):
launches, measures and tears down real vLLM servers, one forced to fail (fp8_per_tensor is
unsupported on the CPU build), and the exported configuration of one is served by vLLM."""

from __future__ import annotations

import subprocess
import sys

import httpx
import optuna
import pytest
import yaml

from autotune.engines.process import GuardedProcess, free_port
from autotune.testing.processes import engine_processes
from autotune.testing.spaces import ENGINE_ENV

pytestmark = pytest.mark.engine

AUTOTUNE = [sys.executable, "-m", "autotune.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*AUTOTUNE, *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def study(e2e_study: dict) -> dict:
    """The session's study "e2e" (tests/e2e/conftest.py), also confirmed by
    test_confirm_interval.py."""
    return e2e_study


def test_study_runs_to_the_end(study: dict) -> None:
    run = study["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Pareto front" in run.stdout
    trials = study["report"]["trials"]
    assert len(trials) == 5
    assert trials[0]["is_default"] and trials[0]["state"] == "complete"


def test_forced_failure_is_recorded_as_unsupported(study: dict) -> None:
    fp8 = study["trials"]["failure"]
    assert fp8["params"]["quantization"] == "fp8_tensor"
    assert fp8["state"] == "failed"
    assert fp8["failure_kind"] == "unsupported"
    assert "static_scaled_fp8_quant" in fp8["failure_line"]
    assert fp8["feasible"] is False
    # Optuna sees it as infeasible (constraints violated), not as a skipped FAIL.
    handle = optuna.load_study(study_name="e2e", storage=study["url"])
    frozen = handle.trials[fp8["number"]]
    assert frozen.state == optuna.trial.TrialState.COMPLETE
    assert all(v > 0 for v in frozen.constraints.values())


def test_completed_trials_have_metrics_and_timings(study: dict) -> None:
    complete = [t for t in study["report"]["trials"] if t["state"] == "complete"]
    assert len(complete) == 4  # the defaults, ngram, int8 and fp8
    for t in complete:
        m = t["metrics"]
        # a steady window at concurrency 8: at least 4 x 8 requests (more than num_requests 24)
        assert m["completed"] == m["steady_window_requests"] >= 32 and m["output_throughput"] > 0
        for key in ("ttft_p95_ms", "tpot_p99_ms", "itl_p50_ms", "e2e_p95_ms", "request_goodput"):
            assert key in m
        assert t["timings"]["startup_s"] > 0 and t["timings"]["benchmark_s"] > 0
        assert t["timings"]["teardown_s"] is not None
        assert t["engine_version"] == "0.32.0"
        assert "--port" in t["engine_command"]


def test_pareto_front_is_non_empty_and_feasible(study: dict) -> None:
    report = study["report"]
    assert report["pareto_front"]
    by_number = {t["number"]: t for t in report["trials"]}
    assert all(by_number[n]["feasible"] for n in report["pareto_front"])


def test_no_engine_process_left(study: dict) -> None:
    assert engine_processes() == []


def test_exported_yaml_is_served_by_vllm(study: dict) -> None:
    ngram = study["trials"]["ngram"]
    assert ngram["state"] == "complete", ngram["failure_reason"]
    out = study["tmp"] / "best.yaml"
    exported = run_cli(
        "export", "e2e", "--storage", study["url"], "--trial", str(ngram["number"]), "-o", str(out)
    )
    assert exported.returncode == 0, exported.stderr
    config = yaml.safe_load(out.read_text())
    assert config["speculative-config"]["method"] == "ngram"
    assert config["speculative-config"]["num_speculative_tokens"] == 3
    assert "# equivalent command line:" in out.read_text()
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--config",
        str(out),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # The tests' engine environment (autotune/testing/spaces.py: a faster start, the same server).
    server = GuardedProcess(argv, dict(ENGINE_ENV), study["tmp"] / "export.log", 5)
    try:
        import time

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and server.alive():
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        assert server.alive(), server.read_log()[-3000:]
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/completions",
            timeout=60,
            json={"model": config["served-model-name"], "prompt": "import os", "max_tokens": 4},
        )
        assert reply.status_code == 200
        assert reply.json()["usage"]["completion_tokens"] == 4
        assert "method='ngram'" in server.read_log() and "num_spec_tokens=3" in server.read_log()
    finally:
        server.stop()
    assert engine_processes() == []
