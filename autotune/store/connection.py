"""How autotune opens a study's storage: Optuna's RDB storage plus the rules for sharing it.

SQLite serves one controller process (several threads are fine): a second process on the same
SQLite file is refused, because SQLite has no row locks for Optuna's concurrent trial claims and
no heartbeats can be trusted across processes. Several workers, on one machine or many, share a
PostgreSQL database; there heartbeats detect a dead worker and its trial is retried.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import optuna
from sqlalchemy import text
from sqlalchemy.engine import make_url

from autotune.errors import StorageError
from autotune.store.db.session import get_engine


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve()


_HELD: dict[Path, IO[str]] = {}


def claim_single_writer(url: str) -> None:
    """Refuse a second autotune process on one SQLite file (no-op for other databases).

    The claim lasts until this process exits (an fcntl lock on ``<db>.autotune-lock``)."""
    if not is_sqlite(url):
        return
    path = sqlite_path(url)
    if path is None or path in _HELD:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.with_name(path.name + ".autotune-lock"), "a+")  # noqa: SIM115 - kept open
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StorageError(
            f"{url} is already used by another autotune process ({holder}). SQLite serves one "
            "controller process at a time: Optuna cannot claim trials safely across processes "
            "on it and dead workers cannot be detected. To run several workers, put the study "
            "on PostgreSQL: --storage postgresql+psycopg://USER:PASSWORD@HOST/DB "
            "(see docs/distributed.md)."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    _HELD[path] = handle


def optuna_storage(
    url: str, *, heartbeat_interval_s: int | None = None, grace_period_s: int | None = None,
    stale_trial_callback: Any = None,
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage; heartbeats only where several processes may share the study."""
    kwargs: dict[str, Any] = {}
    if is_sqlite(url):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    elif heartbeat_interval_s:
        kwargs.update(
            heartbeat_interval=heartbeat_interval_s,
            grace_period=grace_period_s,
            heartbeat_stale_trial_callback=stale_trial_callback,
        )
    return optuna.storages.RDBStorage(url, **kwargs)


@contextmanager
def study_claim_lock(url: str, study_name: str) -> Iterator[None]:
    """Serialise "is the budget reached? then ask for a trial" across worker processes.

    On PostgreSQL a transaction-scoped advisory lock keyed by the study name; elsewhere a
    no-op (one process, whose threads share a lock of their own)."""
    if not is_postgres(url):
        yield
        return
    key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
    with get_engine(url).connect() as connection, connection.begin():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield
