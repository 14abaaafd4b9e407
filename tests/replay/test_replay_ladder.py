"""Grid format v2 (ladder levels per configuration): loading, replaying the curve with the
ladder's own code, early stop in a replay, engine-seconds, and the measuring script's writer.

The grid is tests/fixtures/ladder-grid.jsonl: hand-chosen closed-loop servers (rate
min(c / E2E0, mu) at concurrency c) measured at concurrency 2, 8 and 32."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autotune.bench.ladder import run_ladder
from autotune.replay import ENGINE_S, Grid, GridError, ReplayTrialRunner, engine_seconds
from autotune.space.ladder import LadderSpec
from autotune.space.model import Space
from autotune.study import SilentReporter, StudyRunner
from autotune.testing.replay_grid import write_grid
from autotune.trial import TrialOutcome

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "ladder-grid.jsonl"

BEST = {"max_num_seqs": 64, "enable_prefix_caching": True}  # every level holds
SLO_CUT = {"max_num_seqs": 16, "enable_prefix_caching": False}  # misses at level 2
FRONT_CUT = {"max_num_seqs": 4, "enable_prefix_caching": True}  # off the front after level 1
ERRORS = {"max_num_seqs": 4, "enable_prefix_caching": False}  # errors at level 3
FAILED = {"max_num_seqs": 64, "enable_prefix_caching": False}


@pytest.fixture
def grid() -> Grid:
    return Grid.load(FIXTURE)


def early(space: Space, on: bool) -> Space:
    assert space.ladder is not None
    return space.model_copy(update={"ladder": space.ladder.model_copy(update={"early_stop": on})})


def _load_script(name: str, path: Path) -> Any:
    """benchmarks/ is not a package: load a script as a module (once), its folder on the path
    while it loads, as when it runs (its ``from common import ...``)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
    return sys.modules[name]


# ---- the format -------------------------------------------------------------------------------


def test_a_ladder_grid_loads_with_its_levels(grid: Grid) -> None:
    assert len(grid.rows) == 7
    row = grid.by_params(FRONT_CUT)
    assert [level.load for level in row.levels] == [2.0, 8.0, 32.0]
    assert row.levels[0].metrics["request_throughput"] == pytest.approx(4 / 3, rel=1e-3)
    assert row.levels[0].benchmark_s == pytest.approx(12.0)
    assert row.timings["startup_s"] == 30.0 and row.timings["teardown_s"] == 2.0
    assert row.line == 6  # the meta line, the default row, then the points


def _lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def _write(tmp_path: Path, lines: list[dict[str, Any]]) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(levels={"load": 2}), "levels must be a list"),
        (lambda r: r["levels"][1].pop("load"), r"levels\[1\]\.load must be a number > 0"),
        (lambda r: r["levels"][0].update(load=-2), r"levels\[0\]\.load must be a number > 0"),
        (lambda r: r["levels"][2].update(metrics=[1, 2]), r"levels\[2\]\.metrics must be an"),
        (lambda r: r["levels"][0]["metrics"].update(e2e_p95_ms="slow"),
         r"levels\[0\]\.metrics\.e2e_p95_ms must be a number"),
        (lambda r: r["levels"][0].update(timings={"benchmark_s": None}),
         r"levels\[0\]\.timings\.benchmark_s must be a number"),
        (lambda r: r["levels"].reverse(), "rising load order"),
        (lambda r: r["timings"].update(startup_s="fast"), r"timings\.startup_s must be a number"),
        (lambda r: r["metrics"].update(completed=True), r"metrics\.completed must be a number"),
        (lambda r: r["levels"].pop(), "needs levels at loads"),
        # every level carries what the ladder reads: named by line, level and metric
        (lambda r: r["levels"][1]["metrics"].pop("error_rate"),
         r"levels\[1\] \(load 8\) has no error_rate: the ladder reads error_rate, "),
        (lambda r: r["levels"][2]["metrics"].pop("tpot_mean_ms"),
         r"levels\[2\] \(load 32\) has no tpot_mean_ms"),
        (lambda r: r["levels"][0]["metrics"].pop("ttft_p95_ms"),
         r"levels\[0\] \(load 2\) has no ttft_p95_ms: .*ttft_p95_ms, e2e_p95_ms"),
        (lambda r: [lv["metrics"].pop("request_throughput") for lv in r["levels"]],
         r"levels\[0\] \(load 2\) has no request_throughput"),
    ],
)
def test_bad_v2_lines_are_refused_with_file_and_line(tmp_path: Path, change, message) -> None:
    lines = _lines()
    change(lines[3])  # the fourth line: a complete configuration
    path = _write(tmp_path, lines)
    with pytest.raises(GridError, match=message) as info:
        Grid.load(path)
    assert str(info.value).startswith(f"{path}:4: row 2")


