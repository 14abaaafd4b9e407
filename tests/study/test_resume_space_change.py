"""Resuming a study with an edited space file (issue 24, item 9): its trials were measured under
the stored space and results are reused by configuration, so a change that can alter a
measurement is refused (exit 2, each difference named ``field: old → new``, nothing written)
unless the user says it is harmless (``--accept-space-change``); changes of ``search`` (the
budget, the sampler) alter no measurement and are accepted, named. A worker runs the stored
space only: its own edited file is refused by the trust check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autotune.replay import Grid, ReplayTrialRunner
from autotune.space.model import Space
from autotune.store import open_catalog
from autotune.study import run_study
from autotune.testing.replay_grid import write_grid
from autotune.testing.spaces import small_space

CLI = [sys.executable, "-m", "autotune.cli"]
NO_ENGINE = ["{python}", "-c", "raise SystemExit(3)"]


def _write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def raw(tmp_path: Path) -> dict:
    model = tmp_path / "model"
    model.mkdir()
    data = small_space(tmp_path, model)
    data["engine"]["command"] = NO_ENGINE
    return data


def _cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    env.pop("AUTOTUNE_SPACE_SHA256", None)
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


def _start(tmp_path: Path, space: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli(tmp_path, "study", "start", "--space", str(space), "--name", "s", "--storage",
                f"sqlite:///{tmp_path / 'study.db'}", "--no-run", *extra)


def _stored(tmp_path: Path) -> str:
    study = open_catalog(f"sqlite:///{tmp_path / 'study.db'}").get_study("s")
    assert study is not None
    return study.space_yaml


def test_space_changes_names_each_field_and_sets_search_apart(raw: dict) -> None:
    from autotune.space import space_changes

    stored = yaml.safe_dump(raw)
    edited = yaml.safe_load(stored)
    edited["workload"]["num_requests"] = 64
    edited["slos"]["ttft_p95_ms"] = 500
    edited["search"]["trials"] = 12
    edited["search"]["sampler"] = "random"
    edited["name"] = "other"
    changed, harmless = space_changes(stored, Space.model_validate(edited))
    assert changed == ["slos.ttft_p95_ms: 20000.0 → 500.0", "workload.num_requests: 24 → 64"]
    assert harmless == ["name: cpu-fixed-load → other", "search.sampler: auto → random",
                        "search.trials: 8 → 12"]
    # A default written out changes nothing.
    edited = yaml.safe_load(stored)
    edited["max_error_rate"] = 0.0
    assert space_changes(stored, Space.model_validate(edited)) == ([], [])


def test_study_start_refuses_an_edited_space_unless_accepted(tmp_path: Path, raw: dict) -> None:
    space = _write(tmp_path / "space.yaml", raw)
    first = _start(tmp_path, space)
    assert first.returncode == 0, first.stdout + first.stderr
    original = _stored(tmp_path)

    raw["workload"]["num_requests"] = 48
    _write(space, raw)
    for extra in ((), ("--trials", "4")):  # with --no-run, then running
        run = _start(tmp_path, space, *extra) if not extra else _cli(
            tmp_path, "study", "start", "--space", str(space), "--name", "s", "--storage",
            f"sqlite:///{tmp_path / 'study.db'}", "--log-dir", str(tmp_path / "logs"), *extra)
        err = " ".join(run.stderr.split())
        assert run.returncode == 2, run.stdout + run.stderr
        assert "Traceback" not in err
        assert "study 's' exists with another space" in err, err
        assert "workload.num_requests: 24 → 48" in err, err
        assert "--accept-space-change" in err, err
        assert _stored(tmp_path) == original  # nothing written
        assert not (tmp_path / "logs").exists()  # no engine started

    accepted = _start(tmp_path, space, "--accept-space-change")
    out = " ".join((accepted.stdout + accepted.stderr).split())
    assert accepted.returncode == 0, out
    assert "workload.num_requests: 24 → 48" in out, out
    assert _stored(tmp_path) == space.read_text()


def test_a_budget_or_sampler_change_is_accepted_and_named(tmp_path: Path, raw: dict) -> None:
    space = _write(tmp_path / "space.yaml", raw)
    assert _start(tmp_path, space).returncode == 0
    raw["search"]["trials"] = 12
    raw["search"]["sampler"] = "random"
    _write(space, raw)
    run = _start(tmp_path, space)
    out = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 0, out
    assert "space changes that alter no measurement: search.sampler: auto → random; " \
        "search.trials: 8 → 12" in out, out
    assert _stored(tmp_path) == space.read_text()


def test_a_worker_with_an_edited_space_is_refused(tmp_path: Path, raw: dict) -> None:
    space = _write(tmp_path / "space.yaml", raw)
    assert _start(tmp_path, space).returncode == 0
    raw["workload"]["num_requests"] = 48
    edited = _write(tmp_path / "edited.yaml", raw)
    run = _cli(tmp_path, "worker", "--study", "s", "--storage",
               f"sqlite:///{tmp_path / 'study.db'}", "--devices", "cpu:0", "--space",
               str(edited), "--log-dir", str(tmp_path / "logs"))
    err = " ".join(run.stderr.split())
    assert run.returncode == 2, run.stdout + run.stderr
    assert "workload.num_requests: stored 24, here 48" in err, err
    assert not (tmp_path / "logs").exists()


def test_run_study_resumes_only_a_comparable_space(tmp_path: Path) -> None:
    from autotune.study.runner import SpaceChanged

    grid = Grid.load(write_grid(tmp_path / "grid.jsonl"))
    space = grid.search_space(grid.space())
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run_study(space, url, trials=2, confirm_stage=False, log_dir=tmp_path / "logs",
              trial_runner=ReplayTrialRunner(space, grid))
    workload = space.workload
    assert workload is not None
    edited = space.model_copy(update={"workload": workload.model_copy(
        update={"num_requests": workload.num_requests * 2})})
    with pytest.raises(SpaceChanged, match=r"workload\.num_requests: (\d+) → \d+") as raised:
        run_study(edited, url, trials=3, confirm_stage=False, log_dir=tmp_path / "logs",
                  trial_runner=ReplayTrialRunner(edited, grid))
    assert raised.value.exit_code == 2
    report = run_study(space, url, trials=3, confirm_stage=False, log_dir=tmp_path / "logs",
                       trial_runner=ReplayTrialRunner(space, grid)).report  # unchanged: runs
    assert len(report.trials) >= 3
    again = run_study(edited, url, trials=4, confirm_stage=False, log_dir=tmp_path / "logs",
                      trial_runner=ReplayTrialRunner(edited, grid), accept_space_change=True)
    assert again.run.trials_run >= 1
