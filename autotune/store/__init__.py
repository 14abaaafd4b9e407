"""Study storage: the ``StudyStore``/``Catalog`` contract (``base``) and its SQL implementation.

``open_store(url, name)`` and ``open_catalog(url)`` are the ways in; callers never import an
implementation module, nor autotune's tables (``autotune.store.db``): readers get frozen values
(``StudyView``, ``TrialView``). ``upgrade_schema`` migrates the tables (``autotune db
upgrade``); ``is_transient``/``advice``/``DatabaseFault`` say which database errors a worker
retries and what to tell the user about the others.
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
from autotune.store.db.faults import DatabaseFault, advice, is_transient
from autotune.store.db.session import upgrade as upgrade_schema
from autotune.store.values import StudyView, TrialView

__all__ = [
    "Catalog", "DatabaseFault", "FreshRun", "Origin", "StaleTrial", "StudyFacts", "StudyStore",
    "StudyView", "Suggestion", "TrialResult", "TrialSummary", "TrialView", "advice",
    "is_transient", "open_catalog", "open_store", "summary_of", "upgrade_schema",
]


def open_store(url: str, name: str, **options: Any) -> StudyStore:
    """The store of study ``name`` in the database at ``url`` (SQLite or PostgreSQL).

    ``options``: ``heartbeat_interval_s``, ``grace_period_s``, ``max_retries``, ``notice``."""
    return RdbStudyStore(url, name, **options)


def open_catalog(url: str) -> Catalog:
    return RdbCatalog(url)
