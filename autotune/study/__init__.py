"""A study: the proposer decides what runs next, the executor carries it out, the runner wires
them to the store and the trial runner."""

from __future__ import annotations

from autotune.study.reporter import SilentReporter, StudyReporter
from autotune.study.runner import StudyRun, StudyRunner

__all__ = ["SilentReporter", "StudyReporter", "StudyRun", "StudyRunner"]
