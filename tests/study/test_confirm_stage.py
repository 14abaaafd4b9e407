"""The confirm stage at the end of a study, on the replay engine (whole studies in seconds):
its share of the budget, its picks, the fresh runs it keeps, the report's means, a resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autotune.replay import Grid, ReplayTrialRunner
from autotune.results import load_report
from autotune.space.model import Space
from autotune.space.sections import ConfirmStageSpec
from autotune.store import open_catalog
from autotune.study import run_study
from autotune.study.confirm import STAGE_KEY, stage_reserve
from autotune.testing.replay_grid import write_grid
from autotune.trial import TrialRunner
from autotune.trial_state import TrialState


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def study_started(self, name: str, done: int, total: int) -> None:
        self.events.append(("study", done, total))

    def trial_started(self, index: int, total: int, number: int, params: dict[str, Any]) -> None:
        self.events.append(("started", number))

    def phase(self, phase: str) -> None:
        pass

    def trial_finished(self, number: int, outcome: Any) -> None:
        self.events.append(("finished", number))

    def confirm_started(self, done: int, total: int, number: int, params: dict[str, Any],
                        why: str) -> None:
        self.events.append(("confirm", done, total, number, why))

    def confirm_finished(self, number: int, outcome: Any) -> None:
        self.events.append(("confirmed", number, outcome.state))

    def notice(self, text: str) -> None:
        self.events.append(("notice", text))


@pytest.fixture
def grid(tmp_path: Path) -> Grid:
    return Grid.load(write_grid(tmp_path / "grid.jsonl"))


def _space(grid: Grid, **stage: Any) -> Space:
    base = grid.search_space(grid.space())
    return base.model_copy(update={"search": base.search.model_copy(update={
        "sampler": "random", "seed": 0, "confirm_stage": ConfirmStageSpec(**stage)})})


def test_the_reserve_never_leaves_the_search_fewer_than_its_minimum() -> None:
    stage = ConfirmStageSpec()  # servers 2, 1 per objective, the knee, 4 search trials
    assert stage_reserve(stage, 2, 20) == 4  # defaults, best of each objective, the knee
    assert stage_reserve(stage, 2, 7) == 3  # the quickstart: 4 search trials, 3 fresh servers
    assert stage_reserve(stage, 2, 4) == 0
    assert stage_reserve(stage, 1, 20) == 2  # one objective: no knee
    assert stage_reserve(ConfirmStageSpec(servers=3), 2, 20) == 8
    assert stage_reserve(ConfirmStageSpec(enabled=False), 2, 20) == 0


def test_the_stage_confirms_the_picks_inside_the_budget_and_a_resume_does_not_redo_it(
    grid: Grid, tmp_path: Path,
) -> None:
    space, url, reporter = _space(grid), f"sqlite:///{tmp_path / 's.db'}", Recorder()
    runner = ReplayTrialRunner(space, grid)
    result = run_study(space, url, trials=9, reporter=reporter, trial_runner=runner,
                       log_dir=tmp_path / "logs")
    run, report = result.run, result.report
    counted = sum(TrialState(t.state).counts_toward_budget for t in report.trials)
    assert counted == 5 and run.trials_run == 5  # the search's share: 9 - 4
    assert 1 <= run.confirm_starts <= 4  # picks that are one configuration are confirmed once
    confirms = [e for e in reporter.events if e[0] == "confirm"]
    assert [e[1] for e in confirms] == list(range(run.confirm_starts))
    assert {e[2] for e in confirms} == {run.confirm_starts}
    assert confirms[0][3] == report.default_number and confirms[0][4] == "the defaults"
    fresh = open_catalog(url).fresh_runs("tiny")
    stage_runs = [r for r in fresh if r.source.startswith("confirm stage: trial")]
    assert len(stage_runs) == run.confirm_starts
    assert any(r.key == STAGE_KEY and "finished (budget 9)" in r.source for r in fresh)
    # Every confirmed configuration now rests on 2 fresh servers, the defaults included; the
    # replay measures the same figures again, so the means are the first runs'.
    confirmed = {e[3] for e in confirms}
    for number in confirmed:
        record = report.trial(number)
        assert record is not None and report.servers_of(record) == 2
        first = report.first_runs[number]
        assert first and all(record.metrics[m] == pytest.approx(v) for m, v in first.items())
    assert report.to_json().count('"servers": 2') >= len(confirmed)

    # A resume of the finished study neither searches nor confirms again.
    again = run_study(space, url, trials=9, reporter=Recorder(),
                      trial_runner=ReplayTrialRunner(space, grid), log_dir=tmp_path / "logs")
    assert again.run.trials_run == 0 and again.run.confirm_starts == 0
    assert len(open_catalog(url).fresh_runs("tiny")) == len(fresh)


def test_no_confirm_stage_gives_the_search_the_whole_budget(grid: Grid, tmp_path: Path) -> None:
    space, url = _space(grid), f"sqlite:///{tmp_path / 's.db'}"
    result = run_study(space, url, trials=6, reporter=Recorder(), confirm_stage=False,
                       trial_runner=ReplayTrialRunner(space, grid), log_dir=tmp_path / "logs")
    assert result.run.confirm_starts == 0 and result.run.trials_run == 6
    assert open_catalog(url).fresh_runs("tiny") == []
    off = _space(grid, enabled=False)
    assert off.search.confirm_stage.enabled is False
    assert Space.model_validate({**off.model_dump(mode="json"), "search": {
        "confirm_stage": False}}).search.confirm_stage.enabled is False
    assert load_report(open_catalog(url), "tiny").servers == {}


class FreshRecorder(ReplayTrialRunner):
    """The replay runner, recording each runner the confirm stage asks it for."""

    def __init__(self, space: Space, grid: Grid, log_dir: Path) -> None:
        super().__init__(space, grid, log_dir=log_dir)
        self.made: list[TrialRunner] = []

    def fresh(self, log_dir: Path) -> TrialRunner:
        runner = super().fresh(log_dir)
        self.made.append(runner)
        return runner


def test_the_stage_starts_its_fresh_servers_through_the_study_runners_fresh(
    grid: Grid, tmp_path: Path,
) -> None:
    """The stage's servers come from the study's own runner (``fresh``: a Ray study's run on
    its cluster), each with a log folder of its own, its stop event and measuring step."""
    space, url = _space(grid), f"sqlite:///{tmp_path / 's.db'}"
    runner = FreshRecorder(space, grid, tmp_path / "logs")
    result = run_study(space, url, trials=9, reporter=Recorder(), trial_runner=runner,
                       log_dir=tmp_path / "logs")
    assert result.run.confirm_starts >= 1
    assert len(runner.made) == result.run.confirm_starts
    folders = [made.log_dir for made in runner.made]
    assert folders == [tmp_path / "logs" / f"confirm-stage-9-{i + 1}"
                       for i in range(len(folders))]
    for made in runner.made:
        assert type(made) is FreshRecorder and made is not runner
        assert made.stop_event is runner.stop_event and made.measuring is runner.measuring
        assert made.launcher is runner.launcher and made.pool is runner.pool
        assert made.memory_calibration is not runner.memory_calibration
        assert any(made.log_dir.glob("trial-*.log"))  # the fresh servers' logs went there
