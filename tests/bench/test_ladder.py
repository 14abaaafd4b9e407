"""The load ladder's pure part (levels, capacity interpolation, early stops) and its HTTP step
on the mock OpenAI server."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.bench.capacity import capacity_of
from autotune.bench.http_step import HttpMeasurement
from autotune.bench.ladder import (
    LEVEL_KEY,
    Level,
    levels_of,
    off_front,
    optimistic_metrics,
    pareto_values,
    repeats_of,
    run_ladder,
)
from autotune.errors import SpaceError
from autotune.space.ladder import LadderSpec
from autotune.space.model import Space, load_space
from autotune.testing.mock_engine import MockLauncher
from autotune.testing.mock_openai import Behaviour
from tests.trial.test_driver_trial import SPACE, _runner

SLOS = {"e2e_p95_ms": 1000.0}


def _closed_loop(e2e0_s: float = 0.5, mu: float = 6.0, tokens: int = 32):
    """A server that completes min(c / e2e0, mu) requests/s at concurrency c: below its
    saturation every request takes e2e0, above it E2E grows as c / mu (Little's law)."""
    calls: list[float] = []

    def measure(c: float) -> dict[str, float]:
        calls.append(c)
        rate = min(c / e2e0_s, mu)
        e2e_ms = c / rate * 1000.0
        return {"request_throughput": rate, "output_throughput": rate * tokens,
                "e2e_p95_ms": e2e_ms, "e2e_mean_ms": e2e_ms,
                "tpot_mean_ms": e2e_ms / tokens, "error_rate": 0.0}

    return measure, calls


def _level(index: int, rate: float, e2e_ms: float, tpot_ms: float = 10.0,
           error_rate: float = 0.0) -> Level:
    metrics = {"request_throughput": rate, "output_throughput": rate * 32, "e2e_p95_ms": e2e_ms,
               "e2e_mean_ms": e2e_ms, "tpot_mean_ms": tpot_ms, "error_rate": error_rate}
    ratio = e2e_ms / SLOS["e2e_p95_ms"]
    return Level(index, float(index + 1), metrics, ratio, ratio <= 1 and error_rate == 0)


# ---- the spec -------------------------------------------------------------------------------

def test_levels_listed_or_geometric() -> None:
    assert LadderSpec(levels=[1, 4, 16]).resolved_levels() == [1, 4, 16]
    assert LadderSpec(kind="rate", start=1, max=10).resolved_levels() == [1, 2, 4, 8, 10]
    assert LadderSpec(kind="rate", start=0.5, factor=3, max=4.5).resolved_levels() == [0.5, 1.5,
                                                                                       4.5]
    # a concurrency ladder rounds to whole requests and drops the repeats that makes
    assert LadderSpec(start=1, factor=1.5, max=10).resolved_levels() == [1, 2, 3, 5, 8, 10]


def _space_file(tmp_path: Path, **update: Any) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **update}))
    return path


@pytest.mark.parametrize(("ladder", "expected"), [
    ({"levels": [4, 2]}, "levels must rise strictly"),
    ({"levels": [1, 2.5]}, "whole numbers"),
    ({"levels": [1, 2], "start": 1, "max": 4}, "not both"),
    ({"start": 1}, "give levels"),
    ({"start": 8, "max": 2}, "below start"),
    ({"kind": "rate", "start": 0.001, "factor": 1.01, "max": 100}, "at most 16"),
    ({"levels": [1, 2], "max_concurrency": 4}, "rate ladder"),
    ({"levels": [1, 2], "requests": 8}, "unknown key"),
])
def test_a_bad_ladder_names_its_field(tmp_path: Path, ladder: dict, expected: str) -> None:
    path = _space_file(tmp_path, ladder=ladder)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(path) in str(info.value) and info.value.exit_code == 2
    assert any(field.startswith("ladder") and expected in text
               for field, text in info.value.problems), info.value.problems


