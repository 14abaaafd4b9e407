from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from autotune import cli
from autotune.devices import CpuSlotPool
from autotune.engines.vllm import VllmConventions
from autotune.results.export import export_yaml, pick_trial
from autotune.results.report import load_report
from autotune.space.model import load_space
from autotune.store import open_catalog
from autotune.store.db import repository
from autotune.store.db.session import ensure_schema
from autotune.trial import TrialRunner

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "search_spaces" / "quickstart-cpu.yaml"


def test_bad_space_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(QUICKSTART.read_text())
    data["parameters"]["max_num_seqs"] = {"low": 64, "high": 8}
    bad.write_text(yaml.safe_dump(data))
    db = tmp_path / "study.db"
    run = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "study", "start", "--space", str(bad),
         "--storage", f"sqlite:///{db}"], capture_output=True, text=True)
    assert run.returncode == 2
    assert str(bad) in run.stderr and "parameters.max_num_seqs" in run.stderr
    assert not db.exists()


def test_bad_storage_url_exits_2(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "study", "list", "--storage", "autotune.db"],
        capture_output=True, text=True)
    assert run.returncode == 2
    assert "not a database URL" in run.stderr


class _MustNotStart(VllmConventions):
    """Launcher boundary that fails the test if an engine is started."""

    name = "must-not-start"

    def argv(self, config, port=None):
        return ["engine", config.model]

    def start(self, config, devices, log_path, *, stop=None):
        raise AssertionError("an engine was started for a configuration known to be invalid")


def test_known_invalid_config_is_rejected_without_an_engine(tmp_path: Path) -> None:
    space = load_space(QUICKSTART)
    runner = TrialRunner(space, _MustNotStart(), CpuSlotPool(slots=1), tmp_path)
    outcome = runner.run(3, {
        "quantization": "none", "max_num_batched_tokens": 256, "max_num_seqs": 8,
        "enable_chunked_prefill": False, "speculative_method": "none",
    }, is_default=False)
    assert outcome.state == "rejected"
    assert outcome.failure is not None and outcome.failure.kind == "invalid_config"
    assert "max_model_len (512)" in outcome.failure.reason


def _record_study(url: str) -> None:
    ensure_schema(url)
    repository.save_study(url=url, name="s", space_yaml="", space_path="", model="m",
                          hardware="CPU", objectives=[
                              {"metric": "output_throughput", "direction": "maximize"},
                              {"metric": "e2e_p95_ms", "direction": "minimize"}],
                          slos={"e2e_p95_ms": 4000})
    rows = [
        (0, True, {}, 1000.0, 2000.0),
        (1, False, {"enable_chunked_prefill": False, "max_num_seqs": 16,
                    "speculative_config": {"method": "ngram", "num_speculative_tokens": 2}},
         1500.0, 2500.0),
        (2, False, {"max_num_seqs": 8}, 900.0, 1500.0),
        (3, False, {"max_num_seqs": 4}, 800.0, 3000.0),  # dominated by 0
    ]
    for number, is_default, flags, tput, e2e in rows:
        repository.start_trial(url=url, study_name="s", number=number, optuna_trial_id=number,
                               params={}, is_default=is_default, host="h")
        repository.update_trial(
            url=url, study_name="s", number=number, state="complete", feasible=True,
            metrics={"output_throughput": tput, "e2e_p95_ms": e2e, "error_rate": 0.0},
            engine_flags={"max_model_len": 512, "dtype": "float16", **flags},
            engine_command=["x", "--served-model-name", "demo"], model="/models/demo",
            engine_version="0.32.0", finished=True)


