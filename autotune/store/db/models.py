"""autotune's own tables, beside Optuna's in the same database.

Optuna keeps what samplers need (params, objective values, constraints); these tables keep
what people need: every metric, the failure and its log excerpt, the exact engine command,
timings. Schema changes go through an Alembic revision in alembic/versions/.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class StudyRecord(Base):
    __tablename__ = "autotune_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True, index=True)
    space_yaml: Mapped[str] = mapped_column(Text)
    space_path: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(Text)
    hardware: Mapped[str] = mapped_column(Text, default="")
    objectives: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    slos: Mapped[dict[str, float]] = mapped_column(JSON)
    trial_budget: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class TrialRecord(Base):
    __tablename__ = "autotune_trials"
    __table_args__ = (UniqueConstraint("study_name", "number", name="uq_autotune_trial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(512), index=True)
    number: Mapped[int] = mapped_column(Integer)
    optuna_trial_id: Mapped[int] = mapped_column(Integer)
    # running | complete | failed | rejected | interrupted
    state: Mapped[str] = mapped_column(String(32))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    retry_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    feasible: Mapped[bool] = mapped_column(Boolean, default=False)
    violations: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # Every measurement (repeats on the same server): metrics, window series, disturbances.
    measurements: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    disturbed: Mapped[bool] = mapped_column(Boolean, default=False)
    failure_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_line: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    engine_command: Mapped[list[str]] = mapped_column(JSON, default=list)
    engine_flags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model: Mapped[str] = mapped_column(Text, default="")
    engine_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    devices: Mapped[str] = mapped_column(String(255), default="")
    startup_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    warmup_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    benchmark_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    teardown_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
