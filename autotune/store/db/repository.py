"""Reads and writes of autotune's tables. Keyword-only functions, one short transaction each."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select

from autotune.store.db.models import StudyRecord, TrialRecord
from autotune.store.db.session import session_factory


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def json_safe(value: Any) -> Any:
    """What PostgreSQL accepts (SQLite lets both by): NaN and infinities become null, and a NUL
    character (a crashed engine's log can hold some) becomes U+FFFD, the replacement character:
    PostgreSQL's text and JSON cannot hold it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _trial(study_name: str, number: int) -> Select[tuple[TrialRecord]]:
    return select(TrialRecord).where(
        TrialRecord.study_name == study_name, TrialRecord.number == number
    )


def save_study(
    *,
    url: str,
    name: str,
    space_yaml: str,
    space_path: str,
    model: str,
    hardware: str,
    objectives: list[dict[str, Any]],
    slos: dict[str, float],
    trial_budget: int | None = None,
) -> None:
    """Create the study record, or refresh it when the study is resumed."""
    with session_factory(url)() as session, session.begin():
        record = session.scalar(select(StudyRecord).where(StudyRecord.name == name))
        if record is None:
            record = StudyRecord(name=name, created_at=_now())
            session.add(record)
        record.space_yaml = space_yaml  # kept byte for byte: workers pin its hash
        record.space_path = json_safe(space_path)
        record.model = json_safe(model)
        record.hardware = json_safe(hardware)
        record.objectives = json_safe(objectives)
        record.slos = json_safe(slos)
        if trial_budget is not None:
            record.trial_budget = trial_budget
        record.updated_at = _now()


def get_study(*, url: str, name: str) -> StudyRecord | None:
    with session_factory(url)() as session:
        return session.scalar(select(StudyRecord).where(StudyRecord.name == name))


def list_studies(*, url: str) -> list[StudyRecord]:
    with session_factory(url)() as session:
        return list(session.scalars(select(StudyRecord).order_by(StudyRecord.created_at)))


def record_trial(
    *,
    url: str,
    study_name: str,
    number: int,
    optuna_trial_id: int,
    params: dict[str, Any],
    is_default: bool,
    host: str,
    state: str,
    retry_of: int | None = None,
    finished: bool = False,
    **fields: Any,
) -> None:
    """Create (or reset) one trial's row in ``state``, with ``fields`` set, in one transaction."""
    with session_factory(url)() as session, session.begin():
        record = session.scalar(_trial(study_name, number))
        if record is None:
            record = TrialRecord(study_name=study_name, number=number)
            session.add(record)
        record.optuna_trial_id = optuna_trial_id
        record.state = state
        record.params = json_safe(params)
        record.is_default = is_default
        record.retry_of = retry_of
        record.host = json_safe(host)
        record.metrics = {}
        record.violations = {}
        record.engine_command = []
        record.engine_flags = {}
        record.started_at = _now()
        _set_fields(record, fields)
        if finished:
            record.finished_at = record.started_at
        session.query(StudyRecord).filter(StudyRecord.name == study_name).update(
            {StudyRecord.updated_at: _now()}
        )


def start_trial(
    *,
    url: str,
    study_name: str,
    number: int,
    optuna_trial_id: int,
    params: dict[str, Any],
    is_default: bool,
    host: str,
    retry_of: int | None = None,
) -> None:
    record_trial(
        url=url, study_name=study_name, number=number, optuna_trial_id=optuna_trial_id,
        params=params, is_default=is_default, host=host, retry_of=retry_of, state="running",
    )


def _set_fields(record: TrialRecord, fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        if not hasattr(TrialRecord, key):
            raise AttributeError(f"TrialRecord has no column {key!r}")
        setattr(record, key, json_safe(value))


def update_trial(*, url: str, study_name: str, number: int, **fields: Any) -> None:
    """Set columns of one trial; ``finished=True`` also stamps ``finished_at``."""
    finished = fields.pop("finished", False)
    with session_factory(url)() as session, session.begin():
        record = session.scalar(_trial(study_name, number))
        if record is None:
            raise KeyError(f"trial {number} of study {study_name!r} has no record")
        _set_fields(record, fields)
        if finished:
            record.finished_at = _now()
        session.query(StudyRecord).filter(StudyRecord.name == study_name).update(
            {StudyRecord.updated_at: _now()}
        )


def list_trials(*, url: str, study_name: str, after: int | None = None) -> list[TrialRecord]:
    with session_factory(url)() as session:
        query = select(TrialRecord).where(TrialRecord.study_name == study_name)
        if after is not None:
            query = query.where(TrialRecord.number > after)
        return list(session.scalars(query.order_by(TrialRecord.number)))


def get_trial(*, url: str, study_name: str, number: int) -> TrialRecord | None:
    with session_factory(url)() as session:
        return session.scalar(_trial(study_name, number))