def test_curve_objectives_need_a_ladder_and_cost_a_price(tmp_path: Path) -> None:
    objectives = [{"metric": "capacity_rps"}, {"metric": "cost_per_1m_at_capacity"}]
    with pytest.raises(SpaceError) as info:
        load_space(_space_file(tmp_path, objectives=objectives))
    assert ("objectives", "capacity_rps needs a `ladder:` section (docs/measurement.md, "
            "Load ladder) or a `capacity:` section") in info.value.problems
    assert ("objectives", "cost_per_1m_at_capacity needs a `ladder:` section "
            "(docs/measurement.md, Load ladder)") in info.value.problems
    space = load_space(_space_file(tmp_path, objectives=objectives, ladder={"levels": [1, 2]},
                                   cost={"device_hour_usd": 2.0}))
    assert space.directions == ["maximize", "minimize"]
    with pytest.raises(SpaceError, match="cost_per_1m_at_capacity needs a `cost:`"):
        load_space(_space_file(tmp_path, objectives=objectives, ladder={"levels": [1, 2]}))


def test_capacity_at_slo_comes_from_the_ladder_or_the_bisection_never_both(
        tmp_path: Path) -> None:
    objectives = [{"metric": "capacity_rps"}]
    bisection = {"start_rate": 1, "max_rate": 8}
    assert load_space(_space_file(tmp_path, objectives=objectives, capacity=bisection)
                      ).directions == ["maximize"]
    with pytest.raises(SpaceError) as info:
        load_space(_space_file(tmp_path, objectives=objectives, capacity=bisection,
                               ladder={"levels": [1, 2]}))
    assert any("both measure capacity_rps" in text for _, text in info.value.problems)
    with pytest.raises(SpaceError, match="interactivity_at_capacity needs a `ladder:`"):
        load_space(_space_file(tmp_path, objectives=[{"metric": "interactivity_at_capacity"}],
                               capacity=bisection))
    with pytest.raises(SpaceError, match="capacity_output_throughput needs a `capacity:`"):
        load_space(_space_file(tmp_path, objectives=[{"metric": "capacity_output_throughput"}],
                               ladder={"levels": [1, 2]}))


def test_a_space_naming_the_old_capacity_metric_reads_as_capacity_rps(tmp_path: Path) -> None:
    space = load_space(_space_file(tmp_path, objectives=[{"metric": "capacity_request_rate"}],
                                   capacity={"start_rate": 1, "max_rate": 8}))
    assert [o.metric for o in space.objectives] == ["capacity_rps"]
    assert space.directions == ["maximize"]


# ---- capacity ----------------------------------------------------------------------------------

def test_capacity_is_interpolated_where_the_slo_ratio_crosses_one() -> None:
    passed, failed = _level(0, 2.0, 500.0, tpot_ms=10.0), _level(1, 6.0, 1500.0, tpot_ms=40.0)
    found = capacity_of([passed, failed])
    # ratio 0.5 → 1.5: it crosses 1 half-way, at 4 req/s
    assert found.rate == pytest.approx(4.0) and not found.lower_bound
    assert found.output_throughput == pytest.approx(4.0 * 32)
    assert found.interactivity == pytest.approx((100.0 + 25.0) / 2)


def test_capacity_edge_cases() -> None:
    assert capacity_of([_level(0, 2.0, 2000.0)]).rate == 0  # even the lowest level misses
    top = capacity_of([_level(0, 2.0, 100.0), _level(1, 5.0, 400.0)])
    assert top.rate == 5.0 and top.lower_bound  # every level held: the top is a lower bound
    errors = capacity_of([_level(0, 2.0, 100.0), _level(1, 5.0, 400.0, error_rate=0.2)])
    assert errors.rate == 2.0  # failed on errors, not latency: nothing to interpolate
    fell = capacity_of([_level(0, 4.0, 500.0), _level(1, 3.0, 3000.0)])
    assert fell.rate == 4.0  # an overloaded level completing less: the last passing one


