from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autotune.engines.vllm import VllmLauncher, engine_config, engine_flags, render_flags
from autotune.engines.vllm_flags import check_space_flags, engine_options
from autotune.errors import SpaceError
from autotune.space.model import load_space

QUICKSTART = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu-fixed-load.yaml"


def test_render_flags_follows_vllm_conventions() -> None:
    argv = render_flags(
        {
            "max_num_seqs": 8,
            "enable_chunked_prefill": False,
            "enforce_eager": True,
            "speculative_config": {"method": "ngram", "num_speculative_tokens": 3},
            "skipped": None,
        }
    )
    assert argv == [
        "--max-num-seqs",
        "8",
        "--no-enable-chunked-prefill",
        "--enforce-eager",
        "--speculative-config",
        '{"method":"ngram","num_speculative_tokens":3}',
    ]


def test_trial_flags_from_parameters() -> None:
    space = load_space(QUICKSTART)
    params = {
        "quantization": "int8",
        "max_num_batched_tokens": 1024,
        "max_num_seqs": 16,
        "enable_chunked_prefill": False,
        "speculative_method": "ngram",
        "num_speculative_tokens": 2,
    }
    flags = engine_flags(space, params, is_default=False)
    assert flags["max_model_len"] == 512
    assert flags["dtype"] == "float16"
    assert flags["quantization"] == "int8_per_channel_weight_only"
    assert flags["enable_chunked_prefill"] is False
    assert flags["speculative_config"] == {
        "method": "ngram",
        "num_speculative_tokens": 2,
        "prompt_lookup_max": 4,
        "prompt_lookup_min": 1,
    }
    assert "speculative_method" not in flags and "num_speculative_tokens" not in flags


def test_default_trial_passes_no_swept_flag() -> None:
    space = load_space(QUICKSTART)
    flags = engine_flags(space, space.default_params(), is_default=True)
    assert set(flags) == {"max_model_len", "dtype", "enforce_eager", "kv_cache_memory_bytes"}


def test_argv_module_form_with_python_placeholder() -> None:
    space = load_space(QUICKSTART)
    config = engine_config(space, {"quantization": "none", "max_num_seqs": 4}, is_default=False)
    argv = VllmLauncher().argv(config, port=8555)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[3:5] == ["--model", space.model.resolved_path]
    assert argv[argv.index("--max-num-seqs") + 1] == "4"
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "8555"]


def test_quantization_variant_can_switch_checkpoint() -> None:
    space = load_space(QUICKSTART)
    data = space.model_dump()
    data["model"]["quantization_variants"]["awq"] = {"checkpoint": "org/model-AWQ"}
    data["parameters"]["quantization"]["choices"] = ["none", "awq"]
    space2 = type(space).model_validate(data)
    config = engine_config(space2, {"quantization": "awq"}, is_default=False)
    assert config.model == "org/model-AWQ"
    assert "quantization" not in config.flags
    json.dumps(dict(config.flags))


# --- parameters autotune does not know: declared with flag: or env: --------------------------

DECLARED = {
    "async_scheduling": {"flag": "--async-scheduling", "choices": [True, False],
                         "default": False},
    "stream_interval": {"flag": "--stream-interval", "choices": [1, 4, 16], "default": 1},
    "split_kv": {"env": "VLLM_CPU_ATTN_SPLIT_KV", "choices": [True, False], "default": True},
    "omp_bind": {"env": "VLLM_CPU_OMP_THREADS_BIND", "choices": ["auto", "0"],
                 "default": "auto"},
}


