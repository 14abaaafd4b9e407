"""How a study's work is carried out: parallel slots, Ctrl-C and SIGTERM, the stale-trial
watchdog and database retry. Knows nothing of what a slot does."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import DBAPIError

from autotune.engines import stop_all
from autotune.store import DatabaseFault, advice, is_transient

# What a database call can raise; ``is_transient`` tells a lost connection from the rest.
DB_ERRORS = (DBAPIError, StorageInternalError)
T = TypeVar("T")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM tears the engine down exactly as Ctrl-C does."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Executor:
    """Runs ``slot`` in ``parallel`` threads until each returns; the first error stops all
    and is re-raised. Ctrl-C/SIGTERM sets ``stop``, tears every engine down and waits."""

    def __init__(
        self, stop: threading.Event, notice: Callable[[str], None], *, db_retry_s: float = 600.0,
        url: str = "",
    ) -> None:
        self.stop = stop
        self.notice = notice
        self.db_retry_s = db_retry_s
        self.url = url  # the study's database, named in what the user is told

    def run(
        self, slot: Callable[[], None], parallel: int,
        watchdog: tuple[Callable[[], object], float] | None = None,
    ) -> bool:
        """Returns whether the user interrupted. ``watchdog`` (action, interval) runs beside
        the slots until they end, its database errors ignored (the next round retries)."""
        errors: list[BaseException] = []
        # Waiting on an Event, not Thread.join: a KeyboardInterrupt inside join() can leave the
        # thread looking finished while it still runs (CPython gh-90882).
        all_done = threading.Event()
        remaining = [max(1, parallel)]
        lock = threading.Lock()

        def body() -> None:
            try:
                slot()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)
                self.stop.set()
            finally:
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_done.set()

        threads = [threading.Thread(target=body, name=f"trial-slot-{i}", daemon=True)
                   for i in range(remaining[0])]
        interrupted = False
        with sigterm_as_interrupt():
            for thread in threads:
                thread.start()
            if watchdog is not None:
                threading.Thread(target=self._watch, args=watchdog, daemon=True).start()
            try:
                while not all_done.wait(0.2):
                    pass
            except KeyboardInterrupt:
                interrupted = True
                self.stop.set()
                stop_all()
                all_done.wait()
        self.stop.set()
        if errors:
            raise errors[0]
        return interrupted

    def _watch(self, action: Callable[[], object], interval_s: float) -> None:
        """The watchdog never dies: without it, a dead worker's trial would stay running and
        every other worker would wait for it forever. Database errors are the next round's
        (the store judges no silence until it has been back in contact for a grace period);
        anything else is said once per kind and tried again too."""
        said: set[str] = set()
        while not self.stop.wait(interval_s):
            try:
                action()
            except DB_ERRORS:
                continue
            except Exception as exc:  # noqa: BLE001 - a bug must not end the watchdog
                if type(exc).__name__ not in said:
                    said.add(type(exc).__name__)
                    first_line = (str(exc).splitlines() or [""])[0][:200]
                    self.notice(f"the stale-trial check failed ({type(exc).__name__}: "
                                f"{first_line}); trying again every {interval_s:g}s")

    def with_db_retry(self, what: str, action: Callable[[], T]) -> T:
        """Run ``action``; while the database is unreachable (a lost connection, see
        ``autotune.store.db.faults``), retry with back-off and say so. Any other database error
        fails at once, as a ``DatabaseFault`` saying what to do where we know it."""
        delay = 1.0
        deadline = time.monotonic() + self.db_retry_s
        while True:
            try:
                return action()
            except DB_ERRORS as exc:
                if not is_transient(exc):
                    todo = advice(exc, self.url)
                    if todo is None:  # a bug, not the database's state: shown as it is
                        raise
                    raise DatabaseFault(f"while {what}: {todo}") from exc
                first_line = (str(exc).splitlines() or [""])[0][:200]
                if time.monotonic() + delay > deadline:
                    raise DatabaseFault(
                        f"the database stayed unreachable for {self.db_retry_s:.0f}s while "
                        f"{what} ({type(exc).__name__}: {first_line}); once it is back, run "
                        "the same command again: the study resumes where it stopped") from exc
                self.notice(f"database unreachable while {what} ({type(exc).__name__}: "
                            f"{first_line}); retrying in {delay:.0f}s")
                time.sleep(delay)
                delay = min(delay * 2, 60.0)
