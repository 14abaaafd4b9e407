"""A running trial's heartbeat: a thread that records it every interval and never gives up.

Optuna's own heartbeat thread records in a bare loop, so one database error (a connection cut,
a server restart) ends the heartbeats for the rest of the trial, and another worker's watchdog
then fails the healthy trial as stale and runs its configuration again. This one tries again at
each interval, says once that it is failing (and again when it recovers), and stops only when
its trial is done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType


class Heartbeat:
    """Context manager: ``record`` is called at once, then every ``interval_s`` in a daemon
    thread, until the block ends. Its errors are reported through ``notice``, never raised."""

    def __init__(
        self, record: Callable[[], None], interval_s: float, *, number: int,
        notice: Callable[[str], None],
    ) -> None:
        self.record = record
        self.interval_s = interval_s
        self.number = number
        self.notice = notice
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{number}",
                                        daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        # A beat stuck on an unreachable server (a connect without a timeout) must not hold
        # the trial up; a late beat for a finished trial is harmless (only running ones are
        # checked for staleness).
        self._thread.join(timeout=self.interval_s)

    def _beat(self) -> None:
        failing_since: float | None = None
        while True:
            try:
                self.record()
            except Exception as exc:  # noqa: BLE001 - any failure: try again next interval
                if failing_since is None:
                    failing_since = time.monotonic()
                    first_line = (str(exc).splitlines() or [""])[0][:200]
                    self.notice(
                        f"trial {self.number}: heartbeat not recorded ({type(exc).__name__}: "
                        f"{first_line}); retrying every {self.interval_s:g}s")
            else:
                if failing_since is not None:
                    self.notice(f"trial {self.number}: heartbeats recorded again after "
                                f"{time.monotonic() - failing_since:.0f}s")
                    failing_since = None
            if self._stop.wait(self.interval_s):
                return
