"""The real study that several engine test modules read: run once per session (each of its
trials starts a vLLM engine, 30-45 s on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autotune.space.model import Space
from autotune.testing.spaces import small_space, write_space

AUTOTUNE = [sys.executable, "-m", "autotune.cli"]
# Forced to fail: fp8_per_tensor is unsupported on the CPU build.
FORCED_FAILURE = {
    "quantization": "fp8_tensor",
    "max_num_batched_tokens": 1024,
    "max_num_seqs": 16,
    "enable_chunked_prefill": True,
    "speculative_method": "none",
}
# The trained demo model's held-out tasks: the quality probe of every trial.
QUALITY_PROMPTS = 60


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*AUTOTUNE, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def e2e_study(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> dict:
    """Study "e2e" on the small space with the quality probe: the vLLM defaults, a forced
    failure, then greedy ngram speculation, int8 and fp8 per channel, each the defaults' nominal
    values with one variant changed (five trials, four engines that serve). ``report`` is
    `study show --format json` as the run left it and ``trials`` its trials by variant
    (``default``, ``failure``, ``ngram``, ``int8``, ``fp8``). tests/e2e/test_study_e2e.py reads
    the study, test_study_quality.py its quality probe, test_confirm_interval.py confirms the
    defaults' trial on fresh servers (runs kept with the study, not trials: ``report`` stays
    true)."""
    tmp = tmp_path_factory.mktemp("study")
    data = small_space(tmp, demo_model)
    data["quality"] = {
        "prompts": "evals/demo-tasks.jsonl",
        "num_prompts": QUALITY_PROMPTS,
        "max_tokens": 12,
        "batch_size": 30,
        "min": {"quality_accuracy_delta": -0.01},
    }
    variants = data["model"]["quantization_variants"]
    variants["fp8_tensor"] = {"method": "fp8_per_tensor"}
    variants["fp8ch"] = {"method": "fp8_per_channel"}
    data["parameters"]["quantization"]["choices"] = ["none", "int8", "fp8", "fp8_tensor", "fp8ch"]
    space = write_space(tmp, data)
    # The same flags as the default trial's nominal values; only the variant under test differs.
    base = {**Space.model_validate(data).default_params(), "speculative_method": "none",
            "quantization": "none"}
    enqueued = {
        "failure": FORCED_FAILURE,
        "ngram": {**base, "speculative_method": "ngram", "num_speculative_tokens": 3},
        "int8": {**base, "quantization": "int8"},
        "fp8": {**base, "quantization": "fp8ch"},
    }
    url = f"sqlite:///{tmp / 'study.db'}"
    created = run_cli(
        "study", "start", "--space", str(space), "--storage", url, "--name", "e2e", "--no-run"
    )
    assert created.returncode == 0, created.stderr
    handle = optuna.load_study(study_name="e2e", storage=url)
    for params in enqueued.values():
        handle.enqueue_trial(params)
    ran = run_cli(
        "study", "start", "--space", str(space), "--storage", url, "--name", "e2e",
        "--trials", str(1 + len(enqueued)), "--log-dir", str(tmp / "logs"),
        "--no-confirm-stage",  # test_confirm_interval.py adds the fresh servers it checks
    )
    shown = run_cli("study", "show", "e2e", "--storage", url, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    trials = {"default": next(t for t in report["trials"] if t["is_default"])}
    for variant, params in enqueued.items():
        trials[variant] = next(t for t in report["trials"] if t["params"] == params)
    return {"run": ran, "report": report, "trials": trials, "url": url, "tmp": tmp,
            "space": space, "name": "e2e"}