def declared_space(tmp_path: Path, parameters: dict, **engine) -> Path:
    data = yaml.safe_load(QUICKSTART.read_text())
    data["parameters"] = parameters
    data["engine"].update(engine)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_declared_parameters_become_flags_and_environment(tmp_path: Path) -> None:
    space = load_space(declared_space(tmp_path, DECLARED))
    params = {"async_scheduling": False, "stream_interval": 4, "split_kv": False,
              "omp_bind": "0"}
    config = engine_config(space, params, is_default=False)
    argv = VllmLauncher().argv(config)
    assert "--no-async-scheduling" in argv
    assert argv[argv.index("--stream-interval") + 1] == "4"
    base = dict(space.engine.env)  # the space's own engine environment
    assert config.env == {**base, "VLLM_CPU_ATTN_SPLIT_KV": "0",
                          "VLLM_CPU_OMP_THREADS_BIND": "0"}
    assert not any("split" in a or "omp" in a for a in argv)
    default = engine_config(space, space.default_params(), is_default=True)
    assert default.env == base
    assert "--stream-interval" not in VllmLauncher().argv(default)
    assert space.default_params() == {"async_scheduling": False, "stream_interval": 1,
                                      "split_kv": True, "omp_bind": "auto"}


@pytest.mark.parametrize(
    ("parameter", "field", "message"),
    [
        ({"choices": [1, 2], "default": 1}, "parameters.x", "unknown parameter"),
        ({"flag": "--x", "choices": [1, 2]}, "parameters.x.default", "needed"),
        ({"flag": "--x", "choices": [1, 2], "default": 3}, "parameters.x.default",
         "not one of the choices"),
        ({"flag": "--x", "low": 1, "high": 8, "default": 2}, "parameters.x.type",
         "type: int or type: float"),
        ({"flag": "--x", "low": 1, "high": 8, "type": "int", "default": 9},
         "parameters.x.default", "outside 1..8"),
        ({"flag": "--max-num-seqs", "choices": [1, 2], "default": 1}, "parameters.x.flag",
         "known parameter max_num_seqs"),
        ({"flag": "max-num-seqs", "choices": [1, 2], "default": 1}, "parameters.x",
         "not an engine option"),
        ({"flag": "--x", "env": "X", "choices": [1], "default": 1}, "parameters.x",
         "flag or env, not both"),
    ],
)
def test_bad_declarations_name_the_field(tmp_path: Path, parameter: dict, field: str,
                                         message: str) -> None:
    with pytest.raises(SpaceError) as err:
        load_space(declared_space(tmp_path, {"x": parameter}))
    assert any(loc == field and message in msg for loc, msg in err.value.problems), (
        err.value.problems)


def test_known_parameter_cannot_be_remapped(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="autotune knows max_num_seqs"):
        load_space(declared_space(tmp_path, {"max_num_seqs": {
            "flag": "--max-num-seqs", "choices": [4, 8], "default": 4}}))


def test_a_variable_swept_and_fixed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="HF_HUB_OFFLINE is also fixed in engine.env"):
        load_space(declared_space(tmp_path, {"offline": {
            "env": "HF_HUB_OFFLINE", "choices": ["0", "1"], "default": "1"}}))


# --- the engine's own argument list (the real vLLM parser, asked once and cached) ------------

@pytest.fixture(scope="module")
def flags_cache(tmp_path_factory) -> Path:
    """The session's engine-flags cache, shared with tests/space/test_gpu_spaces.py: the
    installed vLLM is asked for its argument list (~20 s, import-bound) once per session."""
    path = tmp_path_factory.getbasetemp() / "engine-flags-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def real_options(flags_cache: Path, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(flags_cache))
    return engine_options(["{python}", "-m", "vllm.entrypoints.openai.api_server"])


def test_the_engine_lists_its_options_as_vllm_spells_them(real_options) -> None:
    options = real_options.options
    assert options["--async-scheduling"]["kind"] == "boolean_optional"
    assert "--no-async-scheduling" in options
    assert options["--disable-log-stats"]["kind"] == "store_true"
    assert options["--scheduling-policy"]["choices"] == ["fcfs", "priority"]
    assert options["--stream-interval"]["default"] == 1
    assert real_options.version == "0.32.0"
    assert "VLLM_CPU_ATTN_SPLIT_KV" in real_options.env_names


