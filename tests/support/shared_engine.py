"""One running vLLM engine with the small space's defaults, shared by the engine tests that only
need "a serving demo engine" (each engine start costs 30-45 s on 2 cores).

``SharedEngines.get`` starts it on first use; tests/conftest.py gives it to tests as the
``shared_engine`` fixture (which empties its prefix cache for each module, so each module sees
the cache as on a fresh server), puts the tests that use it next to each other and stops it
after the last of them: the other tests' "no engine process left" checks stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from autotune.bench.driver import Endpoint
from autotune.devices import CpuSlotPool, DeviceSet
from autotune.engines import EngineConfig, RunningEngine, create
from autotune.engines.vllm import engine_config
from autotune.space.model import Space
from autotune.testing.spaces import small_space

FIXTURE = "shared_engine"


@dataclass
class SharedEngine:
    """The running engine, the configuration and space it was started from, and its slot."""

    engine: RunningEngine
    config: EngineConfig
    space: Space
    pool: CpuSlotPool
    devices: DeviceSet
    log_path: Path

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.engine.base_url, self.engine.served_name)

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (vLLM's dev-mode route), so that hit rates measured next
        are those of a fresh server."""
        reply = httpx.post(f"{self.engine.base_url}/reset_prefix_cache", timeout=60)
        assert reply.status_code == 200 and reply.json()["success"], reply.text


class SharedEngines:
    """Starts the shared engine lazily, once; ``stop`` ends it (a later ``get`` starts anew)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: SharedEngine | None = None
        self.starts = 0

    def get(self, model: Path) -> SharedEngine:
        if self.running is None:
            self.starts += 1
            tmp = self.folder / f"start-{self.starts}"
            tmp.mkdir(parents=True)
            data = small_space(tmp, model)
            # /reset_prefix_cache is served in vLLM's dev mode only.
            data["engine"]["env"]["VLLM_SERVER_DEV_MODE"] = "1"
            space = Space.model_validate(data)
            config = engine_config(space, {}, is_default=True)
            pool = CpuSlotPool(slots=1)
            devices = pool.acquire(1)
            log = tmp / "engine.log"
            try:
                engine = create("vllm").start(config, devices, log)
            except BaseException:
                pool.release(devices)
                raise
            self.running = SharedEngine(engine, config, space, pool, devices, log)
        assert self.running.engine.alive(), self.running.log_path.read_text()[-3000:]
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            running, self.running = self.running, None
            try:
                running.engine.stop()
            finally:
                running.pool.release(running.devices)
