"""One conformance suite for every engine launcher (the EngineLauncher contract)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from autotune.devices import CpuSlotPool
from autotune.engines.base import EngineFailure, FailureKind, RunningEngine, create
from autotune.engines.vllm import engine_config
from autotune.space import Space
from tests.support.spaces import small_space

pytestmark = pytest.mark.engine

LAUNCHERS = ["vllm"]


@pytest.fixture(params=LAUNCHERS)
def launcher(request):
    return create(request.param)


def _config(tmp_path: Path, demo_model: Path, **params):
    space = Space.model_validate(small_space(tmp_path, demo_model))
    return engine_config(space, params, is_default=not params)


def test_start_serve_stop(launcher, tmp_path: Path, demo_model: Path) -> None:
    pool = CpuSlotPool()
    devices = pool.acquire(1)
    engine = launcher.start(_config(tmp_path, demo_model), devices, tmp_path / "engine.log")
    try:
        assert isinstance(engine, RunningEngine)
        assert engine.alive() and engine.pids()
        assert engine.startup_s > 0 and engine.version not in ("", "unknown")
        reply = httpx.post(
            f"{engine.base_url}/v1/completions",
            timeout=60,
            json={
                "model": engine.served_name,
                "prompt": "def main(",
                "max_tokens": 5,
            },
        )
        assert reply.status_code == 200
        assert reply.json()["usage"]["completion_tokens"] == 5
    finally:
        took = engine.stop()
        pool.release(devices)
    assert engine.pids() == []
    assert not engine.alive()
    assert took >= 0
    assert (tmp_path / "engine.log").read_text()


def test_failed_start_is_classified_and_leaves_nothing(
    launcher, tmp_path: Path, demo_model: Path
) -> None:
    config = _config(tmp_path, demo_model)
    config = type(config)(
        **{**config.__dict__, "flags": {**config.flags, "quantization": "nosuchquant"}}
    )
    with pytest.raises(EngineFailure) as info:
        launcher.start(config, CpuSlotPool().acquire(1), tmp_path / "engine.log")
    assert info.value.kind == FailureKind.UNSUPPORTED
    assert "Unknown quantization method" in info.value.line
    from tests.support.processes import engine_processes

    assert engine_processes() == []
