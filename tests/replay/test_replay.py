"""The replay engine and the hypervolume helper, on a tiny hand-made grid."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from autotune.devices import CpuSlotPool
from autotune.engines import EngineConfig, EngineFailure, EngineLauncher, RunningEngine, create
from autotune.engines.vllm import engine_config
from autotune.replay import (
    GRID_ENV,
    Grid,
    GridError,
    GridMeasurement,
    GridMiss,
    ReplayLauncher,
    ReplayTrialRunner,
)
from autotune.space.model import Space
from autotune.testing.engine_suite import EngineSuite, FailingStart
from autotune.testing.replay_grid import DEFAULT_METRICS, ROWS, write_grid
from autotune.trial_state import FailureKind

ROOT = Path(__file__).resolve().parents[2]

@pytest.fixture
def grid(tmp_path: Path) -> Grid:
    return Grid.load(write_grid(tmp_path / "grid.jsonl"))


def test_load_reads_rows_meta_and_values(grid: Grid) -> None:
    assert len(grid.rows) == 9
    assert len(grid.points) == 8
    assert grid.default_row() is not None and grid.default_row().metrics == DEFAULT_METRICS
    assert grid.values("max_num_seqs") == [8, 64]
    assert grid.values("enable_chunked_prefill") == [False, True]
    assert grid.space().parameters["max_num_seqs"].default == 64


def test_replayed_trials_return_exactly_the_recorded_metrics(grid: Grid) -> None:
    runner = ReplayTrialRunner(grid.space(), grid)
    for (seqs, budget, chunked), (state, kind, metrics) in ROWS.items():
        params = {
            "max_num_seqs": seqs,
            "max_num_batched_tokens": budget,
            "enable_chunked_prefill": chunked,
        }
        outcome = runner.run(1, params, is_default=False)
        assert outcome.state == state
        if state == "complete":
            assert outcome.metrics == metrics
            assert outcome.failure is None
            assert outcome.disturbed == (seqs == 8)
            assert outcome.timings["startup_s"] == 20.0
        else:
            assert outcome.failure is not None and outcome.failure.kind == FailureKind(kind)
            assert outcome.metrics == {}


def test_default_trial_is_told_apart_from_its_nominal_values(grid: Grid) -> None:
    """The default trial passes no swept flag: it replays the default row, not the point whose
    nominal values are written out as flags."""
    space = grid.space()
    runner = ReplayTrialRunner(space, grid)
    default = runner.run(0, space.default_params(), is_default=True)
    explicit = runner.run(1, space.default_params(), is_default=False)
    assert default.metrics == DEFAULT_METRICS
    assert explicit.metrics == ROWS[(64, 2048, True)][2]


def test_launcher_conforms_and_raises_the_recorded_failure(grid: Grid, tmp_path: Path) -> None:
    launcher = ReplayLauncher(grid)
    assert isinstance(launcher, EngineLauncher)
    space = grid.space()
    devices = CpuSlotPool(slots=1).acquire(1)
    params = {"max_num_seqs": 8, "max_num_batched_tokens": 256, "enable_chunked_prefill": True}
    engine = launcher.start(
        engine_config(space, params, is_default=False), devices, tmp_path / "t.log"
    )
    assert isinstance(engine, RunningEngine)
    assert engine.metrics == ROWS[(8, 256, True)][2]
    assert "row" in (tmp_path / "t.log").read_text()
    assert engine.alive() and engine.pids() == []
    assert engine.stop() == 0.0 and not engine.alive()

    failed = {"max_num_seqs": 64, "max_num_batched_tokens": 2048, "enable_chunked_prefill": False}
    with pytest.raises(EngineFailure) as info:
        launcher.start(engine_config(space, failed, is_default=False), devices, tmp_path / "f.log")
    assert info.value.kind == FailureKind.OUT_OF_MEMORY
    assert info.value.reason == "recorded out_of_memory"

    missing = {"max_num_seqs": 16, "max_num_batched_tokens": 256, "enable_chunked_prefill": True}
    with pytest.raises(GridMiss, match="no configuration"):
        launcher.start(
            engine_config(space, missing, is_default=False), devices, tmp_path / "m.log"
        )


def test_registered_as_replay(grid: Grid, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GRID_ENV, grid.path)
    launcher = create("replay")
    assert isinstance(launcher, ReplayLauncher) and len(launcher.grid.rows) == 9
    monkeypatch.delenv(GRID_ENV)
    with pytest.raises(GridError, match=GRID_ENV):
        create("replay")


class TestReplayLauncherConforms(EngineSuite):
    """The engine suite on the replay engine: no process, no HTTP server."""

    runs_processes = False
    serves_http = False

    @pytest.fixture
    def launcher(self, grid: Grid) -> EngineLauncher:
        return ReplayLauncher(grid)

    @pytest.fixture
    def serve_config(self, grid: Grid) -> EngineConfig:
        params = {"max_num_seqs": 8, "max_num_batched_tokens": 256, "enable_chunked_prefill": True}
        return engine_config(grid.space(), params, is_default=False)

    @pytest.fixture
    def failing_start(self, grid: Grid) -> FailingStart:
        params = {"max_num_seqs": 64, "max_num_batched_tokens": 2048,
                  "enable_chunked_prefill": False}
        row = grid.by_params(params)
        return FailingStart(engine_config(grid.space(), params, is_default=False),
                            FailureKind.OUT_OF_MEMORY, f"replayed from grid row {row.index}")


def test_the_replay_runner_is_a_trial_runner_with_the_grid_step(
    grid: Grid, tmp_path: Path
) -> None:
    runner = ReplayTrialRunner(grid.space(), grid, log_dir=tmp_path)
    assert isinstance(runner.measuring, GridMeasurement) and runner.quality is None
    phases: list[str] = []
    params = {"max_num_seqs": 8, "max_num_batched_tokens": 2048, "enable_chunked_prefill": True}
    outcome = runner.run(3, params, is_default=False, on_phase=phases.append)
    assert phases == ["waiting for devices", "starting engine", "replaying", "tearing down"]
    assert outcome.state == "complete" and outcome.metrics == ROWS[(8, 2048, True)][2]
    assert outcome.timings == {"startup_s": 20.0, "teardown_s": 0.0, "engine_s": 20.0}
    assert outcome.argv[0] == "replay" and outcome.engine_version == "replay"
    assert "row" in (tmp_path / "trial-0003.log").read_text()
    failed = {"max_num_seqs": 64, "max_num_batched_tokens": 2048, "enable_chunked_prefill": False}
    outcome = runner.run(4, failed, is_default=False)
    assert outcome.state == "failed" and outcome.failure is not None
    assert outcome.failure.kind == FailureKind.OUT_OF_MEMORY
    assert "recorded out_of_memory" in outcome.log_excerpt  # the replay's own log line


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"params": {}, "state": "done"}, "state must be one of"),
        ({"params": {}, "state": "failed"}, "needs failure_kind"),
        ({"params": {}, "state": "failed", "failure_kind": "gremlins"}, "unknown failure_kind"),
        ({"params": [], "state": "complete"}, "params must be an object"),
    ],
)
def test_bad_rows_are_refused(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(GridError, match=message):
        Grid.load(path)


def test_duplicate_configurations_are_refused(tmp_path: Path) -> None:
    row = {"params": {"max_num_seqs": 8}, "state": "complete", "metrics": {}}
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(GridError, match="the same configuration"):
        Grid.load(path)


# --- hypervolume and the replayed search -------------------------------------------------------


def _search_efficiency():
    """benchmarks/ is not a package: load the script as a module (once)."""
    name = "autotune_bench_search_efficiency"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "benchmarks" / "search_efficiency.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up while being built
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_the_oracle_counts_the_fewest_trials_default_first() -> None:
    oracle = _search_efficiency().oracle_trials
    up = ["maximize", "maximize"]
    # Against (0, 0): the default (1, 1) holds 1; with (2, 1) 2; with (1, 2) too, 3 in all. The
    # dominated (0.5, 0.5) never helps.
    points = [[2.0, 1.0], [1.0, 2.0], [0.5, 0.5]]
    assert oracle(points, [1.0, 1.0], up, [0.0, 0.0], 1.0) == 1
    assert oracle(points, [1.0, 1.0], up, [0.0, 0.0], 2.0) == 2
    assert oracle(points, [1.0, 1.0], up, [0.0, 0.0], 0.95 * 3.0) == 3
    # An infeasible default is still trial 1, and holds nothing.
    assert oracle(points, None, up, [0.0, 0.0], 2.0) == 2
    assert oracle(points, None, up, [0.0, 0.0], 3.0) == 3


def test_hypervolume_by_hand() -> None:
    hv = _search_efficiency().hypervolume
    directions = ["maximize", "minimize"]
    # Against (0, 1000): a single point (300, 950) dominates 300 × 50.
    assert hv([[300.0, 950.0]], directions, [0.0, 1000.0]) == pytest.approx(15000.0)
    # Two staircase points: 100×(1000−500) + (300−100)×(1000−950).
    two = [[100.0, 500.0], [300.0, 950.0]]
    assert hv(two, directions, [0.0, 1000.0]) == pytest.approx(50000.0 + 10000.0)
    # A dominated point and a point beyond the reference add nothing.
    assert hv([*two, [90.0, 600.0], [500.0, 1200.0]], directions, [0.0, 1000.0]) == (
        pytest.approx(60000.0)
    )
    assert hv([], directions, [0.0, 1000.0]) == 0.0
    assert hv([[2.0]], ["minimize"], [5.0]) == pytest.approx(3.0)
    # Three dimensions: two unit-offset boxes overlapping in a 1×1×1 cube.
    boxes = [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert hv(boxes, ["minimize"] * 3, [2.0, 2.0, 2.0]) == pytest.approx(4.0 + 2.0 - 1.0)


def test_the_verdict_holds_auto_to_half_of_randoms_medians_and_its_worst() -> None:
    se = _search_efficiency()

    def run(hv: list[float], seconds: float = 100.0) -> Any:
        return se.Run(hv=hv, engine_s=[seconds * (i + 1) for i in range(len(hv))])

    slow = [run([0.0] * (n - 1) + [1.0]) for n in (10, 12, 14)]  # random: 95% at 10-14
    fast = [run([0.0] * (n - 1) + [1.0]) for n in (4, 5, 6)]
    table = se.verdict_table([(Path("g.jsonl"), ({("auto", "off"): (fast, 20),
                                                  ("random", "off"): (slow, 20)}, ["off"], 1.0))])
    assert "g.jsonl (early stop off): MET" in table
    # auto's median 5 of random's 12 passes; a worst seed past random's worst does not
    late = [*fast[:2], run([0.0] * 14 + [1.0])]
    table = se.verdict_table([(Path("g.jsonl"), ({("auto", "off"): (late, 20),
                                                  ("random", "off"): (slow, 20)}, ["off"], 1.0))])
    assert "NOT MET" in table and "trials 95% worst" in table
    # never reaching the front is no pass, even against a random that never did either
    never = [run([0.0] * 20)] * 3
    table = se.verdict_table([(Path("g.jsonl"), ({("auto", "off"): (never, 20),
                                                  ("random", "off"): (never, 20)}, ["off"], 1.0))])
    assert "NOT MET" in table


def _study_kwargs(grid: Grid, tmp_path: Path, space: Space) -> dict:
    return {
        "search_space": grid.search_space(space),
        "grid": grid,
        "storage": f"sqlite:///{tmp_path / 'studies.db'}",
        "log_dir": tmp_path / "logs",
    }


def test_grid_strategy_reaches_the_full_hypervolume(grid: Grid, tmp_path: Path) -> None:
    se = _search_efficiency()
    space = grid.space()
    feasible = [
        [r.metrics["output_throughput"], r.metrics["e2e_p95_ms"]]
        for r in grid.rows
        if r.state == "complete" and r.metrics["e2e_p95_ms"] <= 1000
    ]
    reference = se.reference_point(space, [r.metrics for r in grid.rows])
    assert reference == [0.0, 1000.0]
    full = se.hypervolume(feasible, space.directions, reference)
    for kind in ("grid", "random-plain", "random", "tpe"):  # auto is GP here: slow
        run = se.replay_study(
            kind, 0, reference=reference, full_hv=full, max_trials=40, min_trials=1,
            **_study_kwargs(grid, tmp_path, space),
        )
        assert run.hv == sorted(run.hv)
        assert run.best[0] == 250.0  # the default trial comes first, and is feasible
        if kind == "grid":
            assert se.trials_to(run, 0.99, full) <= len(grid.points) + 1
        assert math.isfinite(se.best_within(run, 10))
        # Every configuration of this grid is measured at most once (only random-plain
        # re-measures): the runs that are not cut short end when the grid is exhausted.
        if kind != "random-plain":
            assert len(run.hv) <= len(grid.points) + 1


def test_a_configuration_the_grid_lacks_is_an_error(grid: Grid, tmp_path: Path) -> None:
    se = _search_efficiency()
    space = grid.space()
    sparse = Grid(
        [r for r in grid.rows if r.params.get("max_num_seqs") != 8 or r.default],
        grid.meta,
        grid.path,
    )
    kwargs = _study_kwargs(grid, tmp_path, space)  # the search space still offers 8
    kwargs["grid"] = sparse
    with pytest.raises(GridMiss, match="holds no configuration"):
        se.replay_study(
            "random", 0, reference=[0.0, 1000.0], full_hv=1.0, max_trials=20, min_trials=20,
            **kwargs,
        )
