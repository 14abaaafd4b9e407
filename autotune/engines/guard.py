"""Engine guard: runs the engine and makes sure it dies with the controller.

Started by the controller as ``python -m autotune.engines.guard ARGV...`` in a new session
(so the guard's pid is the process-group id of the whole engine tree), with a pipe on stdin.
When that pipe reaches EOF — the controller closed it to stop the engine, or the controller
died, even by ``kill -9`` — the guard terminates the group (TERM, then KILL after a grace
period), reaps every descendant (it is a child subreaper, so orphans come back to it) and exits.
If the guard itself dies (``kill -9``), its sentinel — a forked child that only waits for the
guard's end of a pipe to close — SIGKILLs every process left in the session, so the engine is
never re-parented to init and left running. On its own way out the guard closes that pipe and
reaps the sentinel, so no process of the tree is left for the controller to reap (a controller
that is PID 1 in a container, or a subreaper, inherits every orphan and would collect zombies).
The guard waits for its own children by pid, never ``waitpid(-1)``: that would take the
engine's exit status from ``Popen`` (which then reads 0). A SIGTERM the guard itself receives
never comes from autotune (it stops an engine by closing the guard's stdin): the guard then
reports the engine as killed by SIGTERM, even when the engine ends cleanly on it (as vLLM's
API server does), so that an operator's stop is not mistaken for a crash.
The engine's output reaches its log through the guard, which bounds it: past
``AUTOTUNE_ENGINE_LOG_MAX_BYTES`` (default 64 MiB) the log keeps its head (how the engine
started) and its latest half, and says how many bytes in between were left out.
Standard library only: it must start fast and import nothing heavy.
"""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE_ENV = "AUTOTUNE_GUARD_GRACE_S"
LOG_MAX_BYTES_ENV = "AUTOTUNE_ENGINE_LOG_MAX_BYTES"
DEFAULT_LOG_MAX_BYTES = 64 * 1024 * 1024


class _Log:
    """The guard's stdout, the engine's log file, written by the guard alone (the engine's
    output comes through a pipe). Past ``cap`` bytes it keeps the head (up to cap/8, whole
    lines), a line saying how much was left out, and the latest cap/2 bytes (whole lines)."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd = fd
        self.cap = cap
        self.lock = threading.Lock()
        try:
            info = os.fstat(fd)
            self.size = os.lseek(fd, 0, os.SEEK_END)
            self.bounded = cap > 0 and stat.S_ISREG(info.st_mode)
        except OSError:
            self.size, self.bounded = 0, False
        self.head_end: int | None = None
        self.marker_len = 0
        self.left_out = 0

    def write(self, data: bytes) -> None:
        with self.lock:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self.fd, view)
                except OSError:
                    return  # the log is gone (disk full, closed): the engine runs on
                view = view[written:]
                self.size += written
            if self.bounded and self.size > self.cap:
                try:
                    self._roll()
                except OSError:  # not readable (opened write-only): left unbounded
                    self.bounded = False

    def _roll(self) -> None:
        if self.head_end is None:
            head = os.pread(self.fd, self.cap // 8, 0)
            self.head_end = head.rfind(b"\n") + 1
        tail_from = max(self.size - self.cap // 2, self.head_end + self.marker_len)
        tail = os.pread(self.fd, self.size - tail_from, tail_from)
        cut = tail.find(b"\n") + 1 if tail_from > 0 else 0
        tail = tail[cut:]
        self.left_out += self.size - self.head_end - self.marker_len - len(tail)
        marker = (f"[autotune-guard] ... {self.left_out} bytes of the engine's output left "
                  f"out (the log keeps at most {self.cap} bytes: {LOG_MAX_BYTES_ENV}) ...\n"
                  ).encode()
        os.ftruncate(self.fd, self.head_end)
        os.pwrite(self.fd, marker + tail, self.head_end)
        self.marker_len = len(marker)
        self.size = self.head_end + len(marker) + len(tail)
        os.lseek(self.fd, self.size, os.SEEK_SET)


_LOG: list[_Log] = []


def _say(message: str) -> None:
    """A line of the guard's own in the engine's log."""
    line = f"[autotune-guard] {message}\n"
    if _LOG:
        _LOG[0].write(line.encode())
    else:
        print(line, end="", flush=True)


def _pump(source: int, log: _Log) -> None:
    """Copy the engine's output into its log until every writer has closed the pipe."""
    while True:
        try:
            data = os.read(source, 65536)
        except OSError:
            return
        if not data:
            return
        log.write(data)


def _become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process group still covers the usual case


