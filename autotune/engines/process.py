"""A guarded engine process tree: started under autotune.engines.guard, torn down completely.

The guard is a session leader, so every process of the engine shares its session id; teardown
closes the guard's stdin (the guard then TERMs and KILLs the tree), confirms from /proc that
no process of that session remains, and reaps what of it came back to the controller (PID 1).
Logs are bounded: each one by the guard (``AUTOTUNE_ENGINE_LOG_MAX_BYTES``, default 64 MiB),
and a log directory (one per study) keeps its newest ``AUTOTUNE_ENGINE_LOGS_KEEP`` (default
500) as a new engine starts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from autotune import procfs
from autotune.engines.failures import TeardownError
from autotune.engines.guard import DEFAULT_LOG_MAX_BYTES, GRACE_ENV, LOG_MAX_BYTES_ENV


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session_members(sid: int) -> list[int]:
    """Pids of live (non-zombie) processes whose session id is ``sid``."""
    members = []
    for pid in procfs.pids():
        stat = procfs.process_stat(pid)
        if stat is not None and stat.session == sid and stat.state != "Z":
            members.append(pid)
    return members


def foreign_listeners(port: int, tree: list[int]) -> list[int]:
    """Processes outside ``tree`` (an engine's pids) that listen on TCP ``port`` here: those
    that answer a request to it instead of, or beside, the engine. The port is picked free and
    released before the engine binds it, so another process may take it in between. Empty when
    every listener belongs to the tree, and when a listener's holder cannot be seen (another
    user's process, an engine in a container behind a proxy): that cannot be told apart."""
    listening = procfs.listening_sockets(port)
    for pid in tree:
        listening -= procfs.socket_inodes(pid)
    if not listening:
        return []
    others = set(procfs.pids()) - set(tree)
    return sorted(pid for pid in others if procfs.socket_inodes(pid) & listening)


LOGS_KEEP_ENV = "AUTOTUNE_ENGINE_LOGS_KEEP"
DEFAULT_LOGS_KEEP = 500


def logs_kept() -> int:
    """How many engine logs a log directory (one per study) keeps: the newest."""
    try:
        return max(1, int(os.environ.get(LOGS_KEEP_ENV) or DEFAULT_LOGS_KEEP))
    except ValueError:
        return DEFAULT_LOGS_KEEP


def prune_logs(directory: Path, keep: int, keep_also: Path | None = None) -> list[Path]:
    """Delete the oldest ``*.log`` files of ``directory`` (by modification time) beyond the
    newest ``keep - 1``, leaving room for ``keep_also`` (the log about to be written); logs of
    engines still running are never deleted. Returns what was deleted."""
    with _LIVE_LOCK:
        busy = {process.log_path for process in _LIVE if process.log_path.parent == directory}
    try:
        logs = [p for p in directory.glob("*.log") if p != keep_also and p not in busy]
        dated = sorted(((p.stat().st_mtime, p) for p in logs), reverse=True)
    except OSError:
        return []
    removed = []
    for _, path in dated[max(keep - 1 - len(busy), 0):]:
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def reap_orphans(sid: int) -> list[int]:
    """Reap the dead processes of session ``sid`` that became this process's children: when
    the controller is PID 1 (a container) or a subreaper, the orphans of an engine tree whose
    guard was killed come back to it, and nobody else would ever wait for them."""
    me, reaped = os.getpid(), []
    for pid in procfs.pids():
        stat = procfs.process_stat(pid)
        if stat is None or stat.session != sid or stat.ppid != me or stat.state != "Z":
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
            reaped.append(pid)
        except ChildProcessError:
            pass
    return reaped


_LIVE: set[GuardedProcess] = set()
_LIVE_LOCK = threading.Lock()


def live_pids() -> list[int]:
    """Every process of every engine this controller is running (parallel trials included)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    return [pid for process in live for pid in process.pids()]


def stop_all() -> int:
    """Tear down every guarded engine of this controller (Ctrl-C with parallel trials)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for process in live:
        try:
            process.stop()
        except TeardownError:
            pass  # the trial that owns it records the survivors
    return len(live)


class GuardedProcess:
    """One engine command running under the guard, logging to ``log_path`` (a fresh file:
    an earlier run's lines there would be classified as this engine's)."""

    def __init__(
        self, argv: list[str], env: Mapping[str, str], log_path: Path, grace_s: float
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self.grace_s = grace_s
        log_path.parent.mkdir(parents=True, exist_ok=True)
        prune_logs(log_path.parent, keep=logs_kept(), keep_also=log_path)
        full_env = {
            **os.environ, **env, GRACE_ENV: str(grace_s),
            LOG_MAX_BYTES_ENV: os.environ.get(LOG_MAX_BYTES_ENV) or str(DEFAULT_LOG_MAX_BYTES),
        }
        with open(log_path, "w+b") as log:  # read and write: the guard bounds it in place
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "autotune.engines.guard", *argv],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        self.pid = self._proc.pid
        self._stopped_after: float | None = None
        self.stop_requested = False  # set by stop(): a death from now on is ours
        self._stop_lock = threading.Lock()
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def pids(self) -> list[int]:
        return session_members(self.pid)

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> float:
        """Tear the whole tree down; return seconds taken. Raises TeardownError if a process
        survives."""
        self.stop_requested = True
        with self._stop_lock:
            return self._stop()

    def _stop(self) -> float:
        if self._stopped_after is not None:
            return self._stopped_after
        started = time.monotonic()
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()  # EOF: the guard's signal to stop the engine
            except OSError:
                pass
        try:
            self._proc.wait(timeout=self.grace_s + 10)
        except subprocess.TimeoutExpired:
            self._kill_session()
            self._proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            self._kill_session()
            time.sleep(0.2)
        survivors = self.pids()
        if survivors:
            raise TeardownError(survivors)
        reap_orphans(self.pid)
        self._stopped_after = time.monotonic() - started
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return self._stopped_after

    def _kill_session(self) -> None:
        for pid in session_members(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
