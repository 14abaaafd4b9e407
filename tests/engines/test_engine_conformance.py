"""The engine conformance suite (autotune/testing/engine_suite.py) on the real vLLM CPU build."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from autotune.bench.step import MeasureContext, Measured
from autotune.devices import CpuSlotPool
from autotune.engines import EngineConfig, EngineLauncher, RunningEngine, create, vllm
from autotune.engines.process import free_port
from autotune.engines.vllm import engine_config
from autotune.space.model import Space
from autotune.testing.engine_suite import EngineSuite, FailingStart
from autotune.testing.processes import engine_processes
from autotune.testing.spaces import small_space
from autotune.trial import TrialRunner
from autotune.trial_state import FailureKind

pytestmark = pytest.mark.engine


def _config(tmp_path: Path, demo_model: Path, **params) -> EngineConfig:
    space = Space.model_validate(small_space(tmp_path, demo_model))
    return engine_config(space, params, is_default=not params)


class TestVllmLauncher(EngineSuite):
    runs_processes = True
    serves_http = True

    @pytest.fixture
    def launcher(self) -> EngineLauncher:
        return create("vllm")

    @pytest.fixture
    def serve_config(self, tmp_path: Path, demo_model: Path) -> EngineConfig:
        return _config(tmp_path, demo_model)

    @pytest.fixture
    def failing_start(self, tmp_path: Path, demo_model: Path) -> FailingStart:
        config = _config(tmp_path, demo_model)
        config = replace(config, flags={**config.flags, "quantization": "nosuchquant"})
        return FailingStart(config, FailureKind.UNSUPPORTED, "Unknown quantization method")


def test_a_taken_port_is_started_again_with_a_log_of_its_own(
    tmp_path: Path, demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM binds a port the launcher picked and released: another process may take it in
    between. The start fails on EADDRINUSE, is classified transient (not from the previous
    run's log in the same folder), and the trial starts the engine again on a fresh port."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "trial-0000.log").write_text("ValueError: a previous run's error\n")
    held: list[socket.socket] = []

    def taken_once() -> int:
        port = free_port()
        if not held:
            held.append(socket.create_server(("127.0.0.1", port)))
        return port

    monkeypatch.setattr(vllm, "free_port", taken_once)
    space = Space.model_validate(small_space(tmp_path, demo_model))
    runner = TrialRunner(space, create("vllm"), CpuSlotPool(slots=1), logs, measuring=_Served())
    try:
        outcome = runner.run(0, {}, is_default=True)
    finally:
        held[0].close()
    first = (logs / "trial-0000.attempt-2.log").read_text()
    assert "Address already in use" in first
    assert outcome.state == "complete", (outcome.failure, outcome.notes)
    assert any("failed transiently" in note for note in outcome.notes), outcome.notes
    assert outcome.log_path == str(logs / "trial-0000.attempt-3.log")
    assert (logs / "trial-0000.log").read_text() == "ValueError: a previous run's error\n"
    assert engine_processes() == []


class _Served:
    """A measuring step that only checks the engine serves (the suite measures loads)."""

    quality = None

    def measure(self, engine: RunningEngine, config: EngineConfig,
                trial: MeasureContext) -> Measured:
        assert vllm.healthy(engine.base_url)
        return Measured(metrics={"output_throughput": 1.0})