def test_options_are_cached_per_engine_command(real_options, flags_cache: Path, tmp_path: Path,
                                               monkeypatch) -> None:
    copy = tmp_path / "cache"  # edited below: a copy, so the session's cache stays true
    shutil.copytree(flags_cache, copy)
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(copy))
    [cached] = (copy / "engine-flags").glob("*.json")
    data = json.loads(cached.read_text())
    data["options"]["--only-in-the-cache"] = {"dest": "x", "kind": "value", "choices": None,
                                              "default": None}
    cached.write_text(json.dumps(data))
    again = engine_options(["{python}", "-m", "vllm.entrypoints.openai.api_server"])
    assert "--only-in-the-cache" in again.options  # read back, not asked again


def test_declared_flags_pass_the_check(tmp_path: Path, real_options) -> None:
    path = declared_space(tmp_path, DECLARED)
    assert check_space_flags(load_space(path), path) is not None


@pytest.mark.parametrize(
    ("parameters", "engine", "field", "message"),
    [
        ({"si": {"flag": "--stream-intervall", "choices": [1, 2], "default": 1}}, {},
         "parameters.si.flag", "did you mean --stream-interval?"),
        ({"kv": {"env": "VLLM_CPU_ATTN_SPLT_KV", "choices": ["0", "1"], "default": "1"}}, {},
         "parameters.kv.env", "did you mean VLLM_CPU_ATTN_SPLIT_KV?"),
        ({"quiet": {"flag": "--disable-log-stats", "choices": [True, False],
                    "default": False}}, {},
         "parameters.quiet.flag", "on-only switch"),
        ({"policy": {"flag": "--scheduling-policy", "choices": ["fcfs", "lifo"],
                     "default": "fcfs"}}, {},
         "parameters.policy.flag", "not ['lifo']"),
        ({"si": {"flag": "--stream-interval", "choices": [1, 2], "default": 1}},
         {"flags": {"dtype": "float16", "enforce_eagre": True}},
         "engine.flags.enforce_eagre", "did you mean --enforce-eager?"),
    ],
)
def test_misspelled_names_are_refused_with_the_closest(
    tmp_path: Path, real_options, parameters: dict, engine: dict, field: str, message: str
) -> None:
    path = declared_space(tmp_path, parameters, **engine)
    with pytest.raises(SpaceError) as err:
        check_space_flags(load_space(path), path)
    assert any(loc.startswith(field + " (line ") and message in msg
               for loc, msg in err.value.problems), err.value.problems


def test_study_start_refuses_a_misspelled_flag_before_any_engine(
    tmp_path: Path, flags_cache: Path
) -> None:
    path = declared_space(tmp_path, {
        "si": {"flag": "--stream-intervall", "choices": [1, 2], "default": 1}})
    db = tmp_path / "study.db"
    done = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "study", "start", "--space", str(path),
         "--storage", f"sqlite:///{db}", "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "AUTOTUNE_CACHE_DIR": str(flags_cache)},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "did you mean --stream-interval?" in done.stderr
    assert not db.exists() and not (tmp_path / "logs").exists()


def test_a_console_script_with_subcommands_is_asked_through_its_interpreter(
    tmp_path: Path, monkeypatch
) -> None:
    """The `vllm serve` form: the script's #! interpreter runs it; the probe follows the
    subcommand to the parser that takes the options (no vLLM needed for this shape)."""
    script = tmp_path / "bin" / "engine"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\n"
        "import argparse\n"
        "top = argparse.ArgumentParser()\n"
        "sub = top.add_subparsers()\n"
        "serve = sub.add_parser('serve')\n"
        "serve.add_argument('--max-num-seqs', type=int, default=128)\n"
        "serve.add_argument('--enable-x', action=argparse.BooleanOptionalAction)\n"
        "top.parse_args()\n"
        "raise SystemExit('started a server')\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    options = engine_options(["engine", "serve"])
    assert options.options["--max-num-seqs"]["default"] == 128
    assert options.options["--no-enable-x"]["kind"] == "boolean_optional"
    assert options.version is None and options.env_names == ()  # not vLLM: nothing to check