def test_a_duplicate_names_both_lines(tmp_path: Path) -> None:
    lines = _lines()
    path = _write(tmp_path, [*lines, lines[2]])
    with pytest.raises(GridError, match=r"bad\.jsonl:9: row 7: the same configuration as row 1 "
                                        r"\(line 3\)"):
        Grid.load(path)


def test_a_bad_ladder_in_the_meta_line_is_refused(tmp_path: Path) -> None:
    lines = _lines()
    lines[0]["meta"]["space"]["ladder"]["levels"] = [8, 2]
    with pytest.raises(GridError, match="meta.space.ladder is not a valid ladder"):
        Grid.load(_write(tmp_path, lines))


def test_v1_grids_still_load_and_replay_verbatim(tmp_path: Path) -> None:
    grid = Grid.load(write_grid(tmp_path / "v1.jsonl"))
    assert all(not row.levels for row in grid.rows)
    runner = ReplayTrialRunner(grid.space(), grid)
    row = grid.points[0]
    outcome = runner.run(1, row.params, is_default=False)
    assert outcome.metrics == row.metrics and outcome.measurements == []
    shipped = Grid.load(ROOT / "benchmarks" / "grids" / "quickstart-cpu.jsonl")
    assert len(shipped.rows) == 109 and not any(r.levels for r in shipped.rows)


def test_a_ladder_space_will_not_replay_a_grid_without_levels(tmp_path: Path) -> None:
    v1 = Grid.load(write_grid(tmp_path / "v1.jsonl"))
    ladder = LadderSpec(levels=[2, 8])
    space = v1.space().model_copy(update={"ladder": ladder})
    with pytest.raises(GridError, match="has no ladder levels"):
        ReplayTrialRunner(space, v1).run(1, v1.points[0].params, is_default=False)


# ---- the replayed curve -----------------------------------------------------------------------


def test_replayed_curve_metrics_are_the_ladder_codes(grid: Grid) -> None:
    space = grid.space()
    assert space.ladder is not None and not space.ladder.early_stop  # measured with it off
    runner = ReplayTrialRunner(space, grid)
    for row in grid.rows:
        outcome = runner.run(1, row.params, is_default=row.default)
        if row.state != "complete":
            continue
        expected = run_ladder(lambda load, r=row: r.level_at(load).metrics, space.ladder,
                              space.slos, space.max_error_rate,
                              extend=False).as_metrics(1, None)  # a replay never extends
        for key, value in expected.items():
            assert outcome.metrics[key] == pytest.approx(value, nan_ok=True), (row.params, key)
        assert "capacity_rps" not in row.metrics  # not copied: the fixture records none
        assert len(outcome.measurements) == 3 and outcome.measurements[0]["ladder_level"] == 0
    # By hand: every level of BEST holds (a lower bound at the top level's rate); FRONT_CUT
    # crosses the SLO between levels 2 and 3 (E2E p95 1.8 s → 6.4 s, ratio 0.45 → 1.6).
    best = runner.run(1, BEST, is_default=False).metrics
    assert best["capacity_rps"] == pytest.approx(40.0) and best["capacity_is_lower_bound"] == 1
    assert best["interactivity_at_capacity"] == pytest.approx(80.0)
    t = (1 - 0.45) / (1.6 - 0.45)
    cut = runner.run(1, FRONT_CUT, is_default=False).metrics
    assert cut["capacity_rps"] == pytest.approx(16 / 3 + t * (6 - 16 / 3), rel=1e-4)
    assert cut["interactivity_at_capacity"] == pytest.approx(
        1000 / (1500 / 64) + t * (1000 / (16000 / 3 / 64) - 1000 / (1500 / 64)), rel=1e-4)
    errors = runner.run(1, ERRORS, is_default=False).metrics  # level 3 fails on errors
    assert errors["capacity_rps"] == pytest.approx(12.0)
    assert errors["capacity_is_lower_bound"] == 0