def test_early_stop_at_the_first_failing_level_loses_nothing() -> None:
    measure, calls = _closed_loop()  # saturates at 6 req/s (c = 3): E2E 1333 ms at c = 8
    spec = LadderSpec(levels=[1, 2, 4, 8, 16, 32])
    stopped = run_ladder(measure, spec, SLOS, 0.0)
    assert calls == [1, 2, 4, 8]
    assert stopped.stop_reason == ("level 4 (concurrency 8) missed the SLOs: higher levels "
                                   "cannot hold")
    measure_all, calls_all = _closed_loop()
    full = run_ladder(measure_all, spec.model_copy(update={"early_stop": False}), SLOS, 0.0)
    assert calls_all == [1, 2, 4, 8, 16, 32] and full.stop_reason is None
    assert stopped.capacity == full.capacity
    # c = 4 held at the saturated 6 req/s; c = 8 completed no more, so nothing to interpolate
    assert full.capacity.rate == pytest.approx(6.0) and not full.capacity.lower_bound
    metrics = stopped.as_metrics(n_devices=2, device_hour_usd=3.6)
    assert metrics["ladder_levels_run"] == 4 and metrics["ladder_stopped_early"] == 1
    assert metrics["throughput_per_device_at_capacity"] == pytest.approx(
        stopped.capacity.output_throughput / 2)
    assert metrics["cost_per_1m_at_capacity"] == pytest.approx(
        1e6 / metrics["throughput_per_device_at_capacity"] / 1000)


def test_a_trial_missing_the_slos_at_the_first_level_stops_there() -> None:
    measure, calls = _closed_loop(e2e0_s=2.0)
    found = run_ladder(measure, LadderSpec(levels=[1, 2, 4]), SLOS, 0.0)
    assert calls == [1] and "no level can hold them" in (found.stop_reason or "")
    metrics = found.as_metrics(1, None)
    assert metrics["capacity_rps"] == 0 and math.isnan(metrics["interactivity_at_capacity"])
    assert "cost_per_1m_at_capacity" not in metrics  # no price in the space


def test_stored_levels_carry_the_stop_reason() -> None:
    measure, _ = _closed_loop(e2e0_s=2.0)
    records = run_ladder(measure, LadderSpec(levels=[1, 2]), SLOS, 0.0).records()
    assert records[0][LEVEL_KEY] == 0 and records[0]["load"] == 1 and not records[0]["holds"]
    assert "missed the SLOs" in records[0]["stop_reason"]
    stored = [{"metrics": {}, "windows": []}, *reversed(records)]
    assert levels_of(stored) == records and repeats_of(stored) == stored[:1]


# ---- the front ---------------------------------------------------------------------------------

OBJECTIVES = [("capacity_rps", "maximize"), ("interactivity_at_capacity", "maximize")]


def test_the_optimistic_bound_is_never_below_the_outcome() -> None:
    for e2e0, mu in ((0.5, 10.0), (0.2, 3.0), (1.0, 40.0)):
        measure, _ = _closed_loop(e2e0_s=e2e0, mu=mu)
        spec = LadderSpec(levels=[1, 2, 4, 8, 16, 32], early_stop=False, extend=False)
        slos = {"e2e_p95_ms": 3000.0}
        final = run_ladder(measure, spec, slos, 0.0).as_metrics(1, None)
        levels: list[Level] = []
        for level in run_ladder(measure, spec, slos, 0.0).levels:
            levels.append(level)
            if not level.holds:
                break
            bound = optimistic_metrics(levels, "concurrency", 32, 0.0, 1, None)
            for metric, _ in OBJECTIVES:
                assert bound[metric] >= final[metric] - 1e-9, (e2e0, mu, metric)


