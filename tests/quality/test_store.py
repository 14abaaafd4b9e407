"""The study-stored reference: written once by the default trial's worker, read by every one."""

from __future__ import annotations

from pathlib import Path

import optuna

from autotune.quality.probe import Reference, ReferenceItem
from autotune.quality.store import REFERENCE_ATTR, reference_state, store_reference
from autotune.study import DEFAULT_ATTR


def test_reference_lifecycle_across_workers(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    mine = optuna.create_study(study_name="s", storage=url)
    other = optuna.load_study(study_name="s", storage=url)  # another worker's handle
    assert reference_state(other, DEFAULT_ATTR) == (None, False)  # nothing to wait for

    mine.enqueue_trial({"x": 1.0}, user_attrs={DEFAULT_ATTR: True})
    # Only waiting: its retry may be this very worker's to run, so nothing to wait for yet.
    assert reference_state(other, DEFAULT_ATTR) == (None, False)
    trial = mine.ask()
    trial.suggest_float("x", 0, 2)
    assert reference_state(other, DEFAULT_ATTR) == (None, True)  # running: wait for it

    reference = Reference("fp", [ReferenceItem([4, 5, 1], [4, 5, 1], [-0.1, -0.2, -0.01])], 0.9, 0)
    store_reference(mine, reference)
    mine.tell(trial, 1.0)
    found, pending = reference_state(other, DEFAULT_ATTR)
    assert not pending and found is not None
    assert found.to_dict() == reference.to_dict()
    assert optuna.load_study(study_name="s", storage=url).user_attrs[REFERENCE_ATTR]["trial"] == 0


def test_a_failed_default_trial_leaves_nothing_to_wait_for(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.enqueue_trial({"x": 1.0}, user_attrs={DEFAULT_ATTR: True})
    trial = study.ask()
    trial.suggest_float("x", 0, 2)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert reference_state(study, DEFAULT_ATTR) == (None, False)
