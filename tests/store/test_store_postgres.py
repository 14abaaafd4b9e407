"""The StudyStore conformance suite on a real PostgreSQL server (shared by workers)."""

from __future__ import annotations

import pytest

from autotune.testing.store_suite import SharedStudyStoreSuite

pytestmark = pytest.mark.postgres


@pytest.fixture
def store_url(postgres_url: str) -> str:
    return postgres_url


class TestPostgresStudyStore(SharedStudyStoreSuite):
    pass
