"""Search spaces for tests that start a real engine: the CPU fixed-load space
(search_spaces/cpu-fixed-load.yaml), made short."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from autotune.bench import Endpoint

ROOT = Path(__file__).resolve().parents[2]
FIXED_LOAD = ROOT / "search_spaces" / "cpu-fixed-load.yaml"
ENGINE_FLAGS = {"dtype": "float16", "enforce_eager": True, "kv_cache_memory_bytes": "1G"}
# The uniprocess executor (no third process importing torch and vLLM again) and no usage-stats
# thread: about 15 s less per engine start on 2 cores. Pinned parallel slots (several trials at
# once) switch the multiprocess executor back on themselves (autotune/devices/cpu.py).
ENGINE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
              "VLLM_NO_USAGE_STATS": "1"}


def small_space(tmp_path: Path, model: Path, **overrides) -> dict:
    """The fixed-load CPU space with a short workload, for tests with a real engine."""
    data = yaml.safe_load(FIXED_LOAD.read_text())
    data["model"]["path"] = str(model)
    data["model"]["build_demo"] = False  # the demo_model fixture built it already
    data["engine"]["shutdown_grace_s"] = 5
    # The engine settings the tests are written for, whatever the shipped quickstart holds.
    data["engine"]["flags"] = dict(ENGINE_FLAGS)
    data["engine"]["env"] = dict(ENGINE_ENV)
    data["workload"].update(
        {
            "prompts": {"kind": "random", "input_tokens": 64, "output_tokens": 32},
            "num_requests": 24,
            "warmup_requests": 4,
            "load": {"kind": "concurrency", "concurrency": 8},
        }
    )
    data["slos"] = {"ttft_p95_ms": 20000, "e2e_p95_ms": 60000}
    # Measured once: tests of other features must not depend on how busy the host is
    # (tests/bench/test_disturbance.py covers re-measuring).
    data["measurement"] = {"max_repeats": 0}
    data.pop("quality", None)  # tests/quality covers the probe; others need not pay for it
    for key, value in overrides.items():
        data[key] = value
    return data


def write_space(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextmanager
def serving_defaults(tmp_path: Path, model: Path) -> Iterator[Endpoint]:
    """A real vLLM engine with the small space's defaults on one CPU slot, serving, until the
    block ends (then stopped and its slot released)."""
    from autotune.devices import CpuSlotPool
    from autotune.engines import create
    from autotune.engines.vllm import engine_config
    from autotune.space import Space

    space = Space.model_validate(small_space(tmp_path, model))
    pool = CpuSlotPool(slots=1)
    devices = pool.acquire(1)
    engine = create("vllm").start(engine_config(space, {}, is_default=True), devices,
                                  tmp_path / "engine.log")
    try:
        yield Endpoint(engine.base_url, engine.served_name)
    finally:
        engine.stop()
        pool.release(devices)
