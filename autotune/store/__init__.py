"""Study storage: the ``StudyStore``/``Catalog`` contract (``base``) and its SQL implementation.

``open_store(url, name)`` and ``open_catalog(url)`` are the ways in; callers never import an
implementation module.
"""

from __future__ import annotations

from typing import Any

from autotune.store._catalog import RdbCatalog, summary_of
from autotune.store._rdb import RdbStudyStore
from autotune.store.base import (
    Catalog,
    FreshRun,
    Origin,
    StaleTrial,
    StudyFacts,
    StudyStore,
    Suggestion,
    TrialResult,
    TrialSummary,
)

__all__ = [
    "Catalog", "FreshRun", "Origin", "StaleTrial", "StudyFacts", "StudyStore", "Suggestion",
    "TrialResult", "TrialSummary", "open_catalog", "open_store", "summary_of",
]


def open_store(url: str, name: str, **options: Any) -> StudyStore:
    """The store of study ``name`` in the database at ``url`` (SQLite or PostgreSQL).

    ``options``: ``heartbeat_interval_s``, ``grace_period_s``, ``max_retries``, ``notice``."""
    return RdbStudyStore(url, name, **options)


def open_catalog(url: str) -> Catalog:
    return RdbCatalog(url)