def test_a_trial_the_front_dominates_stops_after_its_first_level() -> None:
    front = [[100.0, 1000.0]]  # 100 req/s at 1000 tok/s per request
    spec = LadderSpec(levels=[1, 2, 4, 8])

    def front_check(levels):
        bound = optimistic_metrics(levels, "concurrency", 8, 0.1, 1, None)
        return None if off_front(bound, OBJECTIVES, front) is None else "dominated"

    measure, calls = _closed_loop()  # at best 8 / 0.5 s = 16 req/s
    found = run_ladder(measure, spec, SLOS, 0.0, front_check)
    assert calls == [1] and found.stop_reason == "off the front after level 1: dominated"
    measure, calls = _closed_loop()
    front[:] = [[5.0, 10.0]]  # a weaker front: this trial may still beat it
    found = run_ladder(measure, spec, SLOS, 0.0, front_check)
    assert calls == [1, 2, 4, 8] and found.stop_reason is None  # the top level missed the SLO
    assert found.capacity.rate == pytest.approx(6.0)


def test_a_ladder_whose_levels_all_hold_rises_until_one_misses() -> None:
    # saturates at 6 req/s: E2E 0.5 s up to concurrency 3, then c / 6 s (SLO 1 s: c 6)
    measure, calls = _closed_loop()
    found = run_ladder(measure, LadderSpec(levels=[1, 2]), SLOS, 0.0)
    assert calls == [1, 2, 4, 8] and found.stop_reason is None
    assert [lv.extended for lv in found.levels] == [False, False, True, True]
    assert not found.levels[-1].holds and not found.capacity.lower_bound
    metrics = found.as_metrics(1, None)
    assert metrics["ladder_levels_extended"] == 2 and metrics["capacity_is_lower_bound"] == 0
    assert 5.9 <= found.capacity.rate <= 6.0 + 1e-9
    assert found.records()[2]["extended"] and "extended" not in found.records()[1]
    # A listed level that misses ends it there: nothing is extended.
    measure, calls = _closed_loop()
    assert run_ladder(measure, LadderSpec(levels=[1, 16, 32]), SLOS, 0.0).levels[-1].load == 16
    assert calls == [1, 16]


def test_an_extended_ladder_stops_at_its_bound_as_a_lower_bound() -> None:
    measure, calls = _closed_loop(mu=1000.0)  # never saturates within the bound
    spec = LadderSpec(levels=[1, 2], extend_to=10)
    assert spec.extension() == [4.0, 8.0]
    found = run_ladder(measure, spec, SLOS, 0.0)
    assert calls == [1, 2, 4, 8] and found.capacity.lower_bound
    assert found.as_metrics(1, None)["capacity_is_lower_bound"] == 1
    # extend: false is the listed levels only; a replay (extend=False) too
    measure, calls = _closed_loop(mu=1000.0)
    run_ladder(measure, LadderSpec(levels=[1, 2], extend=False), SLOS, 0.0)
    measure2, calls2 = _closed_loop(mu=1000.0)
    run_ladder(measure2, spec, SLOS, 0.0, extend=False)
    assert calls == calls2 == [1, 2]
    # a rate ladder extends by its factor, without rounding
    assert LadderSpec(kind="rate", levels=[1.5], factor=1.5, extend_to=4).extension() == [
        2.25, 3.375]
    # the default bound is generous for GPUs
    assert LadderSpec(levels=[4, 16]).extension()[-1] == 4096


def test_off_front_needs_every_objective_bounded() -> None:
    bound = {"capacity_rps": 1.0, "interactivity_at_capacity": 1.0}
    assert off_front(bound, OBJECTIVES, [[2.0, 2.0]]) == 0
    assert off_front(bound, OBJECTIVES, [[2.0, 0.5]]) is None
    assert off_front(bound, [*OBJECTIVES, ("quality_accuracy", "maximize")],
                     [[2.0, 2.0, 1.0]]) is None
    assert off_front({"cost_per_1m_at_capacity": 5.0}, [("cost_per_1m_at_capacity",
                                                         "minimize")], [[4.0]]) == 0
    assert pareto_values([[1, 5], [2, 2], [1, 1], [2, 2]], ["maximize", "maximize"]) == [
        [1, 5], [2, 2], [2, 2]]


# ---- the HTTP step -----------------------------------------------------------------------------

def _ladder_space(**ladder: Any) -> Space:
    return Space.model_validate({**SPACE, "ladder": ladder,
                                 "objectives": [{"metric": "capacity_rps"}]})


