"""The quality probe on real vLLM servers (CPU build) in a real study (the session's study "e2e",
tests/e2e/conftest.py): the trained demo model's accuracy with the vLLM defaults, greedy ngram
speculative decoding against the reference, and the accuracy and agreement of an int8 and an
fp8 trial, stored with the study."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest

from autotune.store.attrs import REFERENCE_ATTR
from tests.e2e.conftest import QUALITY_PROMPTS

pytestmark = pytest.mark.engine

AUTOTUNE = [sys.executable, "-m", "autotune.cli"]
# The trained demo model answers at least this share of its held-out tasks correctly with the
# vLLM-default configuration (its build measures 100% in float32 on the weights it saves).
DEMO_ACCURACY_THRESHOLD = 0.95


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # room for every column of `study show`
    return subprocess.run(
        [*AUTOTUNE, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def study(e2e_study: dict) -> dict:
    """The session's study "e2e" (tests/e2e/conftest.py): its trials by variant."""
    return e2e_study


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
    assert "quantization: int8_per_channel_weight_only" in exported.stdout
