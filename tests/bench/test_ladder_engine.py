"""The load ladder on one real vLLM server: a 3-level concurrency ladder on the demo model.

One engine (the shared one, tests/support/shared_engine.py): a steady level's window is
checked request by request (ramp-up and drain left out, times inside the window); then the
ladder is measured twice, first with SLOs no level misses (the curve itself), then with an
E2E SLO calibrated between its lowest and highest level, which the capacity must then fall
between; last, a one-level ladder under that SLO extends itself until a level misses it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from autotune.bench.driver import Endpoint, HttpLoadDriver
from autotune.bench.http_step import HttpMeasurement
from autotune.bench.ladder import levels_of, repeats_of
from autotune.bench.steady import DRAIN, MEASURED, RAMP
from autotune.bench.step import MeasureContext
from autotune.engines.vllm import engine_config
from autotune.space.model import Space
from autotune.testing.spaces import small_space
from tests.support.shared_engine import SharedEngine

pytestmark = pytest.mark.engine

LEVELS = [1, 4, 16]
STEADY = {"per_concurrency": 4, "min_duration_s": 2.0}  # short levels: CI's time


def test_a_steady_level_on_a_real_server(
    tmp_path: Path, demo_model: Path, shared_engine: SharedEngine
) -> None:
    data = small_space(tmp_path, demo_model)
    data["workload"] |= {"load": {"kind": "concurrency", "concurrency": 4},
                         "num_requests": 8, "warmup_requests": 0, "steady_state": STEADY}
    workload = Space.model_validate(data).primary_workload
    engine = shared_engine.engine
    result = HttpLoadDriver().run(Endpoint(engine.base_url, engine.served_name), workload,
                                  {"e2e_p95_ms": 600_000}, run_index=7001)
    window, m = result.window, result.metrics
    assert window is not None and window.opened is not None and window.closed is not None
    everything = sorted(window.records, key=lambda r: r.done_at)
    # ramp-up: the 4 opening requests, not measured; the window opens at the 4th completion
    assert window.sent[RAMP] >= 4
    assert window.opened == pytest.approx(everything[3].done_at, abs=0.01)
    # the window: 4 x 4 = 16 requests at least (more than num_requests 8) and 2 s
    assert m["steady_window_requests"] == window.sent[MEASURED] == len(result.records) >= 16
    assert m["steady_window_s"] >= 2.0 and m["steady_window_short"] == 0
    assert all(window.opened <= r.sent_at <= window.closed for r in result.records)
    assert m["completed"] == len(result.records) and m["failed"] == 0
    # drain: requests sent after the close kept the load until the last measured finished
    assert window.sent[DRAIN] >= 1 and window.closed < max(r.done_at for r in result.records)
    inside = [r for r in window.records if window.opened <= r.done_at <= window.closed]
    assert m["request_throughput"] == pytest.approx(len(inside) / m["steady_window_s"])
    print(f"steady level at concurrency 4: ramp {window.sent[RAMP]} requests "
          f"({m['steady_ramp_s']:.2f} s), window {window.sent[MEASURED]} requests "
          f"({m['steady_window_s']:.2f} s), drain {window.sent[DRAIN]}; "
          f"{m['request_throughput']:.2f} req/s")


def test_a_three_level_ladder_on_one_server(
    tmp_path: Path, demo_model: Path, shared_engine: SharedEngine
) -> None:
    data = small_space(tmp_path, demo_model)
    data["ladder"] = {"kind": "concurrency", "levels": LEVELS, "requests_per_level": 24,
                      "early_stop": False, "extend": False}
    data["workload"]["steady_state"] = STEADY
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
    # each level a steady window: at least 24 requests and 4 per slot, ramp and drain apart
    for level, x in zip(LEVELS, m, strict=True):
        assert x["completed"] == x["steady_window_requests"] >= max(24, 4 * level)
        assert x["failed"] == 0 and x["steady_window_s"] >= 2.0
        assert x["steady_ramp_requests"] >= level and x["steady_drain_requests"] >= 1
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

    # A ladder listing only concurrency 1 under that SLO: every listed level holds, so it
    # goes on rising (x2) until a level misses, and capacity is bracketed, not a bound.
    ladder = {"kind": "concurrency", "levels": [1], "requests_per_level": 24, "extend_to": 64}
    rising = space.model_copy(update={"slos": {"e2e_p95_ms": slo},
                                      "ladder": space.ladder.model_validate(ladder)})
    found = measure(rising)
    run = levels_of(found.measurements)
    print(f"extended: {[(lv['load'], lv['holds']) for lv in run]}, capacity "
          f"{found.metrics['capacity_rps']:.2f} req/s")
    assert [lv["load"] for lv in run] == [2.0 ** k for k in range(len(run))]
    assert all(lv["holds"] for lv in run[:-1]) and not run[-1]["holds"]
    assert 2 <= run[-1]["load"] <= 32  # the curve missed it by 16 (one step of noise)
    assert all(lv.get("extended") for lv in run[1:])  # every level above the listed one
    assert found.metrics["ladder_levels_extended"] == len(run) - 1
    assert found.metrics["capacity_is_lower_bound"] == 0
    rates = [lv["metrics"]["request_throughput"] for lv in run]
    assert rates[-2] * 0.8 <= found.metrics["capacity_rps"] <= rates[-1] * 1.2
    assert engine.alive() and engine.pids() == pids  # one engine start throughout
