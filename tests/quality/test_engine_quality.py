"""The quality probe on real vLLM servers (CPU build) in a real study: the trained demo model's
accuracy with the vLLM defaults, greedy ngram speculative decoding against the reference, and
the accuracy and agreement of an int8 and an fp8 trial, stored with the study. Four engine
starts, one at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autotune.space.model import Space
from autotune.store.attrs import REFERENCE_ATTR
from autotune.testing.processes import engine_processes
from autotune.testing.spaces import small_space, write_space

pytestmark = pytest.mark.engine

AUTOTUNE = [sys.executable, "-m", "autotune.cli"]
# The trained demo model answers at least this share of its held-out tasks correctly with the
# vLLM-default configuration (its build measures 100% in float32 on the weights it saves).
DEMO_ACCURACY_THRESHOLD = 0.95
QUALITY_PROMPTS = 60


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # room for every column of `study show`
    return subprocess.run(
        [*AUTOTUNE, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory, demo_model: Path) -> dict:
    tmp = tmp_path_factory.mktemp("quality")
    data = small_space(tmp, demo_model)
    # The probe is what is tested here: a short load (each trial still measures one).
    data["workload"].update({"num_requests": 8, "warmup_requests": 0})
    data["quality"] = {
        "prompts": "evals/demo-tasks.jsonl",
        "num_prompts": QUALITY_PROMPTS,
        "max_tokens": 12,
        "batch_size": 30,
        "min": {"quality_accuracy_delta": -0.01},
    }
    data["model"]["quantization_variants"]["fp8ch"] = {"method": "fp8_per_channel"}
    data["parameters"]["quantization"]["choices"].append("fp8ch")
    path = write_space(tmp, data)
    space = Space.model_validate(data)
    # The same flags as the default trial's nominal values; only the variant under test differs.
    base = {**space.default_params(), "speculative_method": "none", "quantization": "none"}
    enqueued = {
        "ngram": {**base, "speculative_method": "ngram", "num_speculative_tokens": 3},
        "int8": {**base, "quantization": "int8"},
        "fp8": {**base, "quantization": "fp8ch"},
    }
    url = f"sqlite:///{tmp / 'study.db'}"
    name = "quality"
    created = run_cli(
        "study", "start", "--space", str(path), "--storage", url, "--name", name, "--no-run"
    )
    assert created.returncode == 0, created.stderr
    handle = optuna.load_study(study_name=name, storage=url)
    for params in enqueued.values():
        handle.enqueue_trial(params)
    ran = run_cli(
        "study",
        "start",
        "--space",
        str(path),
        "--storage",
        url,
        "--name",
        name,
        "--trials",
        str(1 + len(enqueued)),
        "--log-dir",
        str(tmp / "logs"),
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    shown = run_cli("study", "show", name, "--storage", url, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    trials = json.loads(shown.stdout)["trials"]
    by_variant = {"default": next(t for t in trials if t["is_default"])}
    for variant, params in enqueued.items():
        by_variant[variant] = next(t for t in trials if t["params"] == params)
    for variant, t in by_variant.items():
        print(variant, {k: v for k, v in t["metrics"].items() if k.startswith("quality")})
    return {"url": url, "name": name, "trials": by_variant, "tmp": tmp}


def test_default_trial_is_the_accurate_reference(study: dict) -> None:
    t = study["trials"]["default"]
    assert t["state"] == "complete", t["failure_reason"]
    m = t["metrics"]
    assert m["quality_prompts"] == QUALITY_PROMPTS and m["quality_labelled"] == QUALITY_PROMPTS
    assert m["quality_accuracy"] >= DEMO_ACCURACY_THRESHOLD
    assert m["quality_seq_match"] == 1.0 and m["quality_top1_agreement"] == 1.0
    assert m["quality_logprob_drift"] == 0.0 and m["quality_accuracy_delta"] == 0.0
    assert m["quality_s"] > 0
    handle = optuna.load_study(study_name=study["name"], storage=study["url"])
    reference = handle.user_attrs[REFERENCE_ATTR]
    assert reference["trial"] == t["number"]
    assert reference["accuracy"] == m["quality_accuracy"]
    assert len(reference["items"]) == QUALITY_PROMPTS


def test_greedy_ngram_speculation_is_lossless(study: dict) -> None:
    t = study["trials"]["ngram"]
    assert t["state"] == "complete", t["failure_reason"]
    m = t["metrics"]
    # Greedy verification accepts a draft token only when it is the target model's argmax, so
    # the generated sequences are the reference's, token for token.
    assert m["quality_seq_match"] == 1.0
    assert m["quality_top1_agreement"] == 1.0
    assert m["quality_accuracy_delta"] == 0.0
    # Teacher forcing is a plain prefill (no drafts): the same numbers as the reference's.
    assert m["quality_logprob_drift"] < 1e-3


QUALITY_KEYS = (
    "quality_accuracy",
    "quality_accuracy_delta",
    "quality_seq_match",
    "quality_top1_agreement",
    "quality_logprob_drift",
)


@pytest.mark.parametrize("variant", ["int8", "fp8"])
def test_quantized_trial_quality_is_measured_and_stored(study: dict, variant: str) -> None:
    t = study["trials"][variant]
    assert t["state"] == "complete", t["failure_reason"]
    m = t["metrics"]
    assert all(key in m for key in QUALITY_KEYS)
    assert 0.0 <= m["quality_accuracy"] <= 1.0
    assert 0.0 <= m["quality_top1_agreement"] <= 1.0
    assert t["violations"]["quality_accuracy_delta"] == pytest.approx(
        -0.01 - m["quality_accuracy_delta"]
    )
    assert t["feasible"] == all(v <= 0 for v in t["violations"].values())


def test_int8_weight_only_leaves_a_dense_model_unchanged(study: dict) -> None:
    # vLLM 0.32's `int8_per_channel_weight_only` shorthand quantizes MoE experts only ("linear
    # stays unquantized", vllm/config/quantization.py): on the dense demo Llama every number is
    # the reference's. The probe is what shows it.
    m = study["trials"]["int8"]["metrics"]
    assert m["quality_seq_match"] == 1.0 and m["quality_top1_agreement"] == 1.0
    assert m["quality_logprob_drift"] == 0.0


def test_fp8_moves_the_logprobs(study: dict) -> None:
    # fp8 per-channel weights with dynamic per-token fp8 activations: real quantization.
    assert study["trials"]["fp8"]["metrics"]["quality_logprob_drift"] > 0.0


def test_study_show_and_export_carry_quality(study: dict) -> None:
    shown = run_cli("study", "show", study["name"], "--storage", study["url"])
    assert shown.returncode == 0, shown.stderr
    assert "accuracy" in shown.stdout and "top-1 agree" in shown.stdout
    number = study["trials"]["int8"]["number"]
    exported = run_cli("export", study["name"], "--storage", study["url"], "--trial", str(number))
    assert exported.returncode == 0, exported.stderr
    header = [line for line in exported.stdout.splitlines() if line.startswith("# quality")]
    assert header and "accuracy" in header[0] and "top-1 agree" in header[0]


def test_no_engine_process_left(study: dict) -> None:
    assert engine_processes() == []
