"""A study: the proposer decides what runs next, the executor carries it out, the runner wires
them to the store and the trial runner; ``run_study`` is the library's entry point to all of
it."""

from __future__ import annotations

from autotune.study.entrypoint import StudyResult, create_study, run_study
from autotune.study.reporter import SilentReporter, StudyReporter
from autotune.study.runner import StudyRun, StudyRunner

__all__ = [
    "SilentReporter",
    "StudyReporter",
    "StudyResult",
    "StudyRun",
    "StudyRunner",
    "create_study",
    "run_study",
]
