"""`autotune worker` and `autotune confirm` check this machine before anything runs, as `study
start` does (issue 24, items 2 and 6): a model path that is not here, synthetic prompts longer
than the context, a dataset line that is not JSON, a trace without its columns. Each is refused
with exit 2, naming the file, the field and the line, before any engine and with nothing
written (no trial claimed, no log folder, the database untouched)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from autotune.space.model import load_space
from autotune.store import StudyFacts, open_store
from autotune.study import recording
from autotune.testing.spaces import small_space
from autotune.trial import TrialOutcome

CLI = [sys.executable, "-m", "autotune.cli"]
# Should a check regress, the "engine" exits at once instead of starting vLLM.
NO_ENGINE = ["{python}", "-c", "raise SystemExit(3)"]
CHAT = '{"messages": [{"role": "user", "content": "hi"}]}\n'

# (prompts, data file name and text or None, the field named, what the refusal says)
CASES = {
    "output_tokens": (
        {"kind": "random", "input_tokens": 64, "output_tokens": 100000}, None,
        "workload.prompts.output_tokens",
        "input_tokens + output_tokens (64 + 100000) exceed model.max_model_len 512"),
    "shared_prefix": (
        {"kind": "shared_prefix", "num_prefixes": 2, "prefix_tokens": 600, "suffix_tokens": 16,
         "output_tokens": 8}, None, "workload.prompts.prefix_tokens",
        "prefix_tokens + suffix_tokens + output_tokens (600 + 16 + 8) exceed "
        "model.max_model_len 512"),
    "chat_not_json": (
        {"kind": "chat"}, ("chat.jsonl", CHAT + '{"messages": [\n'),
        "workload.prompts.path", "chat.jsonl:2: not JSON"),
    "azure_columns": (
        {"kind": "trace", "format": "azure"},
        ("azure.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n"),
        "workload.prompts.path", "azure.csv:2: GeneratedTokens: missing"),
}


def _study(tmp_path: Path, prompts: dict, data: tuple[str, str] | None,
           model: str | None = None) -> tuple[str, Path]:
    """A study (one complete trial, written without an engine) whose space holds ``prompts``;
    returns (its storage URL, the space file)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    raw = small_space(tmp_path, model_dir)
    raw["engine"]["command"] = NO_ENGINE
    if model is not None:
        raw["model"]["path"] = model
    raw["workload"]["prompts"] = dict(prompts)
    if data is not None:
        name, text = data
        (tmp_path / name).write_text(text)
        raw["workload"]["prompts"]["path"] = str(tmp_path / name)
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store = open_store(url, "s")
    spec = load_space(space_file)  # the schema only: the checks are the commands'
    store.open(spec, optuna.samplers.RandomSampler(seed=0))
    store.save_facts(StudyFacts(space_yaml=space_file.read_text(), space_path=str(space_file),
                                model=str(model_dir), hardware="cpu", objectives=[], slos={}))
    suggestion = store.ask(spec)
    store.start(suggestion)
    store.finish(suggestion.number, recording.measured(spec, TrialOutcome("complete", metrics={
        "output_throughput": 50.0, "ttft_p95_ms": 10.0, "e2e_p95_ms": 100.0,
        "error_rate": 0.0})))
    return url, space_file


def _line(space_file: Path, field: str) -> int:
    """The line of ``field`` (its last key) in the prompts mapping of ``space_file``."""
    lines = space_file.read_text().splitlines()
    prompts = next(i for i, line in enumerate(lines, 1) if line.strip() == "prompts:")
    key = field.rsplit(".", 1)[1]
    return next(i for i, line in enumerate(lines, 1)
                if i > prompts and line.strip().startswith(f"{key}:"))


def _refused(tmp_path: Path, *argv: str) -> str:
    """Run the command; assert exit 2 and nothing written; its stderr on one line."""
    db = tmp_path / "study.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_CACHE": str(tmp_path / "empty-hub-cache")}
    env.pop("AUTOTUNE_SPACE_SHA256", None)
    run = subprocess.run([*CLI, *argv, "--log-dir", str(tmp_path / "logs")],
                         capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # no trial claimed
    assert not (tmp_path / "logs").exists()  # no engine started
    return " ".join(run.stderr.split())


def _worker(url: str, *pin: str) -> list[str]:
    return ["worker", "--study", "s", "--storage", url, "--devices", "cpu:0", *pin]


def _confirm(url: str, *pin: str) -> list[str]:
    return ["confirm", "s", "--storage", url, "--trial", "0", "--times", "1", *pin]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", [_worker, _confirm])
def test_worker_and_confirm_refuse_bad_workload_input(tmp_path: Path, case: str,
                                                      command) -> None:
    prompts, data, field, message = CASES[case]
    url, space_file = _study(tmp_path, prompts, data)
    err = _refused(tmp_path, *command(url, "--space", str(space_file)))
    line = _line(space_file, field)
    assert f"{space_file}: invalid search space" in err, err
    assert f"{field} (line {line}): " in err, err
    assert message in err, err


@pytest.mark.parametrize("command", [_worker, _confirm])
def test_with_a_pinned_hash_the_stored_space_is_named(tmp_path: Path, command) -> None:
    # No space file here: the refusal names the study's stored space and its line.
    prompts, data, field, message = CASES["chat_not_json"]
    url, space_file = _study(tmp_path, prompts, data)
    sha = hashlib.sha256(space_file.read_bytes()).hexdigest()
    err = _refused(tmp_path, *command(url, "--space-sha256", sha))
    assert "the space stored with study 's': invalid search space" in err, err
    assert f"{field} (line {_line(space_file, field)}): " in err and message in err, err


@pytest.mark.parametrize("command", [_worker, _confirm])
def test_a_model_path_missing_here_is_refused_before_any_claim(tmp_path: Path,
                                                               command) -> None:
    # Item 6: a worker on a host without the model used to fail each trial in seconds
    # (invalid_config, learned by the crash model) and claim most of the budget.
    missing = tmp_path / "not-here"
    url, space_file = _study(tmp_path, {"kind": "random", "input_tokens": 64,
                                        "output_tokens": 32}, None, model=str(missing))
    err = _refused(tmp_path, *command(url, "--space", str(space_file)))
    line = next(i for i, text in enumerate(space_file.read_text().splitlines(), 1)
                if str(missing) in text)
    assert f"model.path (line {line}): '{missing}' does not exist" in err, err
