"""The load ladder on one real vLLM server: a 3-level concurrency ladder on the demo model.

One engine (the shared one, tests/support/shared_engine.py): the ladder is measured twice on
it, first with SLOs no level misses (the curve itself), then with an E2E SLO calibrated between
its lowest and highest level, which the capacity must then fall between.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from autotune.bench.http_step import HttpMeasurement
from autotune.bench.ladder import levels_of, repeats_of
from autotune.bench.step import MeasureContext
from autotune.engines.vllm import engine_config
from autotune.space.model import Space
from autotune.testing.spaces import small_space
from tests.support.shared_engine import SharedEngine

pytestmark = pytest.mark.engine

LEVELS = [1, 4, 16]


def test_a_three_level_ladder_on_one_server(
    tmp_path: Path, demo_model: Path, shared_engine: SharedEngine
) -> None:
    data = small_space(tmp_path, demo_model)
    data["ladder"] = {"kind": "concurrency", "levels": LEVELS, "requests_per_level": 24,
                      "early_stop": False}
    data["slos"] = {"e2e_p95_ms": 600_000}
    space = Space.model_validate(data)
    engine, config = shared_engine.engine, shared_engine.config
    assert config.flags == engine_config(space, {}, is_default=True).flags
    pids = engine.pids()
    step = HttpMeasurement()

    def measure(space: Space):
        context = MeasureContext(space=space, number=0, is_default=True,
                                 pool=shared_engine.pool, devices=shared_engine.devices,
                                 log_path=shared_engine.log_path)
        found = step.measure(engine, config, context)
        assert found.failure is None, found.failure
        return found

    curve = measure(space)
    levels = levels_of(curve.measurements)
    assert [lv["load"] for lv in levels] == LEVELS
    assert len(repeats_of(curve.measurements)) == 1  # the main measurement, as before
    m = [lv["metrics"] for lv in levels]
    for lv in levels:
        print(f"concurrency {lv['load']:g}: {lv['metrics']['request_throughput']:.2f} req/s, "
              f"{lv['metrics']['output_throughput']:.0f} tok/s, e2e p95 "
              f"{lv['metrics']['e2e_p95_ms']:.0f} ms, tpot mean "
              f"{lv['metrics']['tpot_mean_ms']:.1f} ms, prefix hits "
              f"{lv['metrics'].get('prefix_cache_hit_rate')}, "
              f"run {lv['metrics']['run_index']:g}")
    assert all(x["completed"] == 24 and x["failed"] == 0 for x in m)
    # more load: more throughput, longer requests, slower streams
    assert m[2]["request_throughput"] > m[0]["request_throughput"]
    assert m[2]["output_throughput"] > m[0]["output_throughput"]
    assert m[2]["e2e_p95_ms"] > m[0]["e2e_p95_ms"]
    assert m[2]["tpot_mean_ms"] > m[0]["tpot_mean_ms"]
    # every level has prompts of its own: nothing cached from the run before it
    assert len({x["run_index"] for x in m}) == 3
    assert all(x.get("prefix_cache_hit_rate", math.nan) < 0.1 for x in m)
    assert curve.metrics["ladder_levels_run"] == 3
    assert curve.metrics["capacity_is_lower_bound"] == 1  # no level missed the SLO
    assert curve.metrics["capacity_rps"] == pytest.approx(m[2]["request_throughput"])

    # An SLO between the lowest and the highest level: capacity lies between them.
    slo = math.sqrt(m[0]["e2e_p95_ms"] * m[2]["e2e_p95_ms"])
    ladder = {**data["ladder"], "early_stop": True}
    edged = space.model_copy(update={"slos": {"e2e_p95_ms": slo},
                                     "ladder": space.ladder.model_validate(ladder)})
    found = measure(edged)
    run = levels_of(found.measurements)
    rates = [lv["metrics"]["request_throughput"] for lv in run]
    capacity = found.metrics["capacity_rps"]
    print(f"SLO e2e p95 {slo:.0f} ms: capacity {capacity:.2f} req/s over "
          f"{len(run)} levels {[lv['holds'] for lv in run]}, rates {rates}, "
          f"notes {found.notes}")
    assert run[0]["holds"] and not run[-1]["holds"]
    assert found.metrics["capacity_is_lower_bound"] == 0
    assert rates[0] <= capacity <= max(rates)
    assert found.metrics["interactivity_at_capacity"] > 0
    assert found.metrics["throughput_per_device_at_capacity"] > 0
    if len(run) < 3:  # stopped at the first failing level, and said so
        assert found.metrics["ladder_stopped_early"] == 1
        assert any("load ladder stopped early" in n for n in found.notes)
    assert engine.alive() and engine.pids() == pids  # one engine start throughout
