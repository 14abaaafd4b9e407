"""Two trials at once on the CPU quickstart model, each engine pinned to its own core."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autotune.testing.processes import engine_processes
from autotune.testing.spaces import small_space, write_space

pytestmark = pytest.mark.engine


def test_two_trials_side_by_side(tmp_path: Path, demo_model: Path) -> None:
    space = write_space(tmp_path, small_space(tmp_path, demo_model))
    url = f"sqlite:///{tmp_path / 'parallel.db'}"
    cli = [sys.executable, "-m", "autotune.cli"]
    common = ["--space", str(space), "--storage", url, "--name", "par"]
    subprocess.run([*cli, "study", "start", *common, "--no-run"], check=True)
    optuna.load_study(study_name="par", storage=url).enqueue_trial({
        "quantization": "int8", "max_num_batched_tokens": 1024, "max_num_seqs": 16,
        "enable_chunked_prefill": True, "speculative_method": "none",
    })
    run = subprocess.run(
        [*cli, "study", "start", *common, "--trials", "2", "--parallel", "2",
         "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "at most 2 ran at once" in run.stdout
    shown = subprocess.run([*cli, "study", "show", "par", "--storage", url, "--format", "json"],
                           capture_output=True, text=True, check=True)
    trials = json.loads(shown.stdout)["trials"]
    assert [t["state"] for t in trials] == ["complete", "complete"]
    assert {t["devices"] for t in trials} == {"cpu:0", "cpu:1"}
    for t in trials:
        assert t["metrics"]["parallel_trials"] == 2
        assert t["metrics"]["completed"] == t["metrics"]["steady_window_requests"] >= 32
        assert 0 < t["metrics"]["cpu_util_mean_pct"] <= 100
        assert t["metrics"]["engine_rss_peak_mib"] > 100
    binds = sorted(
        "VLLM_CPU_OMP_THREADS_BIND='0'" in log.read_text()
        or "VLLM_CPU_OMP_THREADS_BIND='1'" in log.read_text()
        for log in (tmp_path / "logs" / "par").glob("trial-*.log")
    )
    assert binds == [True, True]
    logs = "".join(p.read_text() for p in (tmp_path / "logs" / "par").glob("trial-*.log"))
    assert "VLLM_CPU_OMP_THREADS_BIND='0'" in logs and "VLLM_CPU_OMP_THREADS_BIND='1'" in logs
    assert engine_processes() == []
