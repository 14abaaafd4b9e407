"""Engine logs are bounded (issue 24, item 13): one engine's log never grows past its cap (its
head and its latest lines are kept, the middle left out and said so), and a study's log
directory keeps the newest logs only. Real processes under the guard."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autotune.engines import process
from autotune.engines.failures import classify
from autotune.engines.process import GuardedProcess

# An engine that says where it starts, prints ~6 MB, then fails with a last error line.
CHATTY = [sys.executable, "-c", textwrap.dedent("""
    import sys
    print("INFO first line: engine starting", flush=True)
    for i in range(60000):
        print(f"INFO 12-01 10:00:00 [loggers.py:1] line {i:06d} " + "x" * 80)
    print("ERROR 12-01 10:00:01 [core.py:1] RuntimeError: the very last error", flush=True)
    sys.exit(1)
""")]


def _wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_one_engines_log_stays_under_its_cap(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cap = 1024 * 1024
    monkeypatch.setenv(process.LOG_MAX_BYTES_ENV, str(cap))
    proc = GuardedProcess(CHATTY, {}, tmp_path / "engine.log", grace_s=2)
    try:
        assert _wait_for(lambda: not proc.alive())
    finally:
        proc.stop()
    log = proc.read_log()
    size = (tmp_path / "engine.log").stat().st_size
    assert size <= cap, size
    assert log.startswith("[autotune-guard] engine pid")
    assert "INFO first line: engine starting" in log  # the head: how it was started
    assert "line 059999" in log and "RuntimeError: the very last error" in log  # the tail
    assert "line 030000" not in log
    assert "bytes of the engine's output left out" in log
    assert "[autotune-guard] engine exited with status 1" in log
    failure = classify(log, proc.returncode)
    assert failure.line.endswith("RuntimeError: the very last error")


def test_a_study_keeps_its_newest_engine_logs(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(process.LOGS_KEEP_ENV, "5")
    logs = tmp_path / "logs"
    logs.mkdir()
    for n in range(10):
        path = logs / f"trial-{n:04d}.log"
        path.write_text(f"old {n}\n")
        os.utime(path, (1000 + n, 1000 + n))
    (logs / "notes.txt").write_text("not a log\n")
    proc = GuardedProcess([sys.executable, "-c", "print('up')"], {}, logs / "trial-0010.log",
                          grace_s=2)
    try:
        assert _wait_for(lambda: not proc.alive())
    finally:
        proc.stop()
    kept = sorted(p.name for p in logs.iterdir())
    assert kept == ["notes.txt", *(f"trial-{n:04d}.log" for n in range(6, 11))], kept
