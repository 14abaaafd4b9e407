"""A study: the proposer decides what runs next, the executor carries it out, the runner wires
them to the store and the trial runner; ``run_study`` is the library's entry point to all of
it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.lazy import lazy_attributes

if TYPE_CHECKING:
    from autotune.study.entrypoint import StudyResult, create_study, run_study
    from autotune.study.reporter import SilentReporter, StudyReporter
    from autotune.study.runner import StudyRun, StudyRunner

# Each name's module, imported on first use (autotune.lazy): the runner pulls Optuna in, the
# reporter does not.
_HOMES = {
    "SilentReporter": "autotune.study.reporter",
    "StudyReporter": "autotune.study.reporter",
    "StudyResult": "autotune.study.entrypoint",
    "StudyRun": "autotune.study.runner",
    "StudyRunner": "autotune.study.runner",
    "create_study": "autotune.study.entrypoint",
    "run_study": "autotune.study.entrypoint",
}

__all__ = [
    "SilentReporter",
    "StudyReporter",
    "StudyResult",
    "StudyRun",
    "StudyRunner",
    "create_study",
    "run_study",
]

__getattr__ = lazy_attributes(__name__, _HOMES)
