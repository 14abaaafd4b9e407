"""A background thread that samples something every few seconds while a measurement runs.

Subclasses implement ``sample()``, and optionally ``on_start()`` (run in the caller's thread
before the first interval) and ``on_stop()`` (run after the thread has ended). Use as a
context manager, or call ``start()``/``stop()``.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Self


class PeriodicSampler:
    """Calls ``sample()`` every ``interval_s`` in a daemon thread between start and stop.

    An exception from ``sample()`` ends the thread and is raised again by ``stop()`` (after
    which ``on_stop()`` is not called); a sampler that must never fail catches its own.
    ``stop()`` waits ``join_timeout_s`` for the thread (None: as long as a sample takes).
    """

    def __init__(
        self, interval_s: float, *, name: str, join_timeout_s: float | None = None
    ) -> None:
        self.interval_s = interval_s
        self._name = name
        self._join_timeout_s = join_timeout_s
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None

    def sample(self) -> None:
        raise NotImplementedError

    def on_start(self) -> None:
        """Hook: runs in ``start()`` before the thread does."""

    def on_stop(self) -> None:
        """Hook: runs in ``stop()`` once the thread has ended."""

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self.on_start()
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread, re-raise its error if it had one, then ``on_stop()``. Only the
        first call after ``start()`` does anything."""
        if self._thread is None or self._stop_event.is_set():
            return
        self._stop_event.set()
        self._thread.join(self._join_timeout_s)
        if self._error is not None:
            raise self._error
        self.on_stop()

    def _loop(self) -> None:
        try:
            while not self._stop_event.wait(self.interval_s):
                self.sample()
        except Exception as exc:  # handed to the caller by stop()
            self._error = exc

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
