"""The built-in driver and ``vllm bench serve`` agree on one running CPU server: output
throughput within 3%, median TTFT and TPOT within 5%, at two concurrencies, one server start.

Every run sends fresh prompts (distinct seeds), so vLLM's prefix cache (on by default) serves
neither driver from an earlier run's prompts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.bench.crosscheck import CrossCheckLoad, cross_check
from autotune.bench.driver import Endpoint
from autotune.devices import CpuSlotPool
from autotune.engines import create
from autotune.engines.vllm import engine_config
from autotune.space import Space
from tests.support.spaces import small_space

pytestmark = pytest.mark.engine

TOLERANCE = {("output_throughput", "output_throughput"): 0.03,
             ("ttft_p50_ms", "median_ttft_ms"): 0.05,
             ("tpot_p50_ms", "median_tpot_ms"): 0.05}


def test_the_driver_agrees_with_vllm_bench_serve(tmp_path: Path, demo_model: Path) -> None:
    space = Space.model_validate(small_space(tmp_path, demo_model))
    pool = CpuSlotPool(slots=1)
    devices = pool.acquire(1)
    engine = create("vllm").start(engine_config(space, {}, is_default=True), devices,
                                  tmp_path / "engine.log")
    try:
        endpoint = Endpoint(engine.base_url, engine.served_name)
        found = [cross_check(endpoint, demo_model, CrossCheckLoad(128, 64, 160, concurrency),
                             tmp_path, rounds=4, slos=space.slos)
                 for concurrency in (4, 16)]
    finally:
        engine.stop()
        pool.release(devices)
    for comparison in found:
        print(f"\nconcurrency {comparison.load.concurrency}\n{comparison.table()}")
    for comparison in found:
        for (ours, theirs), limit in TOLERANCE.items():
            difference = comparison.difference(ours, theirs)
            assert abs(difference) <= limit, (
                f"concurrency {comparison.load.concurrency}: {ours} differs from vLLM's "
                f"{theirs} by {100 * difference:+.1f}% (limit {100 * limit:.0f}%)")
        assert all(r["completed"] == 160 for r in comparison.theirs)
        assert all(r["completed"] == 160 for r in comparison.ours)