def test_the_replay_judges_the_levels_against_the_spaces_slos(grid: Grid) -> None:
    """A tighter SLO moves the capacity: the curve is re-derived, not copied."""
    space = grid.space()
    tight = space.model_copy(update={"slos": {**space.slos, "e2e_p95_ms": 800.0}})
    loose = ReplayTrialRunner(space, grid).run(1, BEST, is_default=False).metrics
    strict = ReplayTrialRunner(tight, grid).run(1, BEST, is_default=False).metrics
    assert loose["capacity_rps"] == pytest.approx(40.0)
    # E2E p95 600 ms at concurrency 8 (16 req/s), 960 ms at 32 (40 req/s): 800 ms lies 5/9 of
    # the way (SLO ratio 0.75 → 1.2).
    assert strict["capacity_rps"] == pytest.approx(16 + 5 / 9 * 24, rel=1e-4)
    assert strict["capacity_is_lower_bound"] == 0


# ---- early stop and engine-seconds ------------------------------------------------------------


def test_the_slo_stop_cuts_levels_and_engine_seconds_not_capacity(grid: Grid) -> None:
    row = grid.by_params(SLO_CUT)
    full = ReplayTrialRunner(grid.space(), grid).run(1, SLO_CUT, is_default=False)
    stopped = ReplayTrialRunner(early(grid.space(), True), grid).run(1, SLO_CUT, is_default=False)
    assert full.metrics["ladder_levels_run"] == 3 and stopped.metrics["ladder_levels_run"] == 2
    assert stopped.metrics["ladder_stopped_early"] == 1
    assert stopped.metrics["capacity_rps"] == pytest.approx(full.metrics["capacity_rps"])
    assert any("missed the SLOs" in note for note in stopped.notes)
    # The whole ladder costs what it cost live (its recorded ladder_s, pauses between levels
    # and a steady level's ramp-up and drain included, beyond the levels' own seconds); a
    # stopped one the share of the levels that ran.
    levels = [level.benchmark_s for level in row.levels]
    recorded = row.timings["ladder_s"]
    assert recorded > sum(levels)
    assert full.timings["ladder_s"] == pytest.approx(recorded)
    assert stopped.timings["ladder_s"] == pytest.approx(
        recorded * (levels[0] + levels[1]) / sum(levels))
    main = row.timings["startup_s"] + row.timings["warmup_s"] + row.timings["benchmark_s"] \
        + row.timings["teardown_s"]
    assert full.timings[ENGINE_S] == pytest.approx(main + recorded)
    assert stopped.timings[ENGINE_S] == pytest.approx(main + stopped.timings["ladder_s"])


