"""Several `autotune worker` processes on one PostgreSQL study, with real vLLM engines (CPU
build): they share the budget, and a worker killed with `kill -9` mid-trial is detected by its
missing heartbeat, its engine dies with it, and another worker retries its configuration."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from autotune.engines.process import session_members
from autotune.store.db import repository
from autotune.testing.processes import engine_processes
from autotune.testing.spaces import small_space, write_space

pytestmark = [pytest.mark.engine, pytest.mark.postgres]

CLI = [sys.executable, "-m", "autotune.cli"]
GUARD_LINE = re.compile(r"\[autotune-guard\] engine pid (\d+) in process group (\d+)")
FAST_HEARTBEAT = {"AUTOTUNE_HEARTBEAT_INTERVAL_S": "1", "AUTOTUNE_GRACE_PERIOD_S": "6"}


def _create(tmp_path: Path, demo_model: Path, url: str, budget: int) -> Path:
    space = write_space(tmp_path, small_space(tmp_path, demo_model))
    subprocess.run([*CLI, "study", "start", "--space", str(space), "--storage", url,
                    "--name", "shared", "--trials", str(budget), "--no-run"], check=True)
    return space


def _worker(url: str, cores: str, logs: Path, space: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "worker", "--study", "shared", "--storage", url, "--devices", f"cpu:{cores}",
         "--log-dir", str(logs), "--space", str(space)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **env},
    )


def _check_complete_records(url: str, budget: int) -> list:
    trials = repository.list_trials(url=url, study_name="shared")
    done = [t for t in trials if t.state == "complete"]
    assert len(done) == budget
    for t in done:
        assert t.metrics["completed"] == t.metrics["steady_window_requests"] >= 32
        assert t.metrics["output_throughput"] > 0
        assert t.engine_command and t.finished_at and t.host and t.startup_s
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    handle = optuna.load_study(study_name="shared", storage=url)
    assert sorted(t.number for t in handle.trials if t.state.is_finished()) == sorted(numbers)
    return trials


def test_two_workers_share_the_budget(tmp_path: Path, demo_model: Path, postgres_url: str):
    # Each worker's engine has one core: one trial each is enough to show the budget shared
    # (a worker that ignored the other's claims would run both).
    space = _create(tmp_path, demo_model, postgres_url, budget=2)
    a = _worker(postgres_url, "0", tmp_path / "a", space)
    b = _worker(postgres_url, "1", tmp_path / "b", space)
    out_a, _ = a.communicate(timeout=600)
    out_b, _ = b.communicate(timeout=600)
    assert a.returncode == 0, out_a
    assert b.returncode == 0, out_b
    trials = _check_complete_records(postgres_url, budget=2)
    # Suggestions repeating a configuration are answered from its trial (state "reused",
    # no engine); every configuration ran once, none was lost.
    ran = [t for t in trials if t.state not in ("reused", "skipped")]
    assert len(ran) == 2
    assert len({json.dumps(t.params, sort_keys=True) for t in ran}) == 2
    for t in trials:
        if t.state == "reused":
            source = int(t.failure_reason.split()[5].rstrip(":"))
            assert next(r for r in ran if r.number == source).params == t.params
    assert {t.devices for t in ran} == {"cpu:0", "cpu:1"}  # both workers took trials
    assert engine_processes() == []


def test_kill9_worker_is_retried_elsewhere(tmp_path: Path, demo_model: Path,
                                           postgres_url: str) -> None:
    # Budget 1: the survivor waits while the victim's trial runs elsewhere (it counts toward
    # the budget until it is found lost), then runs its retry: one engine start of its own.
    space = _create(tmp_path, demo_model, postgres_url, budget=1)
    victim = _worker(postgres_url, "0", tmp_path / "victim", space, **FAST_HEARTBEAT)
    log = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and log is None:
        for candidate in (tmp_path / "victim" / "shared").glob("trial-*.log"):
            text = candidate.read_text()
            if GUARD_LINE.search(text) and "APIServer" in text:
                log = candidate
        time.sleep(0.5)
    assert log is not None, "the first worker never started an engine"
    sid = int(GUARD_LINE.search(log.read_text()).group(2))
    lost_number = int(log.stem.split("-")[1])
    survivor = _worker(postgres_url, "1", tmp_path / "survivor", space, **FAST_HEARTBEAT)
    time.sleep(2)
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()

    # The victim's engine dies with it.
    while session_members(sid) and time.monotonic() - killed_at < 20:
        time.sleep(0.2)
    assert session_members(sid) == []

    # Its trial is failed by the survivor's heartbeat check within grace + margin.
    recovered = None
    while time.monotonic() - killed_at < 6 + 15:
        record = repository.get_trial(url=postgres_url, study_name="shared", number=lost_number)
        if record.failure_kind == "worker_lost":
            recovered = time.monotonic() - killed_at
            break
        time.sleep(0.5)
    assert recovered is not None, "the dead worker's trial was never marked failed"
    print(f"dead worker's trial marked worker_lost {recovered:.1f}s after kill -9 "
          "(heartbeat 1 s, grace 6 s)")

    out, _ = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, out
    trials = _check_complete_records(postgres_url, budget=1)
    lost = next(t for t in trials if t.number == lost_number)
    assert lost.state == "failed" and "no heartbeat" in lost.failure_reason
    retry = next(t for t in trials if t.retry_of == lost_number)
    assert retry.state == "complete" and retry.params == lost.params
    assert engine_processes() == []


def test_sqlite_refuses_a_second_process(tmp_path: Path, demo_model: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    space = _create(tmp_path, demo_model, url, budget=2)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from autotune.store.connection import claim_single_writer
        claim_single_writer({url!r})
        print("holding", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        refused = subprocess.run([*CLI, "worker", "--study", "shared", "--storage", url,
                                  "--space", str(space)],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert "already used by another autotune process" in refused.stderr
        assert "postgresql" in refused.stderr.lower()
        assert engine_processes() == []
    finally:
        holder.kill()
        holder.wait()