def test_report_pareto_gain_and_export(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _record_study(url)
    report = load_report(open_catalog(url), "s")
    assert report.pareto_front == [0, 1, 2]
    assert report.gains(report.trial(1))["output_throughput"] == 1.5
    assert report.gains(report.trial(1))["e2e_p95_ms"] == 2000 / 2500
    assert pick_trial(report, number=None, pick=None).number == 1
    assert pick_trial(report, number=None, pick="min:e2e_p95_ms").number == 2
    text = export_yaml(report, report.trial(1))
    config = yaml.safe_load(text)
    assert config == {
        "model": "/models/demo", "served-model-name": "demo", "max-model-len": 512,
        "dtype": "float16", "enable-chunked-prefill": False, "max-num-seqs": 16,
        "speculative-config": {"method": "ngram", "num_speculative_tokens": 2},
    }
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert any("output_throughput 1.50x" in line for line in comments)
    assert any(line.startswith("#   vllm serve /models/demo") and "--no-enable-chunked-prefill"
               in line and '{"method":"ngram","num_speculative_tokens":2}' in line
               for line in comments)


def _study_with_swept_env(url: str) -> None:
    data = yaml.safe_load(QUICKSTART.read_text())
    data["parameters"] = {
        "stream_interval": {"flag": "--stream-interval", "choices": [1, 4], "default": 1},
        "split_kv": {"env": "VLLM_CPU_ATTN_SPLIT_KV", "choices": [True, False],
                     "default": True},
    }
    ensure_schema(url)
    repository.save_study(url=url, name="env", space_yaml=yaml.safe_dump(data),
                          space_path="", model="m", hardware="CPU",
                          objectives=[{"metric": "output_throughput",
                                       "direction": "maximize"}], slos={})
    for number, is_default, params in [(0, True, {"stream_interval": 1, "split_kv": True}),
                                       (1, False, {"stream_interval": 4, "split_kv": False})]:
        flags = {"max_model_len": 512, **({} if is_default else {"stream_interval": 4})}
        argv = ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model",
                "/models/demo", "--served-model-name", "demo", "--max-model-len", "512",
                *([] if is_default else ["--stream-interval", "4"]),
                "--host", "127.0.0.1", "--port", "8123"]
        repository.start_trial(url=url, study_name="env", number=number,
                               optuna_trial_id=number, params=params, is_default=is_default,
                               host="h")
        repository.update_trial(
            url=url, study_name="env", number=number, state="complete", feasible=True,
            metrics={"output_throughput": 100.0 + number}, engine_flags=flags,
            engine_command=argv, model="/models/demo", engine_version="0.32.0", finished=True)


def test_export_writes_env_sh_beside_the_yaml(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _study_with_swept_env(url)
    out = tmp_path / "cfg" / "config.yaml"
    out.parent.mkdir()
    result = CliRunner().invoke(cli.app, ["export", "env", "--storage", url, "--trial", "1",
                                          "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text())["stream-interval"] == 4
    assert "VLLM_CPU_ATTN_SPLIT_KV=0" in out.read_text()  # the header names it too
    env_sh = (out.parent / "env.sh").read_text().splitlines()
    assert "export HF_HUB_OFFLINE=1" in env_sh and "export VLLM_CPU_ATTN_SPLIT_KV=0" in env_sh
    # the default trial ran without the swept variable: its env.sh does not set it
    CliRunner().invoke(cli.app, ["export", "env", "--storage", url, "--trial", "0",
                                 "-o", str(out)])
    assert "VLLM_CPU_ATTN_SPLIT_KV" not in (out.parent / "env.sh").read_text()


def test_export_format_command_is_the_whole_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _study_with_swept_env(url)
    result = CliRunner().invoke(cli.app, ["export", "env", "--storage", url, "--trial", "1",
                                          "--format", "command"])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assignments, command = line.split(" /venv/bin/python ", 1)
    # the space's engine environment, then the swept variable
    assert assignments.startswith("HF_HUB_OFFLINE=1 ")
    assert assignments.endswith(" VLLM_CPU_ATTN_SPLIT_KV=0")
    assert command == ("-m vllm.entrypoints.openai.api_server --model /models/demo "
                       "--served-model-name demo --max-model-len 512 --stream-interval 4")


def test_export_without_swept_env_writes_no_env_sh(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _record_study(url)
    out = tmp_path / "config.yaml"
    result = CliRunner().invoke(cli.app, ["export", "s", "--storage", url, "--trial", "1",
                                          "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and not (tmp_path / "env.sh").exists()
