"""``Catalog`` on a SQL database, and what the SQL store hands out: autotune's rows as
``StudyView``/``TrialView``, Optuna's trials as ``TrialSummary`` (read-only helpers of the SQL
store)."""

from __future__ import annotations

import json
import threading
from dataclasses import fields

import optuna
import sqlalchemy
from optuna.trial import TrialState as OptunaState

from autotune.space import Configuration
from autotune.store.attrs import (
    CONFIG_ATTR,
    DEFAULT_ATTR,
    FAILURE_ATTR,
    FRESH_RUNS_ATTR,
    STATE_ATTR,
)
from autotune.store.base import FreshRun, TrialSummary
from autotune.store.db import repository
from autotune.store.db.models import StudyRecord, TrialRecord
from autotune.store.db.session import current_revision, has_schema, head_revision
from autotune.store.values import StudyView, TrialView
from autotune.trial_state import FailureKind, TrialState


class RdbCatalog:
    def __init__(self, url: str) -> None:
        self.url = url
        self._optuna: optuna.storages.RDBStorage | None = None
        self._lock = threading.Lock()

    def has_schema(self) -> bool:
        return has_schema(self.url)

    def list_studies(self) -> list[StudyView]:
        return [study_view(r) for r in repository.list_studies(url=self.url)]

    def get_study(self, name: str) -> StudyView | None:
        record = repository.get_study(url=self.url, name=name)
        return study_view(record) if record is not None else None

    def list_trials(self, name: str, *, after: int | None = None) -> list[TrialView]:
        return [trial_view(r)
                for r in repository.list_trials(url=self.url, study_name=name, after=after)]

    def optuna_study(self, name: str) -> optuna.Study:
        """Optuna's view, through one storage opened once without creating tables or stamping
        versions (a catalog only reads: the dashboard runs on it)."""
        with self._lock:
            if self._optuna is None:
                if not _has_optuna_tables(self.url):  # autotune's tables alone: no study
                    raise KeyError(f"no Optuna study {name!r} in {self.url}")
                self._optuna = optuna.storages.RDBStorage(
                    self.url, skip_table_creation=True, skip_compatibility_check=True)
        return optuna.load_study(study_name=name, storage=self._optuna)

    def fresh_runs(self, name: str) -> list[FreshRun]:
        try:
            attrs = self.optuna_study(name).user_attrs
        except KeyError:
            return []
        return [FreshRun.from_dict(r) for r in attrs.get(FRESH_RUNS_ATTR, [])]

    def schema_behind(self) -> bool:
        try:
            return current_revision(self.url) != head_revision()
        except Exception:  # noqa: BLE001 - the storage cannot even be asked: say no more
            return False


def _has_optuna_tables(url: str) -> bool:
    engine = sqlalchemy.create_engine(url)
    try:
        return sqlalchemy.inspect(engine).has_table("version_info")
    finally:
        engine.dispose()


_STUDY_FIELDS = tuple(f.name for f in fields(StudyView))
_TRIAL_FIELDS = tuple(f.name for f in fields(TrialView))


def study_view(record: StudyRecord) -> StudyView:
    return StudyView(**{name: getattr(record, name) for name in _STUDY_FIELDS})


def trial_view(record: TrialRecord) -> TrialView:
    return TrialView(**{name: getattr(record, name) for name in _TRIAL_FIELDS})


def summary_of(trial: optuna.trial.FrozenTrial) -> TrialSummary:
    key = trial.user_attrs.get(CONFIG_ATTR)
    state = trial.user_attrs.get(STATE_ATTR)
    kind = trial.user_attrs.get(FAILURE_ATTR)
    return TrialSummary(
        number=trial.number,
        configuration=(
            Configuration(json.loads(key), bool(trial.user_attrs.get(DEFAULT_ATTR)))
            if key is not None else None
        ),
        running=trial.state == OptunaState.RUNNING,
        state=TrialState(state) if state is not None else None,
        failure_kind=FailureKind(kind) if kind is not None else None,
        values=tuple(trial.values) if trial.values is not None else None,
        constraints=dict(trial.constraints),
    )
