"""Live reading: incremental re-reads equal full ones, new trials show up, a writer in another
process never breaks a reader, and any Optuna storage works (PostgreSQL too)."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from autotune.dashboard.data import Refreshing, Snapshot
from autotune.results.report import load_report
from autotune.store import open_catalog
from autotune.store.synthetic import finish_trial, write_study, write_trial
from tests.support.dashboard import decode_trials, study_id

ROOT = Path(__file__).resolve().parents[2]
OTHER_METRICS = ("request_goodput", "ttft_p99_ms")


def test_incremental_refresh_equals_a_full_read(tmp_path):
    """Trials start, finish out of order, fail: after each change the incrementally refreshed
    snapshot encodes exactly what a fresh read does, Pareto fronts included."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    study = write_study(url, "live", "FFVXFR", seed=5)
    catalog = open_catalog(url)
    snapshot = Snapshot.load(catalog, catalog.get_study("live"))
    snapshot.front(OTHER_METRICS)
    rng = random.Random(1)
    running = [5]
    for _ in range(30):
        roll = rng.random()
        if roll < 0.3 and running:
            finish_trial(url, study, running.pop(rng.randrange(len(running))),
                         rng.choice("FFVX"), rng)
        elif roll < 0.5:
            running.append(write_trial(url, study, "R", rng))
        else:
            write_trial(url, study, rng.choice("FFFVX"), rng)
        record = catalog.get_study("live")
        snapshot = snapshot.refreshed(catalog, record)
        fresh = Snapshot.load(catalog, record)
        assert snapshot.trials_json() == fresh.trials_json()
        assert snapshot.summary == fresh.summary
        assert snapshot.front(OTHER_METRICS) == fresh.front(OTHER_METRICS)
    assert snapshot.report.pareto_front == load_report(catalog, "live").pareto_front
    assert len(snapshot.report.trials) > 20


def test_refreshing_serves_the_previous_value_while_a_slow_read_runs():
    executor = ThreadPoolExecutor(max_workers=1)
    cache: Refreshing[str] = Refreshing(executor, wait_s=0.05)
    first = datetime(2026, 1, 1)
    assert cache.get("k", first, lambda previous: "v1") == "v1"

    def slow(previous: str | None) -> str:
        time.sleep(0.5)
        return f"{previous}+v2"

    later = first + timedelta(seconds=1)
    assert cache.get("k", later, slow) == "v1"  # not waited for
    deadline = time.monotonic() + 5
    while cache.get("k", later, slow) != "v1+v2":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    executor.shutdown()


def test_new_trials_appear_when_polling_after(tmp_path, client_for):
    url = f"sqlite:///{tmp_path / 'poll.db'}"
    study = write_study(url, "poll", "FFR", seed=6)
    client = client_for(url)
    sid = study_id(url, "poll")
    first = client.get(f"/api/studies/{sid}/trials").json()
    assert first["counts"]["running"] == 1
    # The page asks for the trials after the last settled one: here 1 (trial 2 runs).
    rng = random.Random(2)
    finish_trial(url, study, 2, "F", rng)
    write_trial(url, study, "X", rng)
    poll = client.get(f"/api/studies/{sid}/trials?after=1").json()
    assert poll["version"] != first["version"]
    trials = decode_trials(poll)
    assert [(t["number"], t["state"]) for t in trials] == [(2, "complete"), (3, "failed")]
    assert poll["counts"]["total"] == 4 and poll["counts"]["running"] == 0
    assert client.get(f"/api/studies/{sid}").json()["counts"]["failed"] == 1


WRITER = textwrap.dedent("""
    import random, sys, time
    sys.path.insert(0, {root!r})
    import optuna
    from autotune.store.synthetic import write_trial
    study = optuna.load_study(study_name="busy", storage={url!r})
    rng = random.Random(0)
    for kind in {kinds!r}:
        write_trial({url!r}, study, kind, rng)
        time.sleep(0.02)
""")


def test_reading_while_another_process_writes(tmp_path, client_for):
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    write_study(url, "busy", "F", seed=7)
    kinds = "FVXF" * 8
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=str(ROOT), url=url, kinds=kinds)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    client = client_for(url)
    sid = study_id(url, "busy")
    seen = []
    try:
        while writer.poll() is None:
            for path in (f"/api/studies/{sid}/trials?after={max(len(seen) - 3, -1)}",
                         f"/api/studies/{sid}", "/api/studies", f"/studies/{sid}",
                         f"/api/studies/{sid}/front"):
                response = client.get(path)
                assert response.status_code == 200, (path, response.text)
            seen.append(client.get(f"/api/studies/{sid}").json()["counts"]["total"])
    finally:
        output = writer.communicate(timeout=60)[0]
    assert writer.returncode == 0, output
    assert seen == sorted(seen)  # never goes back
    deadline = time.monotonic() + 10
    while client.get(f"/api/studies/{sid}").json()["counts"]["total"] != 1 + len(kinds):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    payload = client.get(f"/api/studies/{sid}/trials").json()
    assert payload["pareto_front"] == load_report(open_catalog(url), "busy").pareto_front
    assert len(payload["trials"]) == 1 + len(kinds)


@pytest.mark.postgres
def test_postgres_storage(postgres_url, client_for):
    write_study(postgres_url, "pg", "FVXF", seed=8)
    client = client_for(postgres_url)
    [study] = client.get("/api/studies").json()
    assert study["counts"] == {"complete": 3, "failed": 1, "rejected": 0, "interrupted": 0,
                               "running": 0, "reused": 0, "skipped": 0, "total": 4}
    assert client.get(f"/studies/{study['id']}/trials/1").status_code == 200
    figures = client.get(f"/api/studies/{study['id']}/figures").json()
    assert figures["history"] is not None
