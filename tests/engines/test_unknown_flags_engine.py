"""A study sweeping an engine flag and an environment variable autotune does not know, on the
real vLLM CPU build: the engine really gets both, and export writes them out.

``--stream-interval`` (the scheduler's token streaming interval) and
``VLLM_CPU_ATTN_SPLIT_KV`` (read by vLLM 0.32's CPU attention backend,
v1/attention/backends/cpu_attn.py) are harmless to the demo model."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest

from autotune.testing.processes import engine_processes
from autotune.testing.spaces import small_space, write_space

pytestmark = pytest.mark.engine

AUTOTUNE = [sys.executable, "-m", "autotune.cli"]
SWEPT = {"stream_interval": 2, "attn_split_kv": False}


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*AUTOTUNE, *args], capture_output=True, text=True, timeout=900,
                          env=env)


class EngineWatcher(threading.Thread):
    """Records the argv and environment of every engine process this session starts."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, tuple[list[str], dict[str, str]]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            for pid in engine_processes():
                if pid in self.seen:
                    continue
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                    raw = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
                except OSError:
                    continue
                env = dict(e.split("=", 1) for e in raw if "=" in e)
                self.seen[pid] = (argv, env)


@pytest.fixture(scope="module")
def study(tmp_path_factory, demo_model: Path) -> dict:
    tmp = tmp_path_factory.mktemp("unknown-flags")
    data = small_space(tmp, demo_model)
    data["parameters"] = {
        "stream_interval": {"flag": "--stream-interval", "choices": [1, 2], "default": 1},
        "attn_split_kv": {"env": "VLLM_CPU_ATTN_SPLIT_KV", "choices": [True, False],
                          "default": True},
    }
    space = write_space(tmp, data)
    url = f"sqlite:///{tmp / 'study.db'}"
    env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(tmp / "cache")}
    created = run_cli("study", "start", "--space", str(space), "--storage", url,
                      "--name", "flags", "--no-run", env=env)
    assert created.returncode == 0, created.stderr
    optuna.load_study(study_name="flags", storage=url).enqueue_trial(dict(SWEPT))
    watcher = EngineWatcher()
    watcher.start()
    try:
        ran = run_cli("study", "start", "--space", str(space), "--storage", url, "--name",
                      "flags", "--trials", "2", "--log-dir", str(tmp / "logs"), env=env)
    finally:
        watcher.done.set()
        watcher.join()
    shown = run_cli("study", "show", "flags", "--storage", url, "--format", "json", env=env)
    assert shown.returncode == 0, shown.stderr
    return {"run": ran, "report": json.loads(shown.stdout), "url": url, "tmp": tmp,
            "engines": list(watcher.seen.values()), "env": env}


def _swept_trial(study: dict) -> dict:
    return next(t for t in study["report"]["trials"] if not t["is_default"])


def test_both_trials_complete(study: dict) -> None:
    assert study["run"].returncode == 0, study["run"].stdout + study["run"].stderr
    trials = study["report"]["trials"]
    assert [t["state"] for t in trials] == ["complete", "complete"]
    assert _swept_trial(study)["params"] == SWEPT


def test_engine_received_the_flag_and_the_variable(study: dict) -> None:
    swept = [(argv, env) for argv, env in study["engines"] if "--stream-interval" in argv]
    default = [(argv, env) for argv, env in study["engines"] if "--stream-interval" not in argv]
    assert swept and default, [argv for argv, _ in study["engines"]]
    argv, env = swept[0]
    assert argv[argv.index("--stream-interval") + 1] == "2"
    assert env.get("VLLM_CPU_ATTN_SPLIT_KV") == "0"
    # the default trial runs on the engine's own defaults: neither is set
    assert "VLLM_CPU_ATTN_SPLIT_KV" not in default[0][1]
    log = Path(_swept_trial(study)["log_path"]).read_text()
    assert "'stream_interval': 2" in log  # vLLM's own "non-default args" line


def test_export_writes_env_sh_and_the_command(study: dict) -> None:
    out = study["tmp"] / "export" / "config.yaml"
    out.parent.mkdir()
    number = str(_swept_trial(study)["number"])
    exported = run_cli("export", "flags", "--storage", study["url"], "--trial", number,
                       "-o", str(out), env=study["env"])
    assert exported.returncode == 0, exported.stderr
    assert "stream-interval: 2" in out.read_text()
    env_sh = (out.parent / "env.sh").read_text()
    assert "export VLLM_CPU_ATTN_SPLIT_KV=0" in env_sh
    assert "export HF_HUB_OFFLINE=1" in env_sh
    command = run_cli("export", "flags", "--storage", study["url"], "--trial", number,
                      "--format", "command", env=study["env"])
    assert command.returncode == 0, command.stderr
    words = shlex.split(command.stdout)
    start = words.index(sys.executable)  # VAR=value ... before the engine command
    assert all("=" in w for w in words[:start])
    assert {"HF_HUB_OFFLINE=1", "VLLM_CPU_ATTN_SPLIT_KV=0"} <= set(words[:start])
    assert words[start:start + 3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert words[words.index("--stream-interval") + 1] == "2"
    assert "--port" not in words


def test_no_engine_left(study: dict) -> None:
    assert engine_processes() == []
