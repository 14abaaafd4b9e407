"""The StudyStore conformance suite on SQLite (one controller process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.testing.store_suite import SingleProcessStudyStoreSuite


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


class TestSqliteStudyStore(SingleProcessStudyStoreSuite):
    pass