_SENTINEL: list[int] = []  # the sentinel's pid: not part of the engine tree
_SENTINEL_PIPE: list[int] = []  # the guard's end of the sentinel's pipe


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid → (parent pid, session id, state) of every process in /proc."""
    found: dict[int, tuple[int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry)] = (int(fields[1]), int(fields[3]), fields[0])
    return found


def _descendants() -> list[int]:
    """Pids whose ancestry leads to this guard (children, and orphans reparented to it)."""
    parents = {pid: ppid for pid, (ppid, _, _) in _processes().items()}
    found: list[int] = []
    frontier = [os.getpid()]
    while frontier:
        pid = frontier.pop()
        kids = [child for child, parent in parents.items()
                if parent == pid and child not in _SENTINEL]
        found += kids
        frontier += kids
    return found


def _start_sentinel() -> None:
    """Fork the sentinel: when the guard's end of the pipe closes (the guard exited or was
    killed), it SIGKILLs what remains of the session and exits. Before any thread starts."""
    read_end, write_end = os.pipe()
    guard = os.getpid()
    pid = os.fork()
    if pid:
        os.close(read_end)
        _SENTINEL.append(pid)
        _SENTINEL_PIPE.append(write_end)
        return  # the guard keeps write_end open (not inherited by the engine) until it ends
    try:
        os.close(write_end)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the guard's own TERM to the group
        while os.read(read_end, 1):
            pass
        session, me = os.getsid(0), os.getpid()
        for _ in range(50):
            # The guard, when alive, closed the pipe itself and waits to reap this sentinel.
            left = [p for p, (_, sid, state) in _processes().items()
                    if sid == session and p not in (me, guard) and state != "Z"]
            if not left:
                break
            for victim in left:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
    finally:
        os._exit(0)


def _signal_all(sig: int) -> None:
    """Send ``sig`` to the engine tree: every other process of the guard's session and every
    descendant. Never ``killpg``: the guard is in its own group, and a SIGKILL to the group
    would end the guard before it reports the engine's exit."""
    me, session = os.getpid(), os.getsid(0)
    members = [pid for pid, (_, sid, state) in _processes().items()
               if sid == session and state != "Z"]
    for pid in {*members, *_descendants()} - {me, *_SENTINEL}:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(engine: subprocess.Popen[bytes]) -> None:
    """Reap the guard's dead children one by one: the engine through ``Popen`` (which keeps
    its status), every other zombie child (orphans of the tree) by its pid."""
    engine.poll()
    me = os.getpid()
    for pid, (ppid, _, state) in _processes().items():
        if ppid == me and state == "Z" and pid != engine.pid and pid not in _SENTINEL:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _end_sentinel() -> None:
    """Close the sentinel's pipe and reap it (it finds the tree gone and exits)."""
    for fd in _SENTINEL_PIPE:
        os.close(fd)
    _SENTINEL_PIPE.clear()
    for pid in _SENTINEL:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def shutdown(engine: subprocess.Popen[bytes], grace_s: float) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(engine)
        if engine.poll() is not None and not _descendants():
            return
        time.sleep(0.1)
    _say(f"engine still alive after {grace_s:.0f}s: SIGKILL")
    _signal_all(signal.SIGKILL)
    for _ in range(50):
        _reap(engine)
        if not _descendants():
            return
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m autotune.engines.guard COMMAND [ARGS...]", file=sys.stderr)
        return 2
    grace_s = float(os.environ.get(GRACE_ENV, "10"))
    _become_subreaper()
    _start_sentinel()
    stop = threading.Event()

    def watch_stdin() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        stop.set()

    # SIGTERM to the group reaches the guard too: a stop request, and not autotune's.
    outside_term = threading.Event()

    def on_term(*_: object) -> None:
        outside_term.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    sys.stdout.flush()
    log = _Log(sys.stdout.fileno(), int(os.environ.get(LOG_MAX_BYTES_ENV, "0") or 0))
    _LOG.append(log)
    read_end, write_end = os.pipe()
    engine = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=write_end,
                              stderr=subprocess.STDOUT)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, log), daemon=True)
    pump.start()
    _say(f"engine pid {engine.pid} in process group {os.getpgid(0)}")
    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.is_set():
        if engine.poll() is not None:
            break
        stop.wait(0.2)
    code = engine.poll()
    if code is None:
        shutdown(engine, grace_s)
        code = engine.returncode if engine.returncode is not None else -signal.SIGKILL
    else:
        # Reported before the tree is torn down: the engine's exit is the news, whatever
        # its children (which may outlive it) make the teardown do. Its last words first.
        pump.join(1.0)
        _say(describe_exit(code))
        shutdown(engine, min(grace_s, 5.0))
    pump.join(5.0)  # the tree is gone: the pipe has no writer left
    _end_sentinel()
    if outside_term.is_set() and code >= 0:
        _say(f"SIGTERM from outside autotune; {describe_exit(code)}; "
             "reported as killed by SIGTERM")
        code = -signal.SIGTERM
    return 128 - code if code < 0 else code


def describe_exit(code: int) -> str:
    """The engine's exit as Popen reports it (``-N``: killed by signal N), in words."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"engine killed by signal {-code} ({name})"
    return f"engine exited with status {code}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
