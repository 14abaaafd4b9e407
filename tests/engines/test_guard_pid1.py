"""The guard under a controller that is PID 1 (a container, the Kubernetes case) or a child
subreaper: every orphan of an engine tree comes back to the controller, which must reap it; and
the engine's own exit status survives an outside SIGTERM (issue 24, item 11).

PID 1 is real where ``unshare`` may make a user and PID namespace; elsewhere the controller makes
itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), which is what PID 1 is to orphans.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autotune.engines.failures import classify
from autotune.engines.process import GuardedProcess
from autotune.trial_state import FailureKind

ROOT = Path(__file__).resolve().parents[2]

# The controller: starts an engine under the guard three times (stopped; ended on its own;
# its guard killed with SIGKILL), then reports its own pid and its zombie children.
CONTROLLER = textwrap.dedent("""
    import ctypes, json, os, sys, time
    from pathlib import Path
    from autotune import procfs
    from autotune.engines.process import GuardedProcess
    if os.getpid() != 1:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    logs = Path(sys.argv[1])
    sleeper = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(300)"]
    def wait_up(proc):
        deadline = time.monotonic() + 20
        while "up" not in proc.read_log() and time.monotonic() < deadline:
            time.sleep(0.05)
    for n in range(3):
        proc = GuardedProcess(sleeper, {}, logs / f"e{n}.log", 2)
        wait_up(proc)
        proc.stop()
    proc = GuardedProcess([sys.executable, "-c", "print('up')"], {}, logs / "own.log", 2)
    while proc.alive():
        time.sleep(0.05)
    proc.stop()
    proc = GuardedProcess(sleeper, {}, logs / "killed.log", 2)
    wait_up(proc)
    os.kill(proc.pid, 9)
    proc.stop()
    time.sleep(0.5)
    me = os.getpid()
    zombies = []
    for pid in procfs.pids():
        stat = procfs.process_stat(pid)
        if stat is not None and stat.ppid == me and stat.state == "Z":
            zombies.append(pid)
    print(json.dumps({"pid": me, "zombies": zombies}), flush=True)
""")


def _can_be_pid1() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("as_pid1", [True, False], ids=["pid1", "subreaper"])
def test_no_zombie_is_left_per_start(tmp_path: Path, as_pid1: bool) -> None:
    argv = [sys.executable, "-c", CONTROLLER, str(tmp_path)]
    if as_pid1:
        if not _can_be_pid1():
            pytest.skip("unshare cannot make a PID namespace here")
        argv = ["unshare", "--user", "--pid", "--fork", "--mount-proc", *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    if as_pid1:
        assert report["pid"] == 1
    assert report["zombies"] == [], report


SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(300)"]
# An engine that ends cleanly on SIGTERM, as vLLM's API server (uvicorn) does: exit status 0.
GRACEFUL = [sys.executable, "-c", textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print('up', flush=True)
    time.sleep(300)
""")]


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("engine", [SLEEPER, GRACEFUL], ids=["default", "graceful"])
def test_an_outside_sigterm_to_the_group_is_not_a_crash(tmp_path: Path, engine) -> None:
    proc = GuardedProcess(engine, {}, tmp_path / "engine.log", grace_s=2)
    try:
        assert _wait_for(lambda: "up" in proc.read_log())
        os.killpg(proc.pid, signal.SIGTERM)  # an operator's `kill -TERM -- -PGID`
        assert _wait_for(lambda: not proc.alive())
        log = proc.read_log()
        assert proc.returncode == 128 + signal.SIGTERM, log
        failure = classify(log, proc.returncode)
        assert failure.kind == FailureKind.TRANSIENT, failure
        assert "SIGTERM" in failure.reason
    finally:
        proc.stop()


def test_an_outside_sigterm_to_the_engine_keeps_its_status(tmp_path: Path) -> None:
    proc = GuardedProcess(SLEEPER, {}, tmp_path / "engine.log", grace_s=2)
    try:
        assert _wait_for(lambda: "up" in proc.read_log())
        engine = int(re.search(r"engine pid (\d+)", proc.read_log()).group(1))
        os.kill(engine, signal.SIGTERM)  # the engine alone: its guard gets no signal
        assert _wait_for(lambda: not proc.alive())
        assert proc.returncode == 128 + signal.SIGTERM, proc.read_log()
        assert classify(proc.read_log(), proc.returncode).kind == FailureKind.TRANSIENT
    finally:
        proc.stop()
