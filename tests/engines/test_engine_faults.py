"""Faults around an engine start, on real processes under the guard (a stand-in engine,
tests/support/standin_engine.py, where vLLM itself is not the point): a taken port, a hang, a
stop request, a previous run's log, processes that survive teardown, lost requests."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autotune.bench.step import MeasureContext, Measured
from autotune.devices import CpuSlotPool, DeviceSet
from autotune.engines import EngineConfig, EngineFailure, RunningEngine, create
from autotune.engines import vllm as vllm_engine
from autotune.engines.failures import TeardownError
from autotune.space.model import Space
from autotune.study import recording
from autotune.testing.mock_engine import MockEngine, MockLauncher
from autotune.testing.mock_openai import Behaviour
from autotune.trial import TrialRunner
from autotune.trial_state import FailureKind
from tests.support import standin_engine
from tests.trial.test_driver_trial import SPACE

STANDIN_SPACE: dict[str, Any] = {
    **SPACE,
    "engine": {"command": [sys.executable, standin_engine.SCRIPT], "shutdown_grace_s": 2,
               "startup_timeout_s": 30},
}


class _Measured:
    """A measuring step that finds the engine serving and reports one figure."""

    quality = None

    def measure(self, engine: RunningEngine, config: EngineConfig,
                trial: MeasureContext) -> Measured:
        assert vllm_engine.healthy(engine.base_url)
        return Measured(metrics={"output_throughput": 1.0})


def _standin_runner(tmp_path: Path, mode: str = "serve", **engine: Any) -> TrialRunner:
    data = {**STANDIN_SPACE, "engine": {**STANDIN_SPACE["engine"], **engine,
                                        "env": {"STANDIN_MODE": mode}}}
    return TrialRunner(Space.model_validate(data), create("vllm"), CpuSlotPool(slots=1),
                       tmp_path / "logs", measuring=_Measured())


@pytest.fixture
def taken_ports(monkeypatch: pytest.MonkeyPatch):
    """Hold the next ``n`` ports the launcher picks, as another process grabbing them between
    the pick and vLLM's bind would."""
    held: list[socket.socket] = []
    budget = [0]
    pick = vllm_engine.free_port

    def picked() -> int:
        port = pick()
        if budget[0] > 0:
            budget[0] -= 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        return port

    monkeypatch.setattr(vllm_engine, "free_port", picked)

    def take(n: int) -> list[socket.socket]:
        budget[0] = n
        return held

    yield take
    for sock in held:
        sock.close()


def test_a_taken_port_is_started_again_on_a_fresh_one(tmp_path: Path, taken_ports) -> None:
    held = taken_ports(1)
    outcome = _standin_runner(tmp_path).run(3, {"max_num_seqs": 8}, is_default=False)
    assert len(held) == 1
    assert outcome.state == "complete", outcome.failure
    assert any("Address already in use" in note for note in outcome.notes), outcome.notes
    first = tmp_path / "logs" / "trial-0003.log"
    assert "Address already in use" in first.read_text()
    assert outcome.log_path == str(tmp_path / "logs" / "trial-0003.attempt-2.log")
    assert "serving on port" in Path(outcome.log_path).read_text()


def test_a_port_taken_at_every_start_is_a_transient_failure(
    tmp_path: Path, taken_ports
) -> None:
    runner = _standin_runner(tmp_path)
    taken_ports(5)
    outcome = runner.run(0, {"max_num_seqs": 8}, is_default=False)
    assert outcome.state == "failed" and outcome.failure is not None
    assert outcome.failure.kind == FailureKind.TRANSIENT
    assert "Address already in use" in outcome.failure.line
    result = recording.measured(runner.space, outcome)
    # Optuna FAIL: never reused for the same configuration, not learned by the crash model.
    assert result.values is None and not result.failure_kind.caused_by_config


def test_a_hang_is_transient_whatever_stray_line_its_log_holds(tmp_path: Path) -> None:
    config = _standin_runner(tmp_path).space
    engine_cfg = vllm_engine.engine_config(config, {}, is_default=True)
    engine_cfg = EngineConfig(**{**engine_cfg.__dict__, "startup_timeout_s": 2.0,
                                 "env": {"STANDIN_MODE": "hang:ValueError: a stray line"}})
    with pytest.raises(EngineFailure) as info:
        create("vllm").start(engine_cfg, CpuSlotPool().acquire(1), tmp_path / "e.log")
    assert info.value.kind == FailureKind.TRANSIENT, info.value
    assert "still runs" in info.value.reason


