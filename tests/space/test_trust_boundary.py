"""The trust boundary: `autotune worker` and `autotune confirm` run only an engine command this
machine's own configuration vouches for (its space file, or a pinned hash of it), never one
that whoever can write the database put there."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from autotune.space.model import load_space
from autotune.space.trust import UntrustedSpace, trusted_space
from autotune.store import open_store
from autotune.study import recording
from autotune.testing.spaces import small_space, write_space
from autotune.trial import TrialOutcome

CLI = [sys.executable, "-m", "autotune.cli"]


@pytest.fixture
def tampered(tmp_path: Path, demo_model: Path) -> tuple[str, Path, Path, str]:
    """A study (one complete trial) whose stored space was changed in the database to run
    a command of the writer's choosing; returns (url, the operator's space file, the file the
    planted command would create, the operator's space hash)."""
    space_file = write_space(tmp_path, small_space(tmp_path, demo_model))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store = open_store(url, "s")
    spec = load_space(space_file)
    store.open(spec, optuna.samplers.RandomSampler(seed=0))
    from autotune.store import StudyFacts

    store.save_facts(StudyFacts(space_yaml=space_file.read_text(), space_path=str(space_file),
                                model=str(demo_model), hardware="cpu", objectives=[], slos={}))
    suggestion = store.ask(spec)
    store.start(suggestion)
    store.finish(suggestion.number, recording.measured(spec, TrialOutcome("complete", metrics={
        "output_throughput": 50.0, "output_throughput_ci_low": 40.0,
        "output_throughput_ci_high": 60.0, "ttft_p95_ms": 10.0, "e2e_p95_ms": 100.0,
        "error_rate": 0.0})))
    planted = tmp_path / "PWNED"
    data = yaml.safe_load(space_file.read_text())
    data["engine"]["command"] = ["sh", "-c", f"touch {planted}", "sh"]
    with sqlite3.connect(tmp_path / "study.db") as conn:
        conn.execute("UPDATE autotune_studies SET space_yaml = ?", (yaml.safe_dump(data),))
    return url, space_file, planted, hashlib.sha256(space_file.read_bytes()).hexdigest()


def _cli(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **env})


def test_worker_refuses_without_a_space_of_its_own(tampered, tmp_path: Path) -> None:
    url, _, planted, _ = tampered
    run = _cli("worker", "--study", "s", "--storage", url, "--devices", "cpu:0",
               "--log-dir", str(tmp_path / "logs"))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--space FILE" in run.stderr and "--space-sha256" in run.stderr
    assert not planted.exists()


def test_worker_refuses_a_stored_engine_command_unlike_its_space(tampered, tmp_path) -> None:
    url, space_file, planted, _ = tampered
    run = _cli("worker", "--study", "s", "--storage", url, "--devices", "cpu:0",
               "--space", str(space_file), "--log-dir", str(tmp_path / "logs"))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "engine.command" in run.stderr and "touch" in run.stderr
    assert str(space_file) in run.stderr.replace("\n", "")
    assert not planted.exists()


def test_worker_refuses_a_stored_space_unlike_the_pinned_hash(tampered, tmp_path) -> None:
    url, _, planted, sha = tampered
    for args, env in ((["--space-sha256", sha.upper()], {}), ([], {"AUTOTUNE_SPACE_SHA256": sha})):
        run = _cli("worker", "--study", "s", "--storage", url, "--devices", "cpu:0",
                   "--log-dir", str(tmp_path / "logs"), *args, **env)
        assert run.returncode == 2, run.stdout + run.stderr
        assert "sha256" in run.stderr and sha[:12] in run.stderr
    assert not planted.exists()


def test_confirm_refuses_the_same_way(tampered, tmp_path: Path) -> None:
    url, space_file, planted, _ = tampered
    logs = str(tmp_path / "logs")
    bare = _cli("confirm", "s", "--storage", url, "--trial", "0", "--times", "1",
                "--log-dir", logs)
    assert bare.returncode == 2 and "--space FILE" in bare.stderr, bare.stdout + bare.stderr
    local = _cli("confirm", "s", "--storage", url, "--trial", "0", "--times", "1",
                 "--log-dir", logs, "--space", str(space_file))
    assert local.returncode == 2 and "engine.command" in local.stderr, local.stderr
    export = _cli("export", "s", "--storage", url, "--trial", "0", "--confirm", "1",
                  "--log-dir", logs)
    assert export.returncode == 2 and "--space FILE" in export.stderr, export.stderr
    assert not planted.exists()


def test_a_space_its_operator_vouches_for_is_accepted(tmp_path: Path, demo_model: Path) -> None:
    space_file = write_space(tmp_path, small_space(tmp_path, demo_model))
    text = space_file.read_text()
    sha = hashlib.sha256(text.encode()).hexdigest()
    by_file = trusted_space(text, study="s", local=space_file, sha256=None)
    by_hash = trusted_space(text, study="s", local=None, sha256=sha.upper())
    assert by_file == by_hash == load_space(space_file)
    # Reformatted but equal (e.g. re-dumped by another tool): the file still vouches for it.
    redumped = yaml.safe_dump(yaml.safe_load(text), sort_keys=True)
    assert trusted_space(redumped, study="s", local=space_file, sha256=None) == by_file
    with pytest.raises(UntrustedSpace, match="sha256"):
        trusted_space(redumped, study="s", local=None, sha256=sha)
