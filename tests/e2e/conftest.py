"""The real study that several engine test modules read: run once per session (each of its
trials starts a vLLM engine, 30-45 s on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autotune.testing.spaces import small_space, write_space

AUTOTUNE = [sys.executable, "-m", "autotune.cli"]
# Forced to fail (fp8_per_tensor is unsupported on the CPU build), then int8 + ngram.
E2E_ENQUEUED = [
    {
        "quantization": "fp8_tensor",
        "max_num_batched_tokens": 1024,
        "max_num_seqs": 16,
        "enable_chunked_prefill": True,
        "speculative_method": "none",
    },
    {
        "quantization": "int8",
        "max_num_batched_tokens": 512,
        "max_num_seqs": 8,
        "enable_chunked_prefill": True,
        "speculative_method": "ngram",
        "num_speculative_tokens": 2,
    },
]


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*AUTOTUNE, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def e2e_study(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> dict:
    """Study "e2e" on the small space: the vLLM defaults, a forced failure, int8 + ngram (three
    trials). ``report`` is `study show --format json` as the run left it; tests/e2e/
    test_study_e2e.py reads it, test_confirm_interval.py confirms the defaults' trial on fresh
    servers (runs kept with the study, not trials: ``report`` stays true)."""
    tmp = tmp_path_factory.mktemp("study")
    data = small_space(tmp, demo_model)
    data["model"]["quantization_variants"]["fp8_tensor"] = {"method": "fp8_per_tensor"}
    data["parameters"]["quantization"]["choices"] = ["none", "int8", "fp8", "fp8_tensor"]
    space = write_space(tmp, data)
    url = f"sqlite:///{tmp / 'study.db'}"
    created = run_cli(
        "study", "start", "--space", str(space), "--storage", url, "--name", "e2e", "--no-run"
    )
    assert created.returncode == 0, created.stderr
    handle = optuna.load_study(study_name="e2e", storage=url)
    for params in E2E_ENQUEUED:
        handle.enqueue_trial(params)
    ran = run_cli(
        "study", "start", "--space", str(space), "--storage", url, "--name", "e2e",
        "--trials", "3", "--log-dir", str(tmp / "logs"),
    )
    shown = run_cli("study", "show", "e2e", "--storage", url, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return {"run": ran, "report": json.loads(shown.stdout), "url": url, "tmp": tmp,
            "space": space, "name": "e2e"}
