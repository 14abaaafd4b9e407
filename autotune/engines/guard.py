"""Engine guard: runs the engine and makes sure it dies with the controller.

Started by the controller as ``python -m autotune.engines.guard ARGV...`` in a new session
(so the guard's pid is the process-group id of the whole engine tree), with a pipe on stdin.
When that pipe reaches EOF — the controller closed it to stop the engine, or the controller
died, even by ``kill -9`` — the guard terminates the group (TERM, then KILL after a grace
period), reaps every descendant (it is a child subreaper, so orphans come back to it) and exits.
If the guard itself dies (``kill -9``), its sentinel — a forked child that only waits for the
guard's end of a pipe to close — SIGKILLs every process left in the session, so the engine is
never re-parented to init and left running.
Standard library only: it must start fast and import nothing heavy.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE_ENV = "AUTOTUNE_GUARD_GRACE_S"


def _become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process group still covers the usual case


_SENTINEL: list[int] = []  # the sentinel's pid: not part of the engine tree


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
    pid = os.fork()
    if pid:
        os.close(read_end)
        _SENTINEL.append(pid)
        return  # the guard keeps write_end open (not inherited by the engine) until it dies
    try:
        os.close(write_end)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the guard's own TERM to the group
        while os.read(read_end, 1):
            pass
        session, me = os.getsid(0), os.getpid()
        for _ in range(50):
            left = [p for p, (_, sid, state) in _processes().items()
                    if sid == session and p != me and state != "Z"]
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


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def shutdown(engine: subprocess.Popen[bytes], grace_s: float) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap()
        if engine.poll() is not None and not _descendants():
            return
        time.sleep(0.1)
    print(f"[autotune-guard] engine still alive after {grace_s:.0f}s: SIGKILL", flush=True)
    _signal_all(signal.SIGKILL)
    for _ in range(50):
        _reap()
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

    # SIGTERM to the group reaches the guard too: treat it as a stop request.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    engine = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    print(f"[autotune-guard] engine pid {engine.pid} in process group {os.getpgid(0)}", flush=True)
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
        # its children (which may outlive it) make the teardown do.
        print(f"[autotune-guard] {describe_exit(code)}", flush=True)
        shutdown(engine, min(grace_s, 5.0))
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
