from __future__ import annotations

import json
import sys
from pathlib import Path

from autotune.engines.vllm import VllmLauncher, engine_config, engine_flags, render_flags
from autotune.space import load_space

QUICKSTART = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart-cpu.yaml"


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