def test_the_http_step_measures_each_level_with_prompts_of_its_own(tmp_path: Path) -> None:
    launcher = MockLauncher(Behaviour(token_delay_s=0.002))
    space = _ladder_space(levels=[1, 2, 4], requests_per_level=6, early_stop=False,
                          extend=False)
    runner = _runner(tmp_path, launcher, space)
    phases: list[str] = []
    outcome = runner.run(1, {"max_num_seqs": 8}, is_default=False, on_phase=phases.append)
    assert outcome.state == "complete", outcome.failure
    levels = levels_of(outcome.measurements)
    assert [lv["load"] for lv in levels] == [1, 2, 4]
    assert all(lv["metrics"]["completed"] == 6 for lv in levels)
    runs = [lv["metrics"]["run_index"] for lv in levels]
    assert runs == sorted(set(runs)) and runs[0] >= 1  # after the main run (index 0)
    assert len(repeats_of(outcome.measurements)) == 1
    assert outcome.metrics["ladder_levels_run"] == 3
    assert outcome.metrics["capacity_rps"] == pytest.approx(
        levels[-1]["metrics"]["request_throughput"])
    assert "load ladder: level 3/3 (concurrency 4)" in phases
    # prompts of their own: no two levels sent the same prompt
    server = launcher.started[-1].server
    prompts = [str(seen.body.get("prompt")) for seen in server.requests
               if seen.path.endswith("completions")]
    assert len(prompts) == 2 + 8 + 18 and len(set(prompts)) == len(prompts)


def test_a_rate_ladder_counts_the_wait_at_the_client_gate(tmp_path: Path) -> None:
    # one request at a time, each ~40 ms, arriving at 100/s: the queue is at the client
    launcher = MockLauncher(Behaviour(token_delay_s=0.01))
    space = _ladder_space(kind="rate", levels=[100], requests_per_level=10, max_concurrency=1)
    outcome = _runner(tmp_path, launcher, space).run(1, {"max_num_seqs": 8}, is_default=False)
    level = levels_of(outcome.measurements)[0]["metrics"]
    alone_ms = outcome.metrics["e2e_p50_ms"]  # the main run: concurrency 2, no client queue
    assert level["e2e_p95_ms"] > 3 * alone_ms, (level["e2e_p95_ms"], alone_ms)


def test_a_step_off_the_front_stops_after_its_first_level(tmp_path: Path) -> None:
    space = Space.model_validate({
        **SPACE, "ladder": {"levels": [1, 2, 4], "requests_per_level": 4},
        "objectives": [{"metric": "capacity_rps"}, {"metric": "interactivity_at_capacity"}],
    })
    runner = _runner(tmp_path, MockLauncher(Behaviour(token_delay_s=0.002)), space)
    assert isinstance(runner.measuring, HttpMeasurement) and runner.measuring.front is None
    runner.measuring.front = lambda: [[1e6, 1e6]]  # a front no server here can reach
    outcome = runner.run(1, {"max_num_seqs": 8}, is_default=False)
    assert outcome.state == "complete", outcome.failure
    levels = levels_of(outcome.measurements)
    assert len(levels) == 1 and levels[0]["holds"]
    assert levels[0]["stop_reason"].startswith("off the front after level 1: at best "
                                               "capacity_rps ≤ ")
    assert outcome.metrics["ladder_stopped_early"] == 1
    assert outcome.metrics["capacity_is_lower_bound"] == 1
    assert any(n.startswith("load ladder stopped early: off the front") for n in outcome.notes)


# ---- a study: stored, shown, exported, and the front handed to the step ------------------------

