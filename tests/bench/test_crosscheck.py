"""The built-in driver against vLLM's own benchmark (``vllm bench serve``) on one real vLLM CPU
server, one start, the server on its own cores and both clients on the others: output
throughput within 3%, median TTFT and TPOT within 5%, at concurrency 4 and 16 (issue 13 item
9; method: autotune/bench/crosscheck.py, docs/measurement.md). Each difference is the median
over the rounds of a round's two back-to-back runs, which send the same request lengths.

The server runs its engine core in a process of its own. With the engine core in the API
server's process, both runs of this test on 2026-12-01 failed one concurrency (our driver
8-18% behind on throughput through every round of it); with its own process three runs of
four passed at both concurrencies, and at 4 ours came out 2.9-3.6% behind on throughput in
three. That margin is too thin for CI's noisy hosts: the test is not in the default run
(marker ``crosscheck``; ``pytest -m crosscheck`` runs it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotune.bench.crosscheck import (
    ROWS,
    Comparison,
    CrossCheckLoad,
    cross_check,
    isolate,
    split_cores,
)
from autotune.bench.driver import Endpoint
from autotune.devices import CpuSlotPool
from autotune.engines import create
from autotune.engines.vllm import engine_config
from autotune.space.model import Space
from autotune.testing.spaces import small_space

pytestmark = [pytest.mark.engine, pytest.mark.crosscheck]

LIMITS = {"output_throughput": 0.03, "ttft_p50_ms": 0.05, "tpot_p50_ms": 0.05}
INPUT_LEN, OUTPUT_LEN, RANGE_RATIO, ROUNDS = 128, 64, 0.5, 4
REQUESTS = {4: 48, 16: 96}  # about 10 s a run on the demo model


@pytest.fixture(scope="module")
def isolated_server(tmp_path_factory: pytest.TempPathFactory,
                    demo_model: Path) -> Iterator[tuple[Endpoint, Space]]:
    """The demo engine on its own cores, this process (both clients) on the others."""
    tmp = tmp_path_factory.mktemp("crosscheck")
    data = small_space(tmp, demo_model)
    # The engine core in a process of its own: in the API server's process (the tests' usual
    # setting) the two share one GIL on the one server core, and our driver fell behind in
    # phases (docs/measurement.md).
    data["engine"]["env"]["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    space = Space.model_validate(data)
    host = sorted(os.sched_getaffinity(0))
    server_cores, client_cores = split_cores(host)
    devices = CpuSlotPool(server_cores).acquire(1)
    engine = create("vllm").start(engine_config(space, {}, is_default=True), devices,
                                  tmp / "engine.log")
    try:
        isolate(engine.pids(), server_cores, client_cores)
        yield Endpoint(engine.base_url, engine.served_name), space
    finally:
        os.sched_setaffinity(0, host)
        engine.stop()


@pytest.mark.parametrize("concurrency", sorted(REQUESTS))
def test_both_drivers_agree(isolated_server: tuple[Endpoint, Space], demo_model: Path,
                            tmp_path: Path, concurrency: int) -> None:
    endpoint, space = isolated_server
    load = CrossCheckLoad(INPUT_LEN, OUTPUT_LEN, REQUESTS[concurrency], concurrency,
                          range_ratio=RANGE_RATIO)
    found: Comparison = cross_check(endpoint, demo_model, load, tmp_path, rounds=ROUNDS,
                                    slos=space.slos)
    print(f"\nconcurrency {concurrency}\n{found.table()}")
    assert len(found.ours) == len(found.theirs) == ROUNDS
    assert all(r["completed"] == load.requests for r in found.ours)
    assert all(r["completed"] == load.requests for r in found.theirs)
    outside = {}
    for metric, limit in LIMITS.items():
        difference = found.difference(metric, dict(ROWS)[metric])
        if not abs(difference) <= limit:
            outside[metric] = f"{100 * difference:+.1f}% (limit {100 * limit:.0f}%)"
    assert not outside, f"{outside}\n{found.table()}"
