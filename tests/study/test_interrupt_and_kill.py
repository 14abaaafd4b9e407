"""Ctrl-C and `kill -9` of the controller during a trial leave no engine process behind, and
the study resumes where it stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotune.engines.process import session_members
from autotune.testing.processes import engine_processes
from autotune.testing.spaces import small_space, write_space

pytestmark = pytest.mark.engine

GUARD_LINE = re.compile(r"\[autotune-guard\] engine pid (\d+) in process group (\d+)")


def _start(space: Path, url: str, logs: Path, trials: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autotune.cli",
            "study",
            "start",
            "--space",
            str(space),
            "--storage",
            url,
            "--name",
            "stop",
            "--trials",
            str(trials),
            "--log-dir",
            str(logs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell without job control starts background commands with SIGINT ignored, and
        # Python then installs no KeyboardInterrupt handler: give the controller the default
        # disposition, as a terminal's Ctrl-C finds it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_engine(log: Path, timeout: float = 120) -> int:
    """Wait until the engine's API server is loading; return the engine's session id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        found = GUARD_LINE.search(text)
        if found and "APIServer" in text:
            return int(found.group(2))
        time.sleep(0.5)
    raise AssertionError(f"engine never started; log: {text[-2000:]}")


def _gone(sid: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not session_members(sid):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"engine processes {session_members(sid)} still alive")


def _trials(url: str) -> list[dict]:
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "autotune.cli",
            "study",
            "show",
            "stop",
            "--storage",
            url,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(shown.stdout)["trials"]


def test_sigint_then_kill9_then_resume(tmp_path: Path, demo_model: Path) -> None:
    space = write_space(tmp_path, small_space(tmp_path, demo_model))
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    logs = tmp_path / "logs"
    log = logs / "stop" / "trial-0000.log"

    # 1. Ctrl-C during the first trial: engine torn down, trial interrupted, exit 130.
    controller = _start(space, url, logs, trials=1)
    sid = _wait_for_engine(log)
    controller.send_signal(signal.SIGINT)
    out, _ = controller.communicate(timeout=60)
    assert controller.returncode == 130, out
    assert "interrupted" in out
    assert session_members(sid) == []
    trials = _trials(url)
    assert [t["state"] for t in trials] == ["interrupted"]

    # 2. Resume; kill -9 the controller while its engine runs: the engine dies with it.
    log.unlink()
    controller = _start(space, url, logs, trials=1)
    log = logs / "stop" / "trial-0001.log"
    sid = _wait_for_engine(log)
    os.kill(controller.pid, signal.SIGKILL)
    controller.wait()
    took = _gone(sid, timeout=5 + 15)  # shutdown_grace_s 5 + margin
    print(f"engine gone {took:.1f}s after kill -9 of the controller")
    assert engine_processes() == []

    # 3. Resume again: the trial the killed controller left RUNNING is closed as interrupted
    # and its configuration (the vLLM defaults) runs to completion.
    controller = _start(space, url, logs, trials=1)
    out, _ = controller.communicate(timeout=400)
    assert controller.returncode == 0, out
    trials = _trials(url)
    assert [t["state"] for t in trials] == ["interrupted", "interrupted", "complete"]
    assert trials[-1]["is_default"]
    assert engine_processes() == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_engine_start_returns_within_seconds(
    tmp_path: Path, demo_model: Path, signum: int
) -> None:
    space = write_space(tmp_path, small_space(tmp_path, demo_model))
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    logs = tmp_path / "logs"
    controller = _start(space, url, logs, trials=1)
    sid = _wait_for_engine(logs / "stop" / "trial-0000.log")
    time.sleep(3)  # a few seconds into the start: vLLM is importing and loading
    sent = time.monotonic()
    controller.send_signal(signum)
    out, _ = controller.communicate(timeout=120)
    took = time.monotonic() - sent
    print(f"{signal.Signals(signum).name} during engine start: returned after {took:.1f}s")
    assert controller.returncode == 130, out
    assert took < 10, out
    assert session_members(sid) == []
    assert engine_processes() == []
    assert [t["state"] for t in _trials(url)] == ["interrupted"]
