"""A real vLLM engine that stops (SIGSTOP) or dies (SIGKILL) mid-measurement: the measuring
step fails within about a minute and names what happened; nothing is left running.

One engine start for both: the stall first (then SIGCONT: the engine serves again), then the
kill of its API server process.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from autotune.bench.http_step import HttpMeasurement
from autotune.bench.step import MeasureContext, Measured
from autotune.devices import CpuSlotPool
from autotune.engines import RunningEngine, create
from autotune.engines.vllm import engine_config
from autotune.space.model import Space
from autotune.testing.spaces import small_space
from autotune.trial_state import FailureKind

pytestmark = pytest.mark.engine

STALL_S = 15


def _measure_in_background(
    step: HttpMeasurement, engine: RunningEngine, context: MeasureContext
) -> tuple[threading.Thread, list[Measured]]:
    found: list[Measured] = []
    thread = threading.Thread(
        target=lambda: found.append(step.measure(engine, None, context)),  # type: ignore[arg-type]
        daemon=True,
    )
    thread.start()
    return thread, found


def _generated(engine: RunningEngine) -> float:
    text = httpx.get(f"{engine.base_url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:generation_tokens_total"))


def _wait_for_load(engine: RunningEngine, tokens: float) -> None:
    """Until the engine has generated ``tokens`` more (warm-up done, the measured run under
    way)."""
    target = _generated(engine) + tokens
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _generated(engine) >= target:
            return
        time.sleep(0.2)
    raise AssertionError("the load never started")


def test_a_stopped_or_killed_engine_fails_the_measurement_with_its_cause(
    tmp_path: Path, demo_model: Path
) -> None:
    data = small_space(tmp_path, demo_model)
    # Long enough that the signals land mid-run (the run ends as soon as they are noticed).
    data["workload"].update({"num_requests": 4000, "stall_timeout_s": STALL_S})
    space = Space.model_validate(data)
    launcher = create("vllm")
    pool = CpuSlotPool(slots=1)
    devices = pool.acquire(1)
    log = tmp_path / "engine.log"
    engine = launcher.start(engine_config(space, {}, is_default=True), devices, log)
    guard, server = (int(g) for g in re.search(
        r"engine pid (\d+) in process group (\d+)", log.read_text()).groups()[::-1])
    context = MeasureContext(space=space, number=1, is_default=True, pool=pool,
                             devices=devices, log_path=log)
    step = HttpMeasurement()
    stopped: list[int] = []
    try:
        # 1. SIGSTOP every engine process (not the guard) once tokens flow.
        thread, found = _measure_in_background(step, engine, context)
        _wait_for_load(engine, 32 * 40)
        stopped = [pid for pid in engine.pids() if pid != guard]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        signalled = time.monotonic()
        thread.join(90)
        detected = time.monotonic() - signalled
        assert not thread.is_alive(), "the stall was not noticed in 90 s"
        (measured,) = found
        print(f"stall noticed after {detected:.1f} s: {measured.failure}")
        assert measured.failure is not None
        assert measured.failure.kind == FailureKind.TRANSIENT  # a timeout, the engine alive
        assert measured.failure.reason.startswith("engine stalled: no token from any of")
        assert detected < STALL_S + 15
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        stopped = []
        assert httpx.get(f"{engine.base_url}/health", timeout=30).status_code == 200

        # 2. SIGKILL the API server process mid-run.
        thread, found = _measure_in_background(step, engine, context)
        _wait_for_load(engine, 32 * 40)
        os.kill(server, signal.SIGKILL)
        signalled = time.monotonic()
        thread.join(90)
        detected = time.monotonic() - signalled
        assert not thread.is_alive()
        (measured,) = found
        print(f"death noticed after {detected:.1f} s: {measured.failure}")
        assert measured.failure is not None
        # The guard's own line names the engine's signal, whatever the teardown of the engine
        # core left behind it needed.
        assert measured.failure.reason.startswith(
            "the engine process exited during the measurement (engine killed by signal 9 "
            "(SIGKILL)): "), measured.failure.reason
        assert "tokenize" not in measured.failure.reason
        assert detected < 30 and not engine.alive()
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        engine.stop()
        pool.release(devices)
    assert engine.pids() == []
