"""Which database errors are worth retrying, and what to tell the user about the others.

A worker retries a write for minutes only when waiting can fix it: the connection was lost (the
server restarted, a network blip, a connection cut by an administrator), the server is not yet
accepting connections, or the database asked for the transaction to be run again. Everything
else fails at once, with what to do:

PostgreSQL (psycopg), by SQLSTATE: class 08 (connection exception), 57P01-57P03 (the server
shutting down or starting up), 53300 (too many connections: other clients let go of theirs),
40001/40P01 (serialisation failure, deadlock: rolled back, safe to run again) are transient; so
is an error without SQLSTATE, raised by the client when it cannot reach the server at all. 53100
(disk full) and 42P01 (a missing table) are not.

SQLite, by its result code: only SQLITE_BUSY and SQLITE_LOCKED ("database is locked": another
process holds the write lock past the busy timeout) are transient. A local file has no
connection to lose: "database or disk is full" (SQLITE_FULL), "unable to open database file"
(CANTOPEN: the folder is gone or not writable), "attempt to write a readonly database"
(READONLY), "disk I/O error" (IOERR: a failing disk, or the file removed underneath) and
"database disk image is malformed" (CORRUPT) stay until someone acts, and "no such table" means
the file is not (or no longer) a complete autotune database.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from autotune.errors import StorageError

TRANSIENT_SQLSTATES = {"57P01", "57P02", "57P03", "53300", "40001", "40P01"}
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
SQLITE_ADVICE = {
    8: "{where} is read-only for this user: fix its permissions",
    10: "disk I/O error on {where}: check the disk (`dmesg`) and that the file was not removed",
    11: "{where} is damaged: restore it from a copy, or start a new study elsewhere",
    13: "the disk holding {where} is full: free space",
    14: "cannot open {where}: its folder was removed or is not writable",
    26: "{where} is not a SQLite database: check --storage",
}
PG_ADVICE = {
    "53100": "the PostgreSQL server's disk is full ({where}): free space on the server",
    "53200": "the PostgreSQL server is out of memory ({where})",
}
MISSING_TABLES = "autotune's tables are missing from {where}"
RESUME = ("; then run the same command again: the study resumes where it stopped "
          "(`autotune study start --space FILE --name NAME` or `autotune worker ...`)")
UPGRADE = (": run `autotune db upgrade --storage URL` (or check that --storage points at the "
           "study's database)")


class DatabaseFault(StorageError):
    """A database error that waiting will not fix; the message says what to do."""


def dbapi_error(exc: BaseException) -> DBAPIError | None:
    """The SQLAlchemy driver error behind ``exc`` (Optuna wraps them in its own)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError):
            return seen
        seen = seen.__cause__
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` later can succeed (see the module's docstring)."""
    error = dbapi_error(exc)
    if error is None:
        return False
    if error.connection_invalidated or isinstance(error, InterfaceError):
        return True
    orig = error.orig
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return sqlite_code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is None:  # psycopg: the client never reached the server (refused, reset)
        return isinstance(error, OperationalError) and type(orig).__module__ != "sqlite3"
    return sqlstate.startswith("08") or sqlstate in TRANSIENT_SQLSTATES


def _where(url: str) -> str:
    if not url:
        return "the study's database"
    parts = make_url(url)
    if parts.get_backend_name() == "sqlite":
        return parts.database or "the SQLite database"
    return parts.render_as_string(hide_password=True)


def advice(exc: BaseException, url: str) -> str | None:
    """What to do about a lasting database error, or None when we know no better than the
    error itself (a bug, shown as it is)."""
    error = dbapi_error(exc)
    if error is None:
        return None
    where = _where(url)
    orig = error.orig
    text = str(orig)
    if "no such table" in text or getattr(orig, "sqlstate", None) == "42P01":
        return MISSING_TABLES.format(where=where) + UPGRADE
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if sqlite_code is not None and sqlite_code & 0xFF in SQLITE_ADVICE:
        return SQLITE_ADVICE[sqlite_code & 0xFF].format(where=where) + RESUME
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in PG_ADVICE:
        return PG_ADVICE[sqlstate].format(where=where) + RESUME
    if isinstance(error, OperationalError):
        first = (text.splitlines() or [""])[0][:200]
        return f"the database at {where} refused the request ({first})" + RESUME
    return None