def test_a_study_stores_shows_and_exports_the_curve(tmp_path: Path) -> None:
    from autotune.results.export import export_yaml
    from autotune.results.report import load_report
    from autotune.store import open_catalog
    from autotune.study import SilentReporter, StudyRunner
    from tests.cli.test_render import show

    space = Space.model_validate({
        **SPACE, "ladder": {"levels": [1, 3], "requests_per_level": 4, "extend": False},
        "objectives": [{"metric": "capacity_rps"}, {"metric": "interactivity_at_capacity"}],
    })
    launcher = MockLauncher(Behaviour(token_delay_s=0.002))
    trials = _runner(tmp_path, launcher, space)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = StudyRunner.create(space, name="curve", storage=url, launcher=launcher,
                               pool=trials.pool, log_dir=tmp_path / "logs", runner=trials,
                               reporter=SilentReporter())
    study.run(n_trials=2)
    assert trials.measuring.front == study.front
    report = load_report(open_catalog(url), "curve")
    first = report.trial(0)
    levels = levels_of(first.measurements)
    assert [lv["load"] for lv in levels] == [1, 3] and first.metrics["capacity_rps"] > 0
    values = [[t.metrics["capacity_rps"], t.metrics["interactivity_at_capacity"]]
              for t in report.trials if t.state == "complete" and t.feasible]
    assert sorted(study.front()) == sorted(pareto_values(values, space.directions))
    text = show(url, "curve", "--trial", "0", columns=160)
    assert "load ladder" in text and "per user" in text and "capacity_rps" in text
    rate = levels[1]["metrics"]["request_throughput"]
    assert f"{rate:.4g}" in text or f"{rate:.1f}" in text
    exported = export_yaml(report, first)
    # both levels held: capacity is a lower bound, and the header says so
    assert first.metrics["capacity_is_lower_bound"] == 1
    assert "# load curve: capacity_rps≥" in exported
    assert "#   concurrency 3: request_throughput" in exported


def test_every_run_index_gets_prompts_of_its_own(tmp_path: Path) -> None:
    from autotune.bench.workload import build_prompts
    from autotune.space.workload import WorkloadSpec

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(f'{{"prompt": "question {i}"}}\n' for i in range(20)))
    workload = WorkloadSpec.model_validate({
        "prompts": {"kind": "jsonl", "path": str(path), "output_tokens": 4,
                    "too_long": "send"},  # no engine to count tokens with
        "num_requests": 4, "warmup_requests": 1, "load": {"kind": "concurrency",
                                                          "concurrency": 1}})
    runs = [[p.body for p in build_prompts(workload, "http://unused", "m", i)] for i in range(4)]
    assert all(len(run) == 5 for run in runs)
    assert len({body for run in runs for body in run}) == 20  # 4 runs × 5 prompts, none twice
    assert runs[0] == [p.body for p in build_prompts(workload, "http://unused", "m")]


def test_capacity_can_be_a_constraint() -> None:
    from autotune.scoring import constraint_names, failed_violations, slos_hold, violations

    space = _ladder_space(levels=[1, 2], min_capacity_rps=4.0)
    assert constraint_names(space)[-1] == "capacity_rps"
    measured = {"e2e_p95_ms": 100.0, "error_rate": 0.0}
    assert violations(space, {**measured, "capacity_rps": 5.0})["capacity_rps"] == -0.25
    assert violations(space, {**measured, "capacity_rps": 3.0})["capacity_rps"] == 0.25
    assert violations(space, measured)["capacity_rps"] == 1.0  # never measured: violated
    assert failed_violations(space)["capacity_rps"] == 1.0
    assert slos_hold(space, measured)  # a load point is judged by its SLOs only


def test_with_a_ladder_the_slos_constrain_through_capacity() -> None:
    """The ladder's SLOs define capacity: a main measurement over them does not make the trial
    infeasible when a lower level held them; no level holding does."""
    from autotune.scoring import constraint_names, is_feasible, violations

    space = _ladder_space(levels=[1, 2])
    assert space.slos and not set(space.slo_limits) & set(constraint_names(space))
    assert "capacity_rps" in constraint_names(space)
    over = {key: 10 * limit for key, limit in space.slo_limits.items()} | {"error_rate": 0.0}
    assert is_feasible(violations(space, {**over, "capacity_rps": 2.0}))
    assert not is_feasible(violations(space, {**over, "capacity_rps": 0.0}))
    assert not is_feasible(violations(space, over))  # the ladder never ran
