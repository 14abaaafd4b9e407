"""The guard's promise, on a plain process tree: teardown leaves nothing, and neither does a
controller killed with SIGKILL. (The same promise with a real vLLM server is tested in
tests/study/test_interrupt_and_kill.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from autotune.engines.failures import classify
from autotune.engines.process import GuardedProcess, session_members

TREE = [
    sys.executable,
    "-c",
    textwrap.dedent("""
    import subprocess, sys, time
    kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            for _ in range(2)]
    # a grandchild that leaves its parent: reparented to the guard (subreaper)
    subprocess.Popen(["sh", "-c", "sleep 300 & exit 0"])
    print("tree up", flush=True)
    time.sleep(300)
"""),
]


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_stop_kills_the_whole_tree(tmp_path: Path) -> None:
    proc = GuardedProcess(TREE, {}, tmp_path / "engine.log", grace_s=2)
    assert _wait_for(lambda: "tree up" in proc.read_log())
    assert _wait_for(lambda: len(proc.pids()) >= 5)  # guard, engine, 2 kids, orphan sleep
    took = proc.stop()
    assert proc.pids() == []
    assert took < 15
    assert proc.stop() == took  # idempotent


def test_engine_exit_status_is_reported(tmp_path: Path) -> None:
    proc = GuardedProcess(
        [sys.executable, "-c", "import os; os.kill(os.getpid(), 4)"],
        {},
        tmp_path / "engine.log",
        grace_s=2,
    )
    assert _wait_for(lambda: not proc.alive())
    assert proc.returncode == 128 + signal.SIGILL
    assert "SIGILL" in proc.read_log()
    proc.stop()


def test_controller_killed_with_sigkill_leaves_no_process(tmp_path: Path) -> None:
    controller = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from autotune.engines.process import GuardedProcess
        proc = GuardedProcess({TREE!r}, {{}}, Path({str(tmp_path / "engine.log")!r}), 2)
        print(proc.pid, flush=True)
        time.sleep(300)
    """)
    ctl = subprocess.Popen([sys.executable, "-c", controller], stdout=subprocess.PIPE, text=True)
    assert ctl.stdout is not None
    sid = int(ctl.stdout.readline())
    assert _wait_for(lambda: len(session_members(sid)) >= 5)
    os.kill(ctl.pid, signal.SIGKILL)
    ctl.wait()
    assert _wait_for(lambda: session_members(sid) == [], timeout=15), session_members(sid)


def test_the_engine_dies_with_its_guard(tmp_path: Path) -> None:
    proc = GuardedProcess(TREE, {}, tmp_path / "engine.log", grace_s=2)
    try:
        assert _wait_for(lambda: "tree up" in proc.read_log())
        assert _wait_for(lambda: len(proc.pids()) >= 5)
        os.kill(proc.pid, signal.SIGKILL)  # the guard alone; its engine tree is left
        killed = time.monotonic()
        assert _wait_for(lambda: session_members(proc.pid) == [], timeout=5), (
            session_members(proc.pid))
        print(f"engine tree gone {time.monotonic() - killed:.2f}s after kill -9 of its guard")
    finally:
        proc.stop()


# An engine that logs an error, leaves a child that ignores SIGTERM (as vLLM's engine core can
# outlive its API server for a while), then dies of SIGSEGV: the guard must KILL the child
# without killing itself, and report the engine's signal, not its own.
DIES_LEAVING_A_STUBBORN_CHILD = [
    sys.executable,
    "-c",
    textwrap.dedent("""
    import os, signal, subprocess, sys, time
    subprocess.Popen([sys.executable, "-c",
                      "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "print('child up', flush=True); time.sleep(300)"])
    time.sleep(1)
    print("ERROR 12-01 10:00:00 [core.py:1] RuntimeError: worker lost its mind", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
"""),
]


def test_the_engines_signal_is_reported_when_its_child_needs_a_sigkill(tmp_path: Path) -> None:
    proc = GuardedProcess(DIES_LEAVING_A_STUBBORN_CHILD, {}, tmp_path / "engine.log", grace_s=2)
    try:
        assert _wait_for(lambda: not proc.alive(), timeout=30), proc.read_log()
        log = proc.read_log()
        assert proc.returncode == 128 + signal.SIGSEGV, log
        assert "[autotune-guard] engine killed by signal 11 (SIGSEGV)" in log
        assert "SIGKILL" in log  # the child ignored TERM: the guard did need a KILL
        # Nothing of the tree is left (the sentinel exits a moment after the guard).
        assert _wait_for(lambda: proc.pids() == [], timeout=5), proc.pids()
        failure = classify(log, proc.returncode)
        assert "SIGSEGV" in failure.reason
        assert "worker lost its mind" in failure.reason
    finally:
        proc.stop()
