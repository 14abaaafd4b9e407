"""`confirm` against real fresh servers: one trial measured by a study (the session's study
"e2e", tests/e2e/conftest.py), then confirmed on one more server (an engine start of its
own). The verdict must follow the coverage it prints, the run must be kept with the study, and
the interval `study show --trial` reports must learn from it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from autotune.results.noise_model import configuration_key, headline_metrics, study_noise_model
from autotune.store import open_catalog

pytestmark = pytest.mark.engine

AUTOTUNE = [sys.executable, "-m", "autotune.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AUTOTUNE, *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def confirmed(e2e_study: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    # The session's study "e2e" (tests/e2e/conftest.py): its defaults' trial, measured
    # on the study's own server, is the one confirmed.
    tmp = tmp_path_factory.mktemp("confirm")
    url, name = e2e_study["url"], e2e_study["name"]
    catalog = open_catalog(url)
    trial = catalog.list_trials(name)[0]
    assert trial.is_default and trial.state == "complete", trial.failure_reason
    before = study_noise_model(catalog, name).intervals(trial)
    confirm = run_cli("confirm", name, "--storage", url, "--trial", str(trial.number),
                      "--times", "1", "--space", str(e2e_study["space"]),
                      "--log-dir", str(tmp / "logs"))
    shown = run_cli("study", "show", name, "--storage", url, "--trial", str(trial.number))
    return {"url": url, "name": name, "trial": trial, "before": before, "confirm": confirm,
            "shown": shown}


def test_confirm_reports_each_interval_and_its_coverage(confirmed: dict) -> None:
    run, before = confirmed["confirm"], confirmed["before"]
    assert run.returncode in (0, 3), run.stdout + run.stderr  # 3: the verdict, checked last
    # no ladder: the main measurement's figures are the headline ones
    assert set(before) == set(headline_metrics(confirmed["trial"].metrics))
    assert set(before) == {"output_throughput", "ttft_p95_ms", "e2e_p95_ms"}
    runs = open_catalog(confirmed["url"]).fresh_runs(confirmed["name"])
    assert len(runs) == 1 and {r.key for r in runs} == {configuration_key(confirmed["trial"])}
    for metric, interval in before.items():
        values = [r.metrics[metric] for r in runs]
        inside = sum(interval.contains(v) for v in values)
        line = next(line for line in run.stdout.splitlines() if line.startswith(f"{metric}:"))
        assert f"fresh-server interval {interval.text()}: {inside} of 1 inside" in line, line
        assert all(f"{v:.1f}" in line for v in values)
    # One fresh run outside a 95% interval is what the interval itself expects 5% of the time:
    # it refutes nothing (tests/results/test_intervals.py covers refuting coverage), so the
    # verdict is that the intervals hold.
    assert run.returncode == 0 and "the study's intervals hold" in run.stdout, run.stdout


def test_the_interval_learns_from_the_confirm_runs(confirmed: dict) -> None:
    shown, trial = confirmed["shown"], confirmed["trial"]
    assert shown.returncode == 0, shown.stderr
    assert "what a fresh server will measure (95% interval)" in shown.stdout
    after = study_noise_model(open_catalog(confirmed["url"]), confirmed["name"]).intervals(trial)
    for metric, interval in after.items():
        assert interval.runs == 2 and interval.spread.evidence_df == 1
        assert interval.contains(trial.metrics[metric])
        assert interval.text() in shown.stdout
    assert re.search(r"1 configuration\(s\) measured on several fresh servers, 1 df",
                     shown.stdout)
