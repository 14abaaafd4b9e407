"""The mock OpenAI server behind the engine boundary: ``MockLauncher`` starts one
(autotune/testing/mock_openai.py) per engine start, in this process, so whole trials run through
``TrialRunner`` and its default measuring step in unit tests, and the engine suite runs on it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from autotune.devices import DeviceSet
from autotune.engines import EngineConfig, EngineFailure
from autotune.engines.failures import classify
from autotune.engines.vllm import VllmConventions, render_flags
from autotune.testing.mock_openai import VERSION, Behaviour, MockOpenAI


class MockEngine:
    """A RunningEngine answered by a MockOpenAI in this process (no process of its own)."""

    def __init__(self, server: MockOpenAI, argv: list[str], log_path: Path, startup_s: float):
        self.server = server
        self.base_url = server.base_url
        self.served_name = server.served_name
        self.argv = argv
        self.log_path = log_path
        self.startup_s = startup_s
        self.version = VERSION
        self._stopped_after: float | None = None

    def alive(self) -> bool:
        return self._stopped_after is None

    def failure(self) -> EngineFailure:
        return classify(self.log_path.read_text(errors="replace"), None)

    def pids(self) -> list[int]:
        return []

    def stop(self) -> float:
        if self._stopped_after is None:
            started = time.monotonic()
            self.server.stop()
            self._stopped_after = time.monotonic() - started
        return self._stopped_after


class MockLauncher(VllmConventions):
    """Implements EngineLauncher with a MockOpenAI per start, answering as ``behaviour``. It
    stands in for vLLM: flags, device count, host-fault fallback and ``/health`` as vLLM's
    launcher has them. A configuration with ``quantization: nosuchquant`` fails to start as vLLM
    does (its log line classified by autotune's own classifier)."""

    name = "mock"

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.started: list[MockEngine] = []

    def argv(self, config: EngineConfig, port: int | None = None) -> list[str]:
        argv = ["mock-openai", config.model, *render_flags(config.flags)]
        return argv + (["--port", str(port)] if port is not None else [])

    def start(
        self, config: EngineConfig, devices: DeviceSet, log_path: Path,
        *, stop: threading.Event | None = None,
    ) -> MockEngine:
        started = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if config.flags.get("quantization") == "nosuchquant":
            log_path.write_text("ValueError: Unknown quantization method: nosuchquant. Must be "
                                "one of ['awq', 'fp8'].\n")
            raise classify(log_path.read_text(), 1)
        server = MockOpenAI(config.served_name).start()
        server.behaviour = self.behaviour
        log_path.write_text(f"INFO mock OpenAI server for {config.model} on {server.base_url}\n")
        engine = MockEngine(server, self.argv(config, server.port), log_path,
                            max(time.monotonic() - started, 1e-6))
        self.started.append(engine)
        return engine
