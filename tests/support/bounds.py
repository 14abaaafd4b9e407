"""A replayed ladder study whose default trial held every load level (its capacity a lower
bound) beside two trials the ladder bracketed: for the tests of the "≥"/"≤" marks
(``autotune.metrics.bound_mark``) in every renderer. Built without vLLM, by the replay engine
over tests/fixtures/ladder-grid.jsonl."""

from __future__ import annotations

from pathlib import Path

NAME = "bounds"
GRID = Path(__file__).resolve().parents[1] / "fixtures" / "ladder-grid.jsonl"
# Both bracketed: capacity 9 and 1.5 req/s, against the defaults' ≥ 36.
EXACT = [{"max_num_seqs": 16, "enable_prefix_caching": True},
         {"max_num_seqs": 16, "enable_prefix_caching": False}]


def bound_study_url(folder: Path) -> str:
    """The study's storage URL (a SQLite file in ``folder``): trial 0 the vLLM defaults, a
    lower bound; trials 1 and 2 the ``EXACT`` configurations."""
    from autotune.replay import Grid, ReplayTrialRunner
    from autotune.study import SilentReporter, StudyRunner

    grid = Grid.load(GRID)
    space = grid.search_space(grid.space())
    runner = ReplayTrialRunner(space, grid)
    url = f"sqlite:///{folder / 'bounds.db'}"
    study = StudyRunner.create(
        space, name=NAME, storage=url, launcher=runner.launcher, pool=runner.pool,
        log_dir=folder, reporter=SilentReporter(), warm_start=EXACT, runner=runner)
    study.run(n_trials=3)
    return url
