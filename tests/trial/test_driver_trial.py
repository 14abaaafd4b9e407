"""Whole trials through TrialRunner and its measuring step, on the mock OpenAI server: the
engine suite's HTTP half, the default HttpMeasurement, and an injected step."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autotune.bench.driver import Endpoint
from autotune.bench.http_step import HttpMeasurement
from autotune.bench.step import MeasureContext, Measured, MeasuringStep
from autotune.devices import CpuSlotPool, DeviceSet
from autotune.engines import EngineConfig, EngineFailure, EngineLauncher, RunningEngine
from autotune.engines.vllm import engine_config
from autotune.metrics import COST_METRIC
from autotune.space.model import Space
from autotune.testing.engine_suite import EndpointSuite, EngineSuite, FailingStart
from autotune.testing.mock_engine import MockEngine, MockLauncher
from autotune.testing.mock_openai import Behaviour, MockOpenAI
from autotune.trial import TrialRunner
from autotune.trial_state import FailureKind

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
        "steady_state": None,  # one wave: these count each request
    },
    "slos": {"e2e_p95_ms": 5000},
    "objectives": [{"metric": "output_throughput", "direction": "maximize"}],
    "measurement": {"max_repeats": 0},
    "parameters": {"max_num_seqs": {"choices": [8, 16], "default": 16}},
}


def _space(**update: Any) -> Space:
    return Space.model_validate({**SPACE, **update})


@pytest.fixture(scope="module")
def mock_endpoint() -> Iterator[Endpoint]:
    with MockOpenAI() as server:
        yield server.endpoint


class TestMockEndpointConforms(EndpointSuite):
    """The HTTP half of the engine suite on the mock server."""

    @pytest.fixture
    def endpoint(self, mock_endpoint: Endpoint) -> Endpoint:
        return mock_endpoint


class TestMockLauncherConforms(EngineSuite):
    """The whole engine suite on the mock launcher (an in-process server, no process)."""

    runs_processes = False
    serves_http = True

    @pytest.fixture
    def launcher(self) -> EngineLauncher:
        return MockLauncher()

    @pytest.fixture
    def serve_config(self) -> EngineConfig:
        return engine_config(_space(), {}, is_default=True)

    @pytest.fixture
    def failing_start(self) -> FailingStart:
        config = engine_config(_space(), {}, is_default=True)
        config = EngineConfig(**{**config.__dict__,
                                 "flags": {**config.flags, "quantization": "nosuchquant"}})
        return FailingStart(config, FailureKind.UNSUPPORTED, "Unknown quantization method")


def _runner(tmp_path: Path, launcher: MockLauncher, space: Space | None = None,
            **kwargs: Any) -> TrialRunner:
    return TrialRunner(space or _space(), launcher, CpuSlotPool(slots=1), tmp_path / "logs",
                       **kwargs)


def test_a_trial_is_measured_over_http(tmp_path: Path) -> None:
    launcher = MockLauncher(Behaviour(token_delay_s=0.002))
    runner = _runner(tmp_path, launcher)
    assert isinstance(runner.measuring, HttpMeasurement) and runner.quality is None
    phases: list[str] = []
    outcome = runner.run(1, {"max_num_seqs": 8}, is_default=False, on_phase=phases.append)
    assert outcome.state == "complete", outcome.failure
    assert phases == ["waiting for devices", "starting engine", "benchmarking", "tearing down"]
    m = outcome.metrics
    assert m["completed"] == 8 and m["failed"] == 0 and m["total_output_tokens"] == 32
    assert m["ttft_p50_ms"] > 0 and m["measurement_runs"] == 1
    assert "output_throughput_ci_low" in m  # robust measurement ran
    assert set(outcome.timings) >= {"startup_s", "warmup_s", "benchmark_s", "teardown_s"}
    # A busy host (other tests, other processes) may disturb it: then the note says so.
    assert outcome.disturbed == bool(outcome.measurements[-1]["disturbances"])
    assert outcome.disturbed == any(n.startswith("measured under disturbance") for n in
                                    outcome.notes)
    assert outcome.argv[:2] == ["mock-openai", "/nonexistent/mock-model"]
    assert "--max-num-seqs" in outcome.argv and "--port" in outcome.argv
    assert outcome.engine_version == "0.0.mock" and outcome.devices
    (engine,) = launcher.started
    assert not engine.alive()  # torn down
    sent = [s for s in engine.server.requests if s.path == "/v1/completions"]
    assert len(sent) == 2 + 8  # the warm-up requests ran too
    result = json.loads((tmp_path / "logs" / "trial-0001.result.json").read_text())
    assert result["completed"] == 8 and result["median_ttft_ms"] == m["ttft_p50_ms"]


def test_no_request_served_is_a_benchmark_failure_with_the_first_error(tmp_path: Path) -> None:
    runner = _runner(tmp_path, MockLauncher(Behaviour(status=503)))
    outcome = runner.run(1, {"max_num_seqs": 8}, is_default=False)
    assert outcome.state == "failed" and outcome.failure is not None
    assert outcome.failure.kind == FailureKind.BENCHMARK_FAILED
    assert outcome.failure.reason.startswith("no request succeeded: HTTP 503")
    assert outcome.metrics["completed"] == 0 and outcome.metrics["failed"] == 8
    assert "mock OpenAI server" in outcome.log_excerpt  # the engine's log, as it was
    assert not (tmp_path / "logs" / "trial-0001.result.json").exists()


def test_an_error_chunk_in_every_stream_fails_the_trial(tmp_path: Path) -> None:
    runner = _runner(tmp_path, MockLauncher(Behaviour(error_after=1)))
    outcome = runner.run(1, {"max_num_seqs": 8}, is_default=False)
    assert outcome.failure is not None and outcome.failure.kind == FailureKind.BENCHMARK_FAILED
    assert "mock error mid-stream" in outcome.failure.reason


def test_a_failed_start_is_classified_without_measuring(tmp_path: Path) -> None:
    launcher = MockLauncher()
    space = _space(engine={**SPACE["engine"], "flags": {"quantization": "nosuchquant"}})
    outcome = _runner(tmp_path, launcher, space).run(0, {}, is_default=True)
    assert outcome.state == "failed" and outcome.failure is not None
    assert outcome.failure.kind == FailureKind.UNSUPPORTED and launcher.started == []
    assert "Unknown quantization method" in outcome.log_excerpt


def test_capacity_and_cost_are_measured_on_the_same_engine(tmp_path: Path) -> None:
    space = _space(capacity={"start_rate": 50, "max_rate": 100, "bisection_steps": 0,
                             "requests_per_point": 4},
                   cost={"device_hour_usd": 2.0})
    launcher = MockLauncher()
    phases: list[str] = []
    outcome = _runner(tmp_path, launcher, space).run(1, {"max_num_seqs": 8}, is_default=False,
                                                     on_phase=phases.append)
    assert outcome.state == "complete", outcome.failure
    assert "searching SLO capacity" in phases and len(launcher.started) == 1
    assert outcome.metrics["capacity_rps"] == 100  # every point held: up to max_rate
    assert outcome.metrics["capacity_load_points"] == 2
    assert outcome.timings["capacity_s"] > 0
    assert outcome.metrics[COST_METRIC] > 0


def test_capacity_counts_the_time_requests_queue_behind_the_concurrency_cap(
    tmp_path: Path,
) -> None:
    """Above what one slot serves, requests wait at the client's gate: the SLO a user sees
    includes that wait, so the capacity stops where the queue grows (each answer alone takes
    ~0.1 s, far inside the SLO, at every rate)."""
    space = _space(capacity={"start_rate": 4, "max_rate": 64, "bisection_steps": 0,
                             "requests_per_point": 16, "max_concurrency": 1},
                   slos={"e2e_p95_ms": 400})
    outcome = _runner(tmp_path, MockLauncher(Behaviour(token_delay_s=0.03)), space).run(
        1, {"max_num_seqs": 8}, is_default=False)
    assert outcome.state == "complete", outcome.failure
    assert outcome.metrics["e2e_p95_ms"] < 400
    assert 4 <= outcome.metrics["capacity_rps"] <= 16


def _stalling(**workload: Any) -> Space:
    return _space(workload={**SPACE["workload"], "stall_timeout_s": 0.5, **workload})


def test_a_stalled_engine_fails_the_trial_as_stalled(tmp_path: Path) -> None:
    """Tokens stop coming (a SIGSTOPped engine): failed within the stall timeout, not after
    the request timeout, with the stall as its reason, and the engine torn down."""
    launcher = MockLauncher(Behaviour(token_delay_s=0.01, stall_after=1, stall_s=4))
    started = time.monotonic()
    outcome = _runner(tmp_path, launcher, _stalling(request_timeout_s=120)).run(
        1, {"max_num_seqs": 8}, is_default=False)
    assert time.monotonic() - started < 20
    assert outcome.state == "failed" and outcome.failure is not None
    # A timeout while the engine still runs is transient: started again once (a fresh engine),
    # then recorded transient (not reused, not learned by the crash model).
    assert outcome.failure.kind == FailureKind.TRANSIENT
    assert outcome.failure.reason.startswith("engine stalled: no token from any of 2 requests")
    assert len(launcher.started) == 2
    assert outcome.notes[0].startswith("start 1 failed transiently (engine stalled: no token")
    assert not any(engine.alive() for engine in launcher.started)


def test_a_health_check_that_never_answers_is_a_stall(tmp_path: Path) -> None:
    launcher = MockLauncher(Behaviour(health_delay_s=2))
    outcome = _runner(tmp_path, launcher, _stalling()).run(1, {"max_num_seqs": 8},
                                                           is_default=False)
    assert outcome.failure is not None and outcome.failure.kind == FailureKind.TRANSIENT
    assert outcome.failure.reason == "engine stalled: /health did not answer within 0.5 s"
    assert not [s for s in launcher.started[0].server.requests if s.path != "/tokenize"]


class _DeadOnArrival(MockLauncher):
    """Its engine dies (SIGKILL) right after it became healthy."""

    def start(self, config: EngineConfig, devices: DeviceSet, log_path: Path, *,
              stop: Any = None) -> MockEngine:
        engine = super().start(config, devices, log_path)
        engine.stop()
        with log_path.open("a") as log:
            log.write("RuntimeError: the worker went away\n"
                      "[autotune-guard] engine killed by signal 9 (SIGKILL)\n")
        return engine


def test_an_engine_that_died_is_named_not_the_request_it_broke(tmp_path: Path) -> None:
    launcher = _DeadOnArrival()
    outcome = _runner(tmp_path, launcher).run(1, {"max_num_seqs": 8}, is_default=False)
    assert outcome.failure is not None
    assert "cannot tokenize" not in outcome.failure.reason
    # Killed by a signal autotune did not send (the guard's line says which): a transient
    # fault of each start, never a verdict (issue 24, item 1).
    assert outcome.failure.kind == FailureKind.TRANSIENT
    assert outcome.failure.reason == (
        "the engine process exited during the measurement (engine killed by signal 9 "
        "(SIGKILL)): engine killed by SIGKILL, which autotune did not send (the kernel's "
        "out-of-memory killer, or an operator); the log's last error: RuntimeError: the worker "
        "went away")
    assert len(launcher.started) == 2


class _Step:
    """An injected measuring step that records what it was given."""

    quality = None
    front = None

    def __init__(self, measured: Measured) -> None:
        self.measured = measured
        self.seen: list[tuple[str, str, MeasureContext]] = []

    def measure(
        self, engine: RunningEngine, config: EngineConfig, trial: MeasureContext
    ) -> Measured:
        assert engine.alive()
        self.seen.append((engine.base_url, config.model, trial))
        return self.measured


def test_an_injected_step_decides_the_outcome(tmp_path: Path) -> None:
    step = _Step(Measured(metrics={"output_throughput": 7.0}, timings={"benchmark_s": 1.5},
                          notes=["stepped"], disturbed=True))
    assert isinstance(step, MeasuringStep)
    launcher = MockLauncher()
    runner = _runner(tmp_path, launcher, measuring=step)
    outcome = runner.run(5, {"max_num_seqs": 8}, is_default=False)
    assert outcome.state == "complete"
    assert outcome.metrics == {"output_throughput": 7.0} and outcome.notes == ["stepped"]
    assert outcome.disturbed and outcome.timings["benchmark_s"] == 1.5
    ((url, model, trial),) = step.seen
    assert url == launcher.started[0].base_url and model == "/nonexistent/mock-model"
    assert trial.number == 5 and not trial.is_default and trial.space is runner.space
    assert trial.log_path == tmp_path / "logs" / "trial-0005.log"
    assert not launcher.started[0].alive()

    failing = _Step(Measured(metrics={"completed": 0.0},
                             failure=EngineFailure(FailureKind.BENCHMARK_FAILED, "step says no")))
    outcome = _runner(tmp_path, MockLauncher(), measuring=failing).run(6, {}, is_default=True)
    assert outcome.state == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "step says no" and outcome.metrics == {"completed": 0.0}
    assert failing.seen[0][2].is_default


class _FailsOnceTransiently(_Step):
    """The first start's measurement fails transiently (with a note of its own); the second
    measures."""

    def measure(
        self, engine: RunningEngine, config: EngineConfig, trial: MeasureContext
    ) -> Measured:
        super().measure(engine, config, trial)
        if len(self.seen) == 1:
            return Measured(notes=["measured under disturbance: error rate 100.0% > 1.0%"],
                            disturbed=True,
                            failure=EngineFailure(FailureKind.TRANSIENT, "engine stalled"))
        return self.measured


def test_a_transient_starts_notes_do_not_outlive_it(tmp_path: Path) -> None:
    step = _FailsOnceTransiently(Measured(metrics={"output_throughput": 7.0}))
    outcome = _runner(tmp_path, MockLauncher(), measuring=step).run(1, {}, is_default=False)
    assert outcome.state == "complete" and not outcome.disturbed
    assert outcome.notes == ["start 1 failed transiently (engine stalled); started again"]


class _SigillInBf16(MockLauncher):
    """A host whose CPU cannot run the bf16 kernels: a start in bf16 (or ``auto``) dies of
    SIGILL, one in float16 serves."""

    def start(self, config: EngineConfig, devices: DeviceSet, log_path: Path, *,
              stop: Any = None) -> MockEngine:
        if config.flags.get("dtype", "auto") in ("auto", "bfloat16"):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text("Fatal Python error: Illegal instruction\n")
            raise EngineFailure(FailureKind.HOST_FAULT, "engine killed by SIGILL (host CPU fault)")
        return super().start(config, devices, log_path)


def test_a_host_fault_in_bf16_is_measured_in_the_launchers_fallback(tmp_path: Path) -> None:
    """The trial asks the launcher what to start after a host fault (vLLM's: float16 on a
    CPU), and measures that instead of losing the trial."""
    step = _Step(Measured(metrics={"output_throughput": 7.0}))
    launcher = _SigillInBf16()
    runner = TrialRunner(_space(engine={"command": ["vllm", "serve"],
                                        "flags": {"dtype": "bfloat16"}}),
                         launcher, CpuSlotPool(slots=1), tmp_path / "logs", measuring=step)
    outcome = runner.run(1, {"max_num_seqs": 8}, is_default=False)
    assert outcome.state == "complete" and outcome.flags["dtype"] == "float16"
    assert outcome.notes == ["host fault in bfloat16: re-ran with dtype float16"]
    assert len(launcher.started) == 1 and len(step.seen) == 1
    assert outcome.log_path.endswith("trial-0001.attempt-2.log")


def test_a_host_fault_in_float16_stands(tmp_path: Path) -> None:
    """No fallback for a start that was not in bf16: the host fault is the trial's verdict."""
    launcher = _SigillInBf16()
    devices = CpuSlotPool(slots=1).acquire(1)
    config = launcher.engine_config(_space(), {"max_num_seqs": 8}, is_default=False)
    failure = EngineFailure(FailureKind.HOST_FAULT, "SIGILL")
    assert config.flags["dtype"] == "float16"
    assert launcher.fallback(config, failure, devices) is None
    bf16 = replace(config, flags={**config.flags, "dtype": "auto"})
    assert launcher.fallback(bf16, EngineFailure(FailureKind.CRASHED, "x"), devices) is None
    fallback = launcher.fallback(bf16, failure, devices)
    assert fallback is not None and fallback.config.flags["dtype"] == "float16"
    assert fallback.config.flags["max_num_seqs"] == 8
    parallel = replace(config, flags={"tensor_parallel_size": 2, "pipeline_parallel_size": 3})
    assert launcher.devices_needed(parallel) == 6 and launcher.devices_needed(config) == 1