def test_the_front_stop_reads_the_front_it_is_given(grid: Grid) -> None:
    runner = ReplayTrialRunner(early(grid.space(), True), grid)
    alone = runner.run(1, FRONT_CUT, is_default=False)
    assert alone.metrics["ladder_levels_run"] == 3  # no front yet: only the SLO stop
    runner.measuring.front = lambda: [[40.0, 80.0]]  # BEST's objective values
    cut = runner.run(2, FRONT_CUT, is_default=False)
    assert cut.metrics["ladder_levels_run"] == 1
    assert any("off the front after level 1" in note for note in cut.notes)
    assert cut.timings[ENGINE_S] < alone.timings[ENGINE_S]
    row = grid.by_params(FRONT_CUT)
    assert cut.timings["ladder_s"] == pytest.approx(
        row.timings["ladder_s"] * row.levels[0].benchmark_s
        / sum(level.benchmark_s for level in row.levels))
    # The best configuration itself is never cut by a front it is on.
    best = runner.run(3, BEST, is_default=False)
    assert best.metrics["ladder_levels_run"] == 3


class _Outcomes(SilentReporter):
    def __init__(self) -> None:
        self.outcomes: dict[int, TrialOutcome] = {}

    def notice(self, text: str) -> None:
        pass

    def trial_finished(self, number: int, outcome: TrialOutcome) -> None:
        self.outcomes[number] = outcome


@pytest.mark.parametrize("on", [True, False])
def test_a_replayed_study_gives_the_ladder_its_front(grid: Grid, tmp_path: Path, on: bool) -> None:
    """The study runner hands the replay step its current front as it does the live one."""
    space = grid.search_space(early(grid.space(), on))
    runner = ReplayTrialRunner(space, grid)
    reporter = _Outcomes()
    study = StudyRunner.create(
        space, name="front", storage=f"sqlite:///{tmp_path / 'db.sqlite'}",
        launcher=runner.launcher, pool=runner.pool, log_dir=tmp_path, reporter=reporter,
        warm_start=[BEST, FRONT_CUT], runner=runner,
    )
    study.run(n_trials=3)
    assert runner.measuring.front == study.front
    by_params = {tuple(sorted(o.flags.items())): o for o in reporter.outcomes.values()}
    assert len(by_params) == 3
    cut = reporter.outcomes[max(reporter.outcomes)]  # FRONT_CUT, after the default and BEST
    assert cut.metrics["ladder_levels_run"] == (1 if on else 3)


def test_failed_and_rejected_trials_cost_what_was_recorded(grid: Grid) -> None:
    runner = ReplayTrialRunner(grid.space(), grid)
    failed = runner.run(1, FAILED, is_default=False)
    assert failed.state == "failed"
    assert failed.timings["startup_s"] == 12.5 and failed.timings[ENGINE_S] == 12.5
    assert engine_seconds({}) == 0.0


def test_a_rejected_trial_costs_no_engine(tmp_path: Path) -> None:
    grid = Grid.load(write_grid(tmp_path / "v1.jsonl"))
    params = {"max_num_seqs": 8, "max_num_batched_tokens": 256, "enable_chunked_prefill": False}
    outcome = ReplayTrialRunner(grid.space(), grid).run(1, params, is_default=False)
    assert outcome.state == "rejected" and outcome.timings[ENGINE_S] == 0.0


# ---- search_efficiency on the ladder grid -------------------------------------------------------


def test_search_efficiency_prints_trials_and_engine_seconds_both_ways() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_efficiency.py"), "--grid",
         str(FIXTURE), "--seeds", "2", "--strategies", "grid,random", "--max-trials", "8"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "without early stop" in out and "with early stop" in out
    header = next(line for line in out.splitlines() if line.startswith("strategy   |"))
    assert header.count("engine-s 99%") == 2 and header.count("trials 95%") == 2
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.split() and line.split()[0] in ("grid", "random") and "|" in line}
    assert set(rows) == {"grid", "random"}
    for line in rows.values():
        off, on = (part.split() for part in line.split("|")[1:])
        # median [q25-q75] per cell: trials 95%, 99%, engine-s 95%, 99%
        off_s, on_s = float(off[6]), float(on[6])
        assert off_s > 0 and on_s > 0
        assert on_s <= off_s  # early stop never costs more on this grid


