"""The study's reference outputs, kept as an Optuna study user attribute.

Every worker of a study (threads or processes, SQLite or PostgreSQL) reads the same reference
from the study's storage; it is written once, by the worker that ran the default trial, before
that trial is told.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from autotune.quality.probe import Reference

REFERENCE_ATTR = "autotune:quality_reference"


def store_reference(study: Any, reference: Reference) -> None:
    study.set_user_attr(REFERENCE_ATTR, reference.to_dict())


def reference_state(study: Any, default_attr: str) -> tuple[Reference | None, bool]:
    """(The stored reference or None, whether a default trial is running right now).

    A default trial only *waiting* to run does not count: its retry (after its worker died)
    may have to be run by the very worker that is asking, which must not wait for itself."""
    attrs = study._storage.get_study_user_attrs(study._study_id)  # fresh, not a cached copy
    data = attrs.get(REFERENCE_ATTR)
    if data is not None:
        return Reference.from_dict(data), False
    pending = any(
        t.user_attrs.get(default_attr) and t.state == TrialState.RUNNING
        for t in study.get_trials(deepcopy=False)
    )
    return None, pending
