"""The study loop's search policy on the replay engine: nothing measured twice, crash learning."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import optuna

from autotune.replay import Grid, ReplayTrialRunner
from autotune.space.model import Space
from autotune.space.sections import ConfirmStageSpec
from autotune.store import summary_of
from autotune.store.attrs import STATE_ATTR
from autotune.store.db import repository
from autotune.study import SilentReporter, StudyRunner
from autotune.testing.replay_grid import write_grid
from autotune.trial import TrialOutcome


class Recorder(SilentReporter):
    def __init__(self) -> None:
        self.launched: list[str] = []
        self.notices: list[str] = []

    def notice(self, text: str) -> None:
        self.notices.append(text)

    def trial_finished(self, number: int, outcome: TrialOutcome) -> None:
        self.launched.append(json.dumps(outcome.flags, sort_keys=True))


class SlowReplay(ReplayTrialRunner):
    def run(self, *args: Any, **kwargs: Any) -> TrialOutcome:
        time.sleep(0.3)
        return super().run(*args, **kwargs)


def _study(
    tmp_path: Path, *, sampler: str, trials: int, parallel: int = 1, slow: bool = False,
    **search: Any,
) -> tuple[StudyRunner, Recorder, str]:
    grid = Grid.load(write_grid(tmp_path / "grid.jsonl"))
    base = grid.search_space(grid.space())
    space: Space = base.model_copy(update={"search": base.search.model_copy(
        update={"sampler": sampler, "seed": 0, "trials": trials,
                # these tests count the search's engine starts: no confirm stage
                "confirm_stage": ConfirmStageSpec(enabled=False), **search})})
    runner = (SlowReplay if slow else ReplayTrialRunner)(space, grid)
    recorder = Recorder()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = StudyRunner.create(
        space, name="s", storage=storage, launcher=runner.launcher, pool=runner.pool,
        log_dir=tmp_path / "logs", reporter=recorder, runner=runner,
    )
    study.run(n_trials=trials, parallel=parallel)
    return study, recorder, storage


def test_no_configuration_is_measured_twice_and_the_study_ends_when_all_are(
    tmp_path: Path,
) -> None:
    _, recorder, storage = _study(tmp_path, sampler="tpe", trials=40, crash_learning=False)
    # 8 grid points + the default trial (whose flags differ: it passes none): all measured
    # once, then the study stops instead of running a configuration again.
    assert len(recorder.launched) == len(set(recorder.launched)) == 9
    assert any("every configuration of the space is measured" in n for n in recorder.notices)
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    reused = [t for t in trials if t.user_attrs.get(STATE_ATTR) == "reused"]
    assert reused and not any(summary_of(t).counts_toward_budget for t in reused)
    records = {r.number: r for r in repository.list_trials(url=storage, study_name="s")}
    for t in reused:
        record = records[t.number]
        assert record.state == "reused"
        assert record.failure_reason.startswith("the same configuration as trial ")
        source = int(record.failure_reason.split()[5].rstrip(":"))
        assert records[source].params == record.params
        assert list(t.values) == list(trials[source].values)  # told the measured result


def test_remeasure_runs_repeated_suggestions_again(tmp_path: Path) -> None:
    _, recorder, _ = _study(
        tmp_path, sampler="random", trials=20, remeasure=True, crash_learning=False
    )
    assert len(recorder.launched) == 20
    assert len(set(recorder.launched)) < 20


def test_crash_learning_skips_predicted_failures_visibly(tmp_path: Path) -> None:
    _, recorder, storage = _study(tmp_path, sampler="random", trials=40)
    records = repository.list_trials(url=storage, study_name="s")
    skipped = [r for r in records if r.state == "skipped"]
    assert skipped, "the grid's failed and rejected configurations train the model"
    for record in skipped:
        assert record.failure_reason.startswith("predicted to fail: P(engine starts)")
        assert not record.feasible
    assert len(recorder.launched) == len(set(recorder.launched))


def test_parallel_slots_never_run_one_configuration_twice(tmp_path: Path) -> None:
    _, recorder, storage = _study(
        tmp_path, sampler="random", trials=40, parallel=2, slow=True, crash_learning=False
    )
    assert len(recorder.launched) == len(set(recorder.launched)) == 9
    states = {r.state for r in repository.list_trials(url=storage, study_name="s")}
    assert states <= {"complete", "failed", "rejected", "reused"}