def test_search_efficiency_tables_on_a_v1_grid(tmp_path: Path) -> None:
    se = _load_script("autotune_bench_search_efficiency",
                      ROOT / "benchmarks" / "search_efficiency.py")
    grid = Grid.load(write_grid(tmp_path / "v1.jsonl"))
    space = grid.space()
    run = se.replay_study(
        "grid", 0, search_space=grid.search_space(space), grid=grid, reference=[0.0, 1000.0],
        full_hv=1.0, max_trials=20, min_trials=20,
        storage=f"sqlite:///{tmp_path / 's.db'}", log_dir=tmp_path / "logs",
    )
    assert len(run.engine_s) == len(run.hv)
    assert run.engine_s == sorted(run.engine_s)
    # 5 complete (20 s start each, as recorded) + 1 failed (20 s) + the default (no timings)
    assert run.engine_s[-1] == pytest.approx(6 * 20.0)
    table = se.cost_table({("grid", "n/a"): ([run], 20)}, ["n/a"], ["grid"], 1.0)
    assert "no ladder" in table and "engine-s 95%" in table
    # --trace: one line per counted trial, the default trial named, the others by what changed
    traced = se.trace(run, space, 1.0, "grid, seed 0").splitlines()
    assert traced[0] == "trace of grid, seed 0:" and len(traced) == 1 + len(run.hv)
    assert "the engine-default trial" in traced[1]
    assert sum("=" in line for line in traced[2:]) >= len(run.hv) - 2  # at most the centre not


# ---- the measuring script's writer --------------------------------------------------------------


def test_measure_grid_rows_load_as_v2(grid: Grid, tmp_path: Path) -> None:
    """What measure_grid writes for a trial whose ladder ran is a line Grid.load reads back,
    levels and timings included."""
    mg = _load_script("autotune_bench_measure_grid", ROOT / "benchmarks" / "measure_grid.py")
    space = grid.space()
    row = grid.by_params(BEST)
    ladder = run_ladder(lambda load: row.level_at(load).metrics, space.ladder, space.slos, 0.0,
                        extend=False)
    outcome = TrialOutcome(state="complete", metrics={**row.metrics, **ladder.as_metrics(1, None),
                                                      "bad": math.nan},
                           flags=row.flags, timings=dict(row.timings),
                           measurements=[{"repeat": 0}, *ladder.records()])
    line = mg.grid_row(BEST, False, outcome, 50.0)
    assert [lv["load"] for lv in line["levels"]] == [2.0, 8.0, 32.0]
    assert "bad" not in line["metrics"]
    path = tmp_path / "written.jsonl"
    path.write_text(json.dumps({"meta": {"space": _lines()[0]["meta"]["space"]}}) + "\n"
                    + json.dumps(line) + "\n")
    written = Grid.load(path).rows[0]
    assert [lv.metrics for lv in written.levels] == [lv.metrics for lv in row.levels]
    assert [lv.benchmark_s for lv in written.levels] == pytest.approx(
        [lv.benchmark_s for lv in row.levels], abs=1e-3)


