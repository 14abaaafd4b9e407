"""The export is written for a shell (``env.sh``, ``--format command``) and for YAML: what the
stored space says can only ever be data there. ``engine.env`` names are POSIX names (checked when
the space is read), and every value and argument is quoted."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autotune import cli
from autotune.errors import AutotuneError, SpaceError
from autotune.results.export import command_line, env_script, export_yaml
from autotune.results.report import load_report
from autotune.space.model import load_space
from autotune.store import open_catalog
from autotune.store.db import repository
from autotune.store.db.session import ensure_schema

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "search_spaces" / "quickstart-cpu.yaml"
HOSTILE_KEY = "X=1; touch PWNED; Y"
HOSTILE_VALUE = "$(touch PWNED) `touch PWNED` ' \" ; touch PWNED"


def _study(url: str, env: dict[str, str], flag_value: str = "auto") -> None:
    """A stored space whose ``engine.env`` is ``env`` (as an older autotune, or a hand-edited
    database, could hold it) and one swept env parameter, so that the export writes env.sh."""
    data = yaml.safe_load(QUICKSTART.read_text())
    data["engine"]["env"] = env
    data["parameters"] = {
        "split_kv": {"env": "VLLM_CPU_ATTN_SPLIT_KV", "choices": [True, False],
                     "default": True},
    }
    ensure_schema(url)
    repository.save_study(url=url, name="env", space_yaml=yaml.safe_dump(data),
                          space_path="", model="m", hardware="CPU",
                          objectives=[{"metric": "output_throughput",
                                       "direction": "maximize"}], slos={})
    argv = ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model",
            "/models/demo", "--served-model-name", "demo", "--tokenizer-mode", flag_value]
    repository.start_trial(url=url, study_name="env", number=1, optuna_trial_id=1,
                           params={"split_kv": False}, is_default=False, host="h")
    repository.update_trial(
        url=url, study_name="env", number=1, state="complete", feasible=True,
        metrics={"output_throughput": 100.0},
        engine_flags={"max_model_len": 512, "tokenizer_mode": flag_value},
        engine_command=argv, model="/models/demo", engine_version="0.32.0", finished=True)


def test_an_env_name_that_is_not_a_posix_name_is_refused_when_the_space_is_read(
        tmp_path: Path) -> None:
    data = yaml.safe_load(QUICKSTART.read_text())
    data["engine"]["env"] = {"HF_HUB_OFFLINE": "1", HOSTILE_KEY: "v"}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    assert "engine.env" in str(caught.value) and repr(HOSTILE_KEY) in str(caught.value)
    for bad in ("1X", "A-B", "", "A B", "É"):
        data["engine"]["env"] = {bad: "v"}
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(SpaceError):
            load_space(path)
    data["engine"]["env"] = {"_ok": "1", "A1_b": "2"}
    path.write_text(yaml.safe_dump(data))
    assert load_space(path).engine.env == {"_ok": "1", "A1_b": "2"}


def test_sourcing_the_env_sh_of_a_hostile_stored_space_runs_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _study(url, {"HF_HUB_OFFLINE": "1", HOSTILE_KEY: "v"})
    out = tmp_path / "config.yaml"
    result = CliRunner().invoke(cli.app, ["export", "env", "--storage", url, "--trial", "1",
                                          "-o", str(out)])
    assert result.exit_code == 0, result.output
    if (tmp_path / "env.sh").exists():
        subprocess.run(["sh", "-c", ". ./env.sh"], cwd=tmp_path, check=False)
    assert not (tmp_path / "PWNED").exists()
    command = CliRunner().invoke(cli.app, ["export", "env", "--storage", url, "--trial", "1",
                                           "--format", "command"])
    assert "touch PWNED" not in command.output


def test_env_values_and_arguments_are_quoted_for_the_shell(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _study(url, {"HF_HUB_OFFLINE": HOSTILE_VALUE}, flag_value=HOSTILE_VALUE)
    out = tmp_path / "config.yaml"
    result = CliRunner().invoke(cli.app, ["export", "env", "--storage", url, "--trial", "1",
                                          "-o", str(out)])
    assert result.exit_code == 0, result.output
    shown = subprocess.run(["sh", "-c", '. ./env.sh && printf %s "$HF_HUB_OFFLINE"'],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert shown == HOSTILE_VALUE and not (tmp_path / "PWNED").exists()
    report = load_report(open_catalog(url), "env")
    record = report.trial(1)
    line = command_line(record, {"HF_HUB_OFFLINE": HOSTILE_VALUE})
    words = shlex.split(line)
    assert words[0] == f"HF_HUB_OFFLINE={HOSTILE_VALUE}"
    assert words[-2:] == ["--tokenizer-mode", HOSTILE_VALUE]


def test_export_functions_refuse_a_name_the_shell_would_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _study(url, {"HF_HUB_OFFLINE": "1"})
    report = load_report(open_catalog(url), "env")
    record = report.trial(1)
    with pytest.raises(AutotuneError, match="not an environment variable name"):
        command_line(record, {HOSTILE_KEY: "v"})
    with pytest.raises(AutotuneError, match="not an environment variable name"):
        env_script(report, record, {HOSTILE_KEY: "v"})
    with pytest.raises(AutotuneError, match="not an environment variable name"):
        export_yaml(report, record, {HOSTILE_KEY: "v"})


def test_a_newline_in_a_value_cannot_add_yaml_keys_through_the_header(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    injected = "auto\nmodel: /evil\nenforce-eager: true"
    _study(url, {"HF_HUB_OFFLINE": "1"}, flag_value=injected)
    report = load_report(open_catalog(url), "env")
    text = export_yaml(report, report.trial(1), {"HF_HUB_OFFLINE": injected})
    config = yaml.safe_load(text)
    assert config["model"] == "/models/demo" and "enforce-eager" not in config
    assert config["tokenizer-mode"] == injected
    assert all(line.startswith("#") for line in text.split("\nmodel: /models/demo")[0]
               .splitlines())
