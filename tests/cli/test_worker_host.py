"""A worker whose host cannot run the study stops claiming (issue 24, item 6): a trial that
fails because this machine lost what the study needs (its model path, a data file) is this
host's fault, not its configuration's: it is queued again for another worker (not counted in the
budget, not learned by the crash model as ``invalid_config``), and the worker exits 2 naming what
is missing instead of burning the budget on trials that fail in seconds. No vLLM: the "engine"
is a command that deletes the model folder and exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from autotune.store.db import repository
from autotune.testing.spaces import small_space

CLI = [sys.executable, "-m", "autotune.cli"]


def _space(tmp_path: Path, model: str, command: list[str], trials: int = 3) -> Path:
    raw = small_space(tmp_path, Path(model))
    raw["engine"]["command"] = command
    raw["engine"]["startup_timeout_s"] = 30
    raw["search"] = {"trials": trials, "confirm_stage": False}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    env.pop("AUTOTUNE_SPACE_SHA256", None)
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd)


def test_a_worker_whose_model_vanished_stops_claiming(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    vanish = ["{python}", "-c", f"import shutil; shutil.rmtree({str(model)!r}); "
              "raise SystemExit(1)"]
    space = _space(tmp_path, str(model), vanish)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    made = _cli("study", "start", "--space", str(space), "--storage", url, "--name", "s",
                "--no-run", cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    run = _cli("worker", "--study", "s", "--storage", url, "--devices", "cpu:0",
               "--space", str(space), "--log-dir", str(tmp_path / "logs"), cwd=tmp_path)
    out = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 2, out
    assert "Traceback" not in out
    assert "model.path (line " in out and f"'{model}' does not exist" in out, out
    assert "stopped claiming" in out, out
    # One trial ran (its engine deleted the model); it is queued again, not a verdict.
    trials = repository.list_trials(url=url, study_name="s")
    assert [(t.state, t.failure_kind) for t in trials] == [("interrupted", "interrupted")], out
    assert "this machine" in trials[0].failure_reason, trials[0].failure_reason
    handle = optuna.load_study(study_name="s", storage=url)
    waiting = [t for t in handle.trials if t.state == optuna.trial.TrialState.WAITING]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [handle.trials[0].params]


@pytest.mark.postgres
def test_a_worker_on_a_host_without_the_model_claims_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    # Two hosts, one study: the model path is relative, held by host A's folder only. The
    # worker on host B (a folder without it) exits 2 naming it; the study is untouched.
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    (host_a / "model").mkdir(parents=True)
    host_b.mkdir()
    space = _space(tmp_path, "model", ["{python}", "-c", "raise SystemExit(3)"])
    made = _cli("study", "start", "--space", str(space), "--storage", postgres_url,
                "--name", "s", "--no-run", cwd=host_a)
    assert made.returncode == 0, made.stdout + made.stderr
    run = _cli("worker", "--study", "s", "--storage", postgres_url, "--devices", "cpu:0",
               "--space", str(space), "--log-dir", str(host_b / "logs"), cwd=host_b)
    err = " ".join(run.stderr.split())
    assert run.returncode == 2, run.stdout + run.stderr
    assert "model.path (line " in err and "'model' is not in the Hugging Face cache" in err, err
    assert not (host_b / "logs").exists()
    assert repository.list_trials(url=postgres_url, study_name="s") == []
    handle = optuna.load_study(study_name="s", storage=postgres_url)
    assert [t.state for t in handle.trials] == [optuna.trial.TrialState.WAITING]