def test_measure_grid_measures_disturbed_rows_again(tmp_path: Path) -> None:
    """A resumed run sets the rows measured under a competing load aside (kept in a file of
    their own) and counts them as not measured; the others and the meta line stay."""
    mg = _load_script("autotune_bench_measure_grid", ROOT / "benchmarks" / "measure_grid.py")
    path = tmp_path / "grid.jsonl"
    rows = [{"meta": {"space": {}}},
            {"params": {"max_num_seqs": 4}, "state": "complete", "disturbed": False},
            {"params": {"max_num_seqs": 8}, "state": "complete", "disturbed": True},
            {"params": {"max_num_seqs": 16}, "default": True, "state": "complete"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert mg.set_aside_disturbed(path) == 1
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == [rows[0], rows[1], rows[3]]
    aside = path.with_name("grid.jsonl.disturbed.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in aside] == [rows[2]]
    assert mg.done_keys(path) == {mg.key_of(rows[1]["params"], False),
                                  mg.key_of(rows[3]["params"], True)}
    assert mg.set_aside_disturbed(path) == 0  # nothing left to move; the file unchanged
    assert [json.loads(line) for line in path.read_text().splitlines()] == kept


def test_measure_grid_leaves_out_default_axes_the_space_lacks() -> None:
    """A space without prefix caching as a parameter is measured without that default axis;
    an axis named on the command line still has to be a parameter (checked later)."""
    mg = _load_script("autotune_bench_measure_grid", ROOT / "benchmarks" / "measure_grid.py")
    parameters = {"quantization": {}, "max_num_seqs": {}, "speculative_method": {}}
    axes = mg.parse_axes(["max_num_seqs=8,32"], mg.LADDER_AXES, parameters)
    assert axes == {"quantization": ["none", "fp8"], "max_num_seqs": [8, 32], "draft": [0]}
    assert "enable_prefix_caching" in mg.parse_axes([], mg.LADDER_AXES)  # no space: all
    assert mg.parse_axes(["nonsense=1"], mg.LADDER_AXES, parameters)["nonsense"] == [1]


def test_measure_grid_refuses_a_bad_setup_before_writing(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "measure_grid.py"
    space = ROOT / "search_spaces" / "quickstart-cpu.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(space.read_text().replace("requests_per_level: 48", "requests_per_level: 0"))
    cases = [
        (space, ["--axis", "nonsense=1,2"], "nonsense is not a parameter of the space"),
        (space, ["--axis", "max_num_seqs"], "expected NAME=V1,V2"),
        (space, ["--input-tokens", "64"], "has no input_tokens"),
        (bad, [], "requests_per_level"),
    ]
    # The script's imports take seconds: the four refusals run at once, each with its own --out.
    runs = []
    for i, (path, extra, message) in enumerate(cases):
        out = tmp_path / f"grid-{i}.jsonl"
        process = subprocess.Popen([sys.executable, str(script), "--space", str(path), "--out",
                                    str(out), *extra], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        runs.append((process, out, message))
    try:
        for process, out, message in runs:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode != 0 and message in stderr, stderr
            assert not out.exists()
    finally:
        for process, _, _ in runs:
            if process.poll() is None:
                process.kill()
                process.communicate()


def test_replay_reproduces_the_live_ladders_curve_metrics() -> None:
    """tests/fixtures/ladder-grid-measured.jsonl: two configurations measured by
    benchmarks/measure_grid.py with the real vLLM CPU engine (the ladder space cut to levels
    [2, 8] of 8 requests). The curve metrics the live trial recorded are what the replay
    derives from the levels it stored; with early stop the default trial, whose first level
    missed the SLOs, stops there."""
    grid = Grid.load(ROOT / "tests" / "fixtures" / "ladder-grid-measured.jsonl")
    space = grid.space()
    curve = ("capacity_rps", "interactivity_at_capacity", "throughput_per_device_at_capacity",
             "capacity_is_lower_bound", "ladder_levels_run")
    for row in grid.rows:
        outcome = ReplayTrialRunner(space, grid).run(1, row.params, is_default=row.default)
        for key in curve:
            assert outcome.metrics[key] == pytest.approx(row.metrics.get(key, math.nan),
                                                         nan_ok=True), key
        # every level replayed: the engine-seconds the live trial recorded, ladder included
        # (its levels' own seconds leave out the pauses between them)
        assert outcome.timings[ENGINE_S] == pytest.approx(
            sum(row.timings[k] for k in ("startup_s", "warmup_s", "benchmark_s", "ladder_s",
                                         "teardown_s")))
        assert row.timings["ladder_s"] > sum(level.benchmark_s for level in row.levels)
    default = grid.default_row()
    assert default is not None and default.metrics["capacity_rps"] == 0.0
    stopped = ReplayTrialRunner(early(space, True), grid).run(1, default.params, is_default=True)
    assert stopped.metrics["ladder_levels_run"] == 1 and stopped.metrics["capacity_rps"] == 0.0
