"""The library entry point (``autotune.run_study``, ``autotune.create_study``) on the replay
engine: whole studies in seconds, no engine started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import autotune
from autotune.errors import SpaceError
from autotune.replay import Grid, ReplayTrialRunner
from autotune.space.model import Space
from autotune.store import open_catalog
from autotune.study import StudyResult, create_study, run_study
from autotune.study.entrypoint import device_pool, slots_for
from autotune.testing.replay_grid import SPACE, write_grid
from autotune.trial_state import TrialState


class Recorder:
    """A StudyReporter that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def study_started(self, name: str, done: int, total: int) -> None:
        self.events.append(("study", name, done, total))

    def trial_started(self, index: int, total: int, number: int, params: dict[str, Any]) -> None:
        self.events.append(("started", number))

    def phase(self, phase: str) -> None:
        pass

    def trial_finished(self, number: int, outcome: Any) -> None:
        self.events.append(("finished", number, outcome.state))

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


@pytest.fixture
def space(grid: Grid) -> Space:
    return grid.search_space(grid.space())


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


def _counted(result: StudyResult) -> int:
    """The study's trials that count toward its budget."""
    return sum(TrialState(t.state).counts_toward_budget for t in result.report.trials)


def test_run_study_runs_the_trials_and_returns_the_report(
    grid: Grid, space: Space, tmp_path: Path
) -> None:
    # Budgets of 3 then 5 of the grid's 8 configurations: the space's sampler is a Gaussian
    # process, whose suggestions (after its 8 random ones, repeated suggestions included) cost
    # seconds each; 4 then 6 took ~12 suggestions, so two GP ones (10-40 s) for nothing tested.
    reporter = Recorder()
    result = run_study(space, _url(tmp_path), trials=3, reporter=reporter,
                       log_dir=tmp_path / "logs", trial_runner=ReplayTrialRunner(space, grid))
    assert isinstance(result, StudyResult)
    assert result.name == "tiny"  # the space's name
    assert result.storage == _url(tmp_path)
    assert result.run.trials_run == 3 and not result.interrupted
    assert result.stuck_devices == [] and result.hardware.startswith("CPU")
    assert _counted(result) == 3  # besides, a repeated configuration is reused, not run
    assert result.report.trials[0].params == space.default_params()  # the default comes first
    assert reporter.events[0] == ("study", "tiny", 0, 3)
    assert len([e for e in reporter.events if e[0] == "finished"]) == 3

    # The same name again resumes the study: two more trials make five (here the sampler
    # repeats measured configurations: reused, they do not count).
    # (the confirm stage would take 1 of the 5: this test is about resuming, so it is off)
    again = run_study(space, _url(tmp_path), trials=5, log_dir=tmp_path / "logs",
                      confirm_stage=False,
                      trial_runner=ReplayTrialRunner(space, grid))
    assert again.run.trials_run == 2 and _counted(again) == 5


def test_the_budget_defaults_to_the_spaces_and_a_name_can_be_given(
    grid: Grid, space: Space, tmp_path: Path
) -> None:
    small = space.model_copy(update={"search": space.search.model_copy(update={"trials": 3})})
    result = run_study(small, _url(tmp_path), name="other", log_dir=tmp_path / "logs",
                       trial_runner=ReplayTrialRunner(small, grid))
    assert result.name == "other" and result.run.trials_run == 3
    assert [s.name for s in open_catalog(_url(tmp_path)).list_studies()] == ["other"]


def test_warm_start_configurations_run_right_after_the_default(
    grid: Grid, space: Space, tmp_path: Path
) -> None:
    seed = {"max_num_seqs": 8, "max_num_batched_tokens": 2048, "enable_chunked_prefill": False}
    result = run_study(space, _url(tmp_path), trials=2, warm_start=[seed],
                       log_dir=tmp_path / "logs", trial_runner=ReplayTrialRunner(space, grid))
    assert [t.params for t in result.report.trials] == [space.default_params(), seed]


def test_create_study_then_workers_join_it(grid: Grid, space: Space, tmp_path: Path) -> None:
    url = _url(tmp_path)
    assert create_study(space, url, name="shared", trials=3, devices="cpu:0") == "shared"
    assert open_catalog(url).list_trials("shared") == []  # queued, nothing run

    first = run_study(space, url, name="shared", join=True, max_trials_here=1,
                      log_dir=tmp_path / "logs", trial_runner=ReplayTrialRunner(space, grid))
    assert first.run.trials_run == 1
    # A joining worker keeps the recorded budget of 3, whatever ``trials`` says.
    rest = run_study(space, url, name="shared", join=True, trials=50,
                     log_dir=tmp_path / "logs", trial_runner=ReplayTrialRunner(space, grid))
    assert rest.run.trials_run == 2 and _counted(rest) == 3


def test_a_process_whose_trials_fail_with_host_faults_stops_claiming(
    space: Space, tmp_path: Path
) -> None:
    # Issue 24, item 6: every configuration but the defaults dies of a fault of this machine
    # (host_fault: SIGILL from a kernel the CPU lacks). After 2 in a row this process stops
    # claiming, instead of burning the whole budget; the crash model learns nothing of them.
    import json

    path = write_grid(tmp_path / "grid.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows[1:]:
        if not row.get("default"):
            row.update(state="failed", failure_kind="host_fault", metrics={},
                       failure_reason="engine killed by SIGILL")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    grid = Grid.load(path)
    result = run_study(space, _url(tmp_path), trials=6, confirm_stage=False,
                       log_dir=tmp_path / "logs", trial_runner=ReplayTrialRunner(space, grid))
    assert result.run.host_problem is not None
    assert result.run.host_problem.startswith("2 trials in a row failed with host_fault")
    faults = [t for t in result.report.trials if t.failure_kind == "host_fault"]
    assert len(faults) == 2 and result.run.trials_run == 3  # the defaults, then 2 faults
    assert not any(t.failure_kind == "invalid_config" for t in result.report.trials)


def test_a_space_path_is_loaded_and_checked(space: Space, tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    # Running checks the model path (it does not exist): nothing is written.
    with pytest.raises(SpaceError, match="model"):
        run_study(path, _url(tmp_path), devices="cpu:0")
    assert not (tmp_path / "studies.db").exists()
    # Creating a study for workers elsewhere does not: the path may be theirs alone.
    assert create_study(path, _url(tmp_path), devices="cpu:0") == "tiny"
    facts = open_catalog(_url(tmp_path)).get_study("tiny")
    assert facts is not None and facts.space_path == str(path)
    assert facts.space_yaml == path.read_text()


def test_device_pool_and_slots(space: Space) -> None:
    pool = device_pool(space, "cpu:0")
    assert pool.describe().startswith("CPU") and pool.slots == 1
    assert slots_for(pool, None) == pool.slots and slots_for(pool, 5) == pool.slots
    with pytest.raises(ValueError):
        device_pool(space, "tpu")


def test_import_autotune_stays_light_and_exposes_the_entry_point() -> None:
    code = ("import sys, autotune; "
            "print(sorted(m for m in ('optuna', 'autotune.study', 'sqlalchemy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
    assert autotune.run_study is run_study and autotune.create_study is create_study
    assert autotune.StudyResult is StudyResult
    with pytest.raises(AttributeError):
        autotune.no_such_thing  # noqa: B018
