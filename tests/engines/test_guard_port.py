"""The server that answers an engine's /health must be the engine started, not a process that
took its port between the pick and vLLM's bind (issue 24, item 11). A real stand-in engine
under the guard (tests/support/standin_engine.py) and a real HTTP server as the impostor."""

from __future__ import annotations

import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from autotune import procfs
from autotune.devices import CpuSlotPool
from autotune.engines import EngineConfig, EngineFailure, create
from autotune.engines import vllm as vllm_engine
from autotune.engines.process import foreign_listeners
from autotune.space.model import Space
from autotune.trial_state import FailureKind
from tests.support import standin_engine
from tests.trial.test_driver_trial import SPACE

STANDIN: dict[str, Any] = {
    **SPACE,
    "engine": {"command": [sys.executable, standin_engine.SCRIPT], "shutdown_grace_s": 2,
               "startup_timeout_s": 20},
}


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor():
    server = HTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _config(mode: str) -> EngineConfig:
    space = Space.model_validate(STANDIN)
    config = vllm_engine.engine_config(space, {}, is_default=True)
    return EngineConfig(**{**config.__dict__, "env": {"STANDIN_MODE": mode}})


def test_a_server_that_took_the_port_is_not_taken_for_the_engine(
    tmp_path: Path, impostor: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = impostor.server_address[1]
    monkeypatch.setattr(vllm_engine, "free_port", lambda: port)
    # The engine is still loading (never binds): only the impostor answers /health.
    with pytest.raises(EngineFailure) as info:
        server = create("vllm").start(_config("hang:loading"), CpuSlotPool().acquire(1),
                                      tmp_path / "engine.log")
        server.stop()  # not reached once fixed
    assert info.value.kind == FailureKind.TRANSIENT, info.value
    assert f"port {port}" in info.value.reason
    assert str(os.getpid()) in info.value.reason  # the impostor is this test process


def test_the_engine_that_answers_is_accepted(tmp_path: Path) -> None:
    server = create("vllm").start(_config("serve"), CpuSlotPool().acquire(1),
                                  tmp_path / "engine.log")
    try:
        port = int(server.base_url.rsplit(":", 1)[1])
        assert procfs.listening_sockets(port)
        assert foreign_listeners(port, server.pids()) == []
        assert foreign_listeners(port, []) != []  # seen from outside the tree: a listener
    finally:
        server.stop()