def test_a_stop_request_ends_an_engine_start_at_once(tmp_path: Path) -> None:
    runner = _standin_runner(tmp_path)
    engine_cfg = vllm_engine.engine_config(runner.space, {}, is_default=True)
    engine_cfg = EngineConfig(**{**engine_cfg.__dict__, "startup_timeout_s": 300.0,
                                 "env": {"STANDIN_MODE": "hang:loading"}})
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(EngineFailure) as info:
        create("vllm").start(engine_cfg, CpuSlotPool().acquire(1), tmp_path / "e.log", stop=stop)
    took = time.monotonic() - started
    assert info.value.kind == FailureKind.INTERRUPTED
    assert took < 1.0 + 5, took  # grace 2 s, and the tree is checked gone


def test_a_previous_runs_log_is_not_read_as_this_ones(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    stale = "ValueError: Unknown quantization method: nosuchquant.\n"
    (logs / "trial-0000.log").write_text(stale)
    runner = _standin_runner(tmp_path, "fail:RuntimeError: boom")
    outcome = runner.run(0, {}, is_default=True)
    assert outcome.failure is not None
    assert outcome.failure.kind == FailureKind.CRASHED, outcome.failure
    assert outcome.failure.line == "RuntimeError: boom"
    assert "nosuchquant" not in outcome.log_excerpt
    assert outcome.log_path != str(logs / "trial-0000.log")
    assert (logs / "trial-0000.log").read_text() == stale  # the earlier run's log is kept
    assert "RuntimeError: boom" in Path(outcome.log_path).read_text()


class _Stuck(MockEngine):
    """An engine whose teardown leaves a process (one in uninterruptible sleep, say)."""

    def pids(self) -> list[int]:
        return [424242]

    def stop(self) -> float:
        super().stop()
        raise TeardownError([424242])


class _StuckLauncher(MockLauncher):
    def start(self, config: EngineConfig, devices: DeviceSet, log_path: Path,
              **options: Any) -> MockEngine:
        engine = super().start(config, devices, log_path)
        engine.__class__ = _Stuck
        return engine


def test_a_process_surviving_teardown_fails_the_trial_with_both_reasons(tmp_path: Path) -> None:
    pool = CpuSlotPool(slots=1)
    space = Space.model_validate(SPACE)
    launcher = _StuckLauncher(Behaviour(status=503))
    runner = TrialRunner(space, launcher, pool, tmp_path / "logs")
    outcome = runner.run(0, {"max_num_seqs": 8}, is_default=False)
    assert outcome.state == "failed" and outcome.failure is not None
    assert outcome.failure.kind == FailureKind.BENCHMARK_FAILED  # the first reason decides
    assert "no request succeeded: HTTP 503" in outcome.failure.reason
    assert "[424242] survived teardown" in outcome.failure.reason
    assert "survived teardown" in recording.measured(space, outcome).reason
    assert list(pool.suspects()) == [0] and pool.stuck() == []
    # The study goes on: the next trial gets the (suspect) device and runs.
    runner.launcher = MockLauncher()
    assert runner.run(1, {"max_num_seqs": 16}, is_default=False).state == "complete"


def test_a_suspect_device_is_handed_out_last() -> None:
    pool = CpuSlotPool(slots=2) if len(CpuSlotPool().cores) >= 2 else None
    if pool is None:
        pytest.skip("needs two cores")
    first = pool.acquire(1)
    pool.mark_suspect(first, "left a process")
    pool.release(first)
    assert pool.acquire(1).ids != first.ids
    assert pool.acquire(1).ids == first.ids  # still usable when nothing else is free


def test_requests_lost_by_a_healthy_server_are_retried_then_transient(tmp_path: Path) -> None:
    launcher = MockLauncher(Behaviour(close_after=0))
    runner = TrialRunner(Space.model_validate(SPACE), launcher, CpuSlotPool(slots=1),
                         tmp_path / "logs")
    outcome = runner.run(0, {"max_num_seqs": 8}, is_default=False)
    assert outcome.failure is not None
    assert outcome.failure.kind == FailureKind.TRANSIENT, outcome.failure
    assert "the server stayed healthy" in outcome.failure.reason
    assert len(launcher.started) == 2
