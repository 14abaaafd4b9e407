"""The engine conformance suite: the EngineLauncher / RunningEngine contract (engines/base.py)
and its HTTP half, what autotune needs of a served OpenAI-compatible API.

Run it against an engine by subclassing in a test module and giving its fixtures (as optuna's
``StorageTestCase``)::

    class TestVllmLauncher(EngineSuite):
        @pytest.fixture
        def launcher(self) -> EngineLauncher: ...
        @pytest.fixture
        def serve_config(self) -> EngineConfig: ...    # a configuration that starts
        @pytest.fixture
        def failing_start(self) -> FailingStart: ...   # one whose start fails, and how

``EndpointSuite`` is the HTTP half alone (fixture ``endpoint``: a serving ``Endpoint``); an
engine that serves HTTP runs the same checks inside ``test_start_serve_stop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from autotune.bench import Endpoint, HttpLoadDriver
from autotune.devices import CpuSlotPool
from autotune.engines import EngineConfig, EngineFailure, EngineLauncher, RunningEngine
from autotune.space import WorkloadSpec
from autotune.testing.processes import engine_processes
from autotune.trial_state import FailureKind

LOAD_TOKENS = 4
LOAD_REQUESTS = 4


@dataclass(frozen=True)
class FailingStart:
    """A configuration whose start fails, the kind it must be classified as, and a fragment of
    the deciding log line."""

    config: EngineConfig
    kind: FailureKind
    line: str


def check_health(endpoint: Endpoint) -> None:
    assert httpx.get(f"{endpoint.base_url}/health", timeout=30).status_code == 200


def check_completion(endpoint: Endpoint) -> None:
    """A plain (non-streamed) completion reports the tokens it generated."""
    reply = httpx.post(
        f"{endpoint.base_url}/v1/completions",
        timeout=60,
        json={
            "model": endpoint.served_name,
            "prompt": "def main(",
            "max_tokens": 5,
        },
    )
    assert reply.status_code == 200
    assert reply.json()["usage"]["completion_tokens"] == 5


def check_streamed_load(endpoint: Endpoint) -> None:
    """The built-in load driver measures a short streamed load: prompts from the server's
    /tokenize, every request complete with every token, latencies from the stream."""
    workload = WorkloadSpec.model_validate({
        "prompts": {"kind": "random", "input_tokens": 8, "output_tokens": LOAD_TOKENS},
        "num_requests": LOAD_REQUESTS,
        "load": {"kind": "concurrency", "concurrency": 2},
        "request_timeout_s": 120,
        "steady_state": None,  # one wave of LOAD_REQUESTS: every one is counted
    })
    result = HttpLoadDriver().run(endpoint, workload, {})
    m = result.metrics
    assert m["completed"] == LOAD_REQUESTS and m["failed"] == 0, [r.error for r in result.records]
    assert m["total_output_tokens"] == LOAD_REQUESTS * LOAD_TOKENS
    assert m["total_input_tokens"] == LOAD_REQUESTS * 8
    assert m["ttft_p50_ms"] > 0 and m["e2e_p50_ms"] >= m["ttft_p50_ms"]
    for record in result.records:
        # A token may decode to no text yet (a partial character): at most one interval per
        # token after the first.
        assert record.ttft is not None and len(record.itls) <= LOAD_TOKENS - 1


class EndpointSuite:
    """The HTTP half of the contract, on a serving ``endpoint`` fixture."""

    def test_health(self, endpoint: Endpoint) -> None:
        check_health(endpoint)

    def test_completion_reports_its_tokens(self, endpoint: Endpoint) -> None:
        check_completion(endpoint)

    def test_streamed_load_is_measured(self, endpoint: Endpoint) -> None:
        check_streamed_load(endpoint)


class EngineSuite:
    """The EngineLauncher contract. ``runs_processes``: the engine is processes of its own
    (``pids`` is not empty while it runs); ``serves_http``: it serves the OpenAI API at
    ``base_url`` (the HTTP half runs on it)."""

    runs_processes: ClassVar[bool] = True
    serves_http: ClassVar[bool] = True

    def test_is_an_engine_launcher(
        self, launcher: EngineLauncher, serve_config: EngineConfig
    ) -> None:
        """The whole Protocol, the trial's half included: a start takes at least a device, and
        a failure of the configuration's own is never started again as something else."""
        assert isinstance(launcher, EngineLauncher)
        assert launcher.devices_needed(serve_config) >= 1
        devices = CpuSlotPool().acquire(1)
        for kind in FailureKind:
            if kind.caused_by_config:
                failure = EngineFailure(kind, "the configuration's own")
                assert launcher.fallback(serve_config, failure, devices) is None

    def test_argv_names_the_model(
        self, launcher: EngineLauncher, serve_config: EngineConfig
    ) -> None:
        argv = launcher.argv(serve_config)
        assert argv and all(isinstance(part, str) for part in argv)
        assert serve_config.model in argv
        assert launcher.argv(serve_config) == argv  # rendering is deterministic

    def test_start_serve_stop(
        self, launcher: EngineLauncher, serve_config: EngineConfig, tmp_path: Path
    ) -> None:
        pool = CpuSlotPool()
        devices = pool.acquire(1)
        engine = launcher.start(serve_config, devices, tmp_path / "engine.log")
        try:
            assert isinstance(engine, RunningEngine)
            assert engine.alive()
            if self.runs_processes:
                assert engine.pids()
            assert engine.startup_s > 0 and engine.version not in ("", "unknown")
            assert engine.served_name == serve_config.served_name
            assert engine.log_path == tmp_path / "engine.log"
            # What a failed benchmark on it is told: a replayed engine serves nothing.
            assert launcher.healthy(engine) == self.serves_http
            if self.serves_http:
                endpoint = Endpoint(engine.base_url, engine.served_name)
                check_completion(endpoint)
                check_health(endpoint)
                check_streamed_load(endpoint)
        finally:
            took = engine.stop()
            pool.release(devices)
        assert engine.pids() == []
        assert not engine.alive() and not launcher.healthy(engine)
        assert took >= 0
        assert engine.stop() >= 0 and not engine.alive()  # stop is idempotent
        assert (tmp_path / "engine.log").read_text()

    def test_failed_start_is_classified_and_leaves_nothing(
        self, launcher: EngineLauncher, failing_start: FailingStart, tmp_path: Path
    ) -> None:
        with pytest.raises(EngineFailure) as info:
            launcher.start(failing_start.config, CpuSlotPool().acquire(1), tmp_path / "engine.log")
        assert info.value.kind == failing_start.kind
        assert failing_start.line in info.value.line
        assert engine_processes() == []
