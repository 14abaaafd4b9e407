"""The guard's promises with the real vLLM CPU server (issue 24, items 11 and 13): the server
that answers is the engine started (its listening socket is in the engine's process tree), its
output reaches the log through the guard, and an operator's SIGTERM to the engine's process
group is a transient fault named SIGTERM, not a crash (vLLM's API server ends cleanly on
SIGTERM, with exit status 0)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from autotune.devices import CpuSlotPool
from autotune.engines import create
from autotune.engines.process import foreign_listeners
from autotune.engines.vllm import VllmServer, engine_config
from autotune.space.model import Space
from autotune.testing.spaces import small_space
from autotune.trial_state import FailureKind

pytestmark = pytest.mark.engine


def test_an_operators_sigterm_to_a_vllm_engine_is_transient(
    tmp_path: Path, demo_model: Path
) -> None:
    space = Space.model_validate(small_space(tmp_path, demo_model))
    config = engine_config(space, {}, is_default=True)
    server = create("vllm").start(config, CpuSlotPool().acquire(1), tmp_path / "engine.log")
    assert isinstance(server, VllmServer)
    try:
        port = int(server.base_url.rsplit(":", 1)[1])
        assert foreign_listeners(port, server.pids()) == []
        assert foreign_listeners(port, []) != []  # vLLM's own socket, seen from outside
        guard = server._process.pid  # noqa: SLF001 - the process group to signal
        os.killpg(guard, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server.alive()
        failure = server.failure()
        log = server._process.read_log()  # noqa: SLF001
        assert "Application startup complete" in log or "Started server process" in log, log
        assert failure.kind == FailureKind.TRANSIENT, (failure, log[-3000:])
        assert "SIGTERM" in failure.reason
    finally:
        server.stop()
