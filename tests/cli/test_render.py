"""What `study show` and the end-of-study front print, at 80 and 120 columns: every objective
value, every changed parameter as a whole `short=value`, nothing cut with "…"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from autotune import short_names
from autotune.results.report import StudyReport, load_report
from autotune.store import open_catalog
from autotune.store.db.session import upgrade
from autotune.store.synthetic import write_study
from tests.support.dashboard import QUICKSTART, QUICKSTART_DB, ladder_study_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quickstart_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("quickstart") / "quickstart.db"
    shutil.copy(QUICKSTART_DB, path)
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(scope="module")
def mixed_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Feasible (F), SLO-violating (V) and failed (X) trials, the default trial first."""
    url = f"sqlite:///{tmp_path_factory.mktemp('mixed') / 'mixed.db'}"
    write_study(url, "mixed", "FVFFXFVFX", seed=3)
    return url


def show(url: str, name: str, *args: str, columns: int) -> str:
    """The real CLI, stdout not a terminal, at ``columns`` (as a terminal of that width sets)."""
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
    env.pop("FORCE_COLOR", None)
    run = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "study", "show", name, "--storage", url, *args],
        capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    return run.stdout


def must_see(report: StudyReport, text: str) -> None:
    """Each listed trial's objective values and its changed parameters, whole on one line."""
    lines = text.splitlines()
    for t in report.trials:
        if t.state == "reused":
            continue
        for metric in report.metrics:
            if metric in t.metrics:
                assert f"{t.metrics[metric]:.4g}" in text, (t.number, metric)
        for k, v in report.changed(t).items():
            item = short_names.assignment(k, v)
            assert any(item in line for line in lines), (t.number, item)


@pytest.mark.parametrize("columns", [80, 120])
def test_study_show_fits_the_terminal(quickstart_url: str, columns: int) -> None:
    report = load_report(open_catalog(quickstart_url), QUICKSTART)
    text = show(quickstart_url, QUICKSTART, columns=columns)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= columns
    must_see(report, text)
    # The changed parameters of trial 1, in their short names, and not the unchanged ones.
    for item in ("quant=int8", "batch_tok=1361", "seqs=25", "chunked=off", "spec=ngram",
                 "spec_tok=4"):
        assert item in text
    assert "quantization" not in text and "max_num_seqs" not in text
    assert "×1.20" in text  # trial 1's throughput gain over the defaults (1136 / 946.8)


def test_the_heading_is_whole(tmp_path: Path) -> None:
    # As the table's title, the heading of this real ladder quickstart (82 characters) was cut
    # at the 80th column, with no "…": it is a line of its own now.
    url = ladder_study_url(tmp_path)
    report = load_report(open_catalog(url), "quickstart-cpu")
    text = show(url, "quickstart-cpu", columns=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    heading = f"study quickstart-cpu: {report.model} on {report.hardware}"
    assert len(heading) > 80 and heading in " ".join(text.split())
    must_see(report, text)
    # Trials whose quality figures are the same share one line.
    assert "trials 0, 2, 3, 5, 6 quality: accuracy 100.0%" in text


@pytest.mark.parametrize("columns", [80, 120])
def test_failures_are_shown_whole(mixed_url: str, columns: int) -> None:
    report = load_report(open_catalog(mixed_url), "mixed")
    text = show(mixed_url, "mixed", columns=columns)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= columns
    must_see(report, text)
    joined = " ".join(text.split())  # a reason may wrap; its words stay whole and in order
    failed = [t for t in report.trials if t.state == "failed"]
    assert failed
    for t in failed:
        assert f"trial {t.number} {short_names.failure(t.failure_kind)}: {t.failure_reason}" \
            in joined
    violating = [t for t in report.trials if t.state == "complete" and not t.feasible]
    assert violating and "missed" in text
    assert report.pareto_front and "Pareto front" in text


@pytest.mark.parametrize("columns", [80, 120])
def test_end_of_study_front_fits(mixed_url: str, columns: int) -> None:
    from autotune.cli.render import pareto_table

    report = load_report(open_catalog(mixed_url), "mixed")
    console = Console(width=columns, record=True)
    console.print(pareto_table(report))
    text = console.export_text()
    assert "…" not in text
    for number in report.pareto_front:
        t = report.trial(number)
        for metric in report.metrics:
            assert f"{t.metrics[metric]:.4g}" in text
        for k, v in report.changed(t).items():
            assert short_names.assignment(k, v) in text


def test_wide_and_chosen_columns(quickstart_url: str) -> None:
    wide = show(quickstart_url, QUICKSTART, "--wide", columns=300)
    assert "startup s" in wide and "quantization=int8" in wide
    chosen = show(quickstart_url, QUICKSTART, "--columns", "trial,params,ttft_p95_ms,startup",
                  columns=80)
    assert "ttft p95 ms" in chosen and "1651" in chosen and "33.6" in chosen
    assert "e2e p95 ms" not in chosen
    bad = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "study", "show", QUICKSTART, "--storage",
         quickstart_url, "--columns", "trial,nonsense"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode == 2 and "nonsense" in bad.stderr and "params" in bad.stderr


def test_one_trial_in_full(quickstart_url: str, mixed_url: str) -> None:
    text = show(quickstart_url, QUICKSTART, "--trial", "1", columns=80)
    assert "…" not in text
    report = load_report(open_catalog(quickstart_url), QUICKSTART)
    t = report.trial(1)
    for key in ("ttft_p95_ms", "e2e_p99_ms", "tpot_mean_ms", "itl_p50_ms"):
        assert f"{t.metrics[key]:.1f}" in text, key
    assert f"{t.metrics['output_throughput']:.1f}" in text
    assert "max_num_batched_tokens" in text and "1361" in text  # full names here
    assert f"{t.startup_s:.1f}" in text and f"{t.benchmark_s:.1f}" in text
    mixed = load_report(open_catalog(mixed_url), "mixed")
    failed = next(t for t in mixed.trials if t.state == "failed")
    text = " ".join(show(mixed_url, "mixed", "--trial", str(failed.number), columns=80).split())
    assert failed.failure_reason in text and failed.failure_line in text
    missing = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "study", "show", "mixed", "--storage", mixed_url,
         "--trial", "99"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert missing.returncode == 2 and "99" in missing.stderr


def test_json_and_csv_are_the_reports(quickstart_url: str) -> None:
    report = load_report(open_catalog(quickstart_url), QUICKSTART)
    assert show(quickstart_url, QUICKSTART, "--format", "json", columns=80) \
        == report.to_json() + "\n"
    csv = report.to_csv().replace("\r\n", "\n")  # the test reads stdout as text
    assert show(quickstart_url, QUICKSTART, "--format", "csv", columns=80) == csv
