"""Host-wide device locks: two autotune processes on one host never hand out the same device.

A pool only knows what it handed out itself; a study's workers, ``autotune confirm`` and a
second study on the same host each have their own. Every device (a GPU by its UUID, a CPU
core by its number) has a lock file in a directory all of them share; a pool hands a device
out only while it holds that file's ``flock``, and gives it back on release. The kernel drops
a lock when its process ends, even by ``kill -9``, so a crashed worker never keeps a device.

The directory is ``AUTOTUNE_DEVICE_LOCK_DIR``, else ``/tmp/autotune-device-locks``: processes
in separate containers that share a host's GPUs must mount one directory there to see each
other's locks. Within one process, pools do not exclude each other (each allocates its own
devices, as before); the locks count per process.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

LOCK_DIR_ENV = "AUTOTUNE_DEVICE_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/autotune-device-locks"


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


# The lock files this process holds, whichever pool took them: path → (fd, times taken).
_HELD: dict[Path, tuple[int, int]] = {}
_HELD_LOCK = threading.Lock()


class HostLocks:
    """Non-blocking, all-or-nothing file locks by device name in one directory (thread-safe;
    a name taken twice in this process, by any pool, is counted, not locked twice)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else lock_dir()

    def _path(self, name: str) -> Path:
        return self.directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock")

    def take(self, names: Sequence[str]) -> bool:
        """Lock every name, or none of them (False: another process holds one)."""
        with _HELD_LOCK:
            taken: list[str] = []
            for name in names:
                if self._take_one(name):
                    taken.append(name)
                    continue
                for done in taken:
                    self._give_back_one(done)
                return False
            return True

    def give_back(self, names: Sequence[str]) -> None:
        with _HELD_LOCK:
            for name in names:
                self._give_back_one(name)

    def holder(self, name: str) -> str:
        """What the lock file says of the process holding ``name`` ("" if unknown)."""
        try:
            return self._path(name).read_text().strip()
        except OSError:
            return ""

    def _take_one(self, name: str) -> bool:
        path = self._path(name).absolute()
        if path in _HELD:
            fd, count = _HELD[path]
            _HELD[path] = (fd, count + 1)
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.directory, 0o1777)  # every user's autotune on the host shares it
        except OSError:
            pass
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            os.fchmod(fd, 0o666)
        except OSError:
            pass  # another user's file: theirs to keep open to all
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        _HELD[path] = (fd, 1)
        return True

    def _give_back_one(self, name: str) -> None:
        path = self._path(name).absolute()
        if path not in _HELD:
            return
        fd, count = _HELD[path]
        if count > 1:
            _HELD[path] = (fd, count - 1)
            return
        del _HELD[path]
        os.close(fd)  # closing the descriptor drops its flock
