"""What the store hands out to readers (reports, export, the dashboard, warm start, confirm):
frozen values, copied from autotune's tables when read, never the tables' rows themselves.

A value does not change when the database does: read again for news. JSON columns arrive as
plain Python values (dicts, lists, numbers, strings), times as naive UTC ``datetime``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StudyView:
    """A study's record as kept beside Optuna's study (``StudyStore.save_facts`` wrote it)."""

    id: int  # stable for the study's life: the dashboard's URLs carry it
    name: str
    space_yaml: str  # the space file byte for byte (workers pin its hash)
    space_path: str
    model: str
    hardware: str
    objectives: list[dict[str, Any]]  # [{"metric": ..., "direction": ...}, ...]
    slos: dict[str, float]
    trial_budget: int | None
    updated_at: datetime  # the last write to the study or any of its trials


@dataclass(frozen=True)
class TrialView:
    """One trial as autotune recorded it: every metric, the failure, the engine, timings.

    ``state`` is a ``TrialState`` value (``"running"``, ``"complete"``, ``"failed"``, ...)."""

    number: int
    state: str
    params: dict[str, Any]
    is_default: bool = False
    retry_of: int | None = None  # the trial whose worker died, when this is its retry
    metrics: dict[str, float] = field(default_factory=dict)
    feasible: bool = False
    violations: dict[str, float] = field(default_factory=dict)  # > 0: the constraint missed
    # Every measurement (repeats on one server): metrics, window series, disturbances.
    measurements: list[dict[str, Any]] | None = None
    disturbed: bool = False
    failure_kind: str | None = None
    failure_reason: str | None = None
    failure_line: str | None = None
    log_excerpt: str | None = None
    log_path: str | None = None
    engine_command: list[str] = field(default_factory=list)
    engine_flags: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    engine_version: str | None = None
    host: str = ""
    devices: str = ""
    startup_s: float | None = None
    warmup_s: float | None = None
    benchmark_s: float | None = None
    teardown_s: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
