"""The memory-fit estimate against the KV-cache size a real vLLM CPU engine logs at start.

One start, with the budget vLLM derives itself (no explicit KV size: node memory ×
gpu_memory_utilization minus the worker's resident memory), the case where the estimate is
not exact by construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.devices import CpuSlotPool
from autotune.engines.vllm import VllmLauncher, engine_config
from autotune.model import memory_fit
from autotune.space.model import load_space
from autotune.testing.spaces import small_space, write_space
from autotune.trial import TrialRunner

pytestmark = pytest.mark.engine

# Measured error of the derived-budget estimate on this host class (docs/memory-fit.md)
# plus room for other processes' memory moving the worker's resident size.
TOLERANCE = 0.10


def test_estimate_matches_the_logged_kv_cache_size(tmp_path: Path, demo_model: Path) -> None:
    data = small_space(tmp_path, demo_model)
    flags = data["engine"]["flags"]
    flags.pop("kv_cache_memory_bytes")
    flags["gpu_memory_utilization"] = 0.25
    space = load_space(write_space(tmp_path, data))
    pool = CpuSlotPool(slots=1)
    launcher = VllmLauncher()
    runner = TrialRunner(space, launcher, pool, tmp_path / "logs")
    config = engine_config(space, {}, is_default=True)
    devices = pool.acquire(1)
    try:
        predicted = runner.memory_estimate(config, devices)
        engine = launcher.start(config, devices, tmp_path / "engine.log")
        engine.stop()
    finally:
        pool.release(devices)
    assert predicted is not None and not predicted.explicit_kv and predicted.misfit() is None
    logged = memory_fit.LoggedMemory.parse((tmp_path / "engine.log").read_text())
    assert logged.kv_tokens is not None
    assert predicted.kv_tokens / logged.kv_tokens - 1 == pytest.approx(0, abs=TOLERANCE)
