"""The shipped GPU spaces (Llama 3.1 8B on H100s, Llama 3.1 70B on 4 or 8 H100s), offline: they
load with the real loader, their objectives come from the load ladder, their parameters render
to the vLLM command lines real trials run (checked against the installed vLLM's own parser),
and the memory fit, on H100 80GB devices and the checkpoints' config.json files laid out as a
Hugging Face cache, lets every TP 4 / TP 8 configuration of the 70B through."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from autotune.devices import NvmlGpuPool
from autotune.engines.vllm import VllmLauncher, engine_config
from autotune.engines.vllm_flags import check_space_flags, engine_options
from autotune.model.memory_fit import GIB
from autotune.space.ladder import LADDER_METRICS
from autotune.space.model import Space, load_space
from autotune.space.starter import Devices, fit
from autotune.space.workload import PoissonLoad, SharegptPrompts
from autotune.trial import TrialRunner
from tests.support.fake_nvml import FakeNvml

ROOT = Path(__file__).resolve().parents[2]
SPACE_8B = ROOT / "search_spaces" / "llama-3.1-8b-h100.yaml"
SPACE_70B = ROOT / "search_spaces" / "llama-3.1-70b-h100-tp.yaml"
MODELS = ROOT / "tests" / "fixtures" / "models"
H100 = "NVIDIA H100 80GB HBM3"
MODULE_FORM = ["{python}", "-m", "vllm.entrypoints.openai.api_server"]

FP8_70B = "RedHatAI/Meta-Llama-3.1-70B-Instruct-FP8"
AWQ_70B = "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
AWQ_8B = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch) -> Path:
    """The fixture config.json files as a Hugging Face hub cache (refs/main → a snapshot)."""
    cache = tmp_path / "hub"
    for folder in MODELS.iterdir():
        if not folder.is_dir():
            continue
        repo = cache / f"models--{folder.name}"
        snapshot = repo / "snapshots" / "0123456789abcdef"
        snapshot.mkdir(parents=True)
        shutil.copy(folder / "config.json", snapshot / "config.json")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def h100s(count: int) -> NvmlGpuPool:
    pool = NvmlGpuPool.discover(FakeNvml(names=[H100] * count), release_timeout_s=1, poll_s=0.01)
    assert pool is not None
    return pool


def argv(space: Space, params: dict, *, is_default: bool = False) -> list[str]:
    return VllmLauncher().argv(engine_config(space, params, is_default=is_default))


def after(args: list[str], flag: str) -> str:
    assert flag in args, args
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("path", [SPACE_8B, SPACE_70B], ids=lambda p: p.name)
def test_chat_workload_rate_ladder_and_objectives_from_the_curve(path: Path) -> None:
    space = load_space(path)
    assert space.engine.devices == "gpu" and space.engine.command == ["vllm", "serve"]
    prompts = space.workload.prompts
    assert isinstance(prompts, SharegptPrompts)
    assert prompts.output_tokens == "data" and prompts.multi_turn is not None
    assert prompts.multi_turn.max_turns > 1
    assert isinstance(space.workload.load, PoissonLoad)
    ladder = space.ladder
    assert ladder is not None and ladder.kind == "rate" and ladder.early_stop
    levels = ladder.resolved_levels()
    # from below the main measurement's rate to far past an H100's capacity
    assert levels[0] <= space.workload.load.rate and levels[-1] >= 16 * levels[0]
    assert ladder.min_capacity_rps is not None
    assert {o.metric for o in space.objectives} <= set(LADDER_METRICS)
    assert {"ttft_p95_ms", "tpot_p95_ms", "itl_p95_ms"} <= set(space.slos)
    assert space.cost is not None  # cost_per_1m_at_capacity on every trial


def test_the_8b_sweeps_what_an_h100_user_tunes() -> None:
    space = load_space(SPACE_8B)
    p = space.parameters
    assert set(p) >= {"gpu_memory_utilization", "max_num_batched_tokens", "max_num_seqs",
                      "enable_chunked_prefill", "enable_prefix_caching", "kv_cache_dtype",
                      "quantization", "speculative_method", "num_speculative_tokens",
                      "tensor_parallel_size", "performance_mode"}
    assert p["kv_cache_dtype"].choices == ["auto", "fp8"]
    assert p["quantization"].choices == ["none", "awq", "fp8"]
    assert p["num_speculative_tokens"].when == {"speculative_method": "ngram"}
    # The default trial runs vLLM's own defaults on the base checkpoint.
    assert argv(space, space.default_params(), is_default=True) == [
        "vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--served-model-name",
        "llama-3.1-8b", "--max-model-len", "8192", "--no-enable-log-requests"]


def test_the_8b_variants_render_to_vllm_flags() -> None:
    space = load_space(SPACE_8B)
    base = {**space.default_params(), "max_num_seqs": 256, "kv_cache_dtype": "fp8",
            "enable_chunked_prefill": False, "performance_mode": "interactivity"}
    online = argv(space, {**base, "quantization": "fp8"})
    assert online[2] == "meta-llama/Llama-3.1-8B-Instruct"
    assert after(online, "--quantization") == "fp8"
    assert after(online, "--kv-cache-dtype") == "fp8"
    assert after(online, "--max-num-seqs") == "256"
    assert after(online, "--performance-mode") == "interactivity"
    assert "--no-enable-chunked-prefill" in online
    awq = argv(space, {**base, "quantization": "awq"})
    assert awq[2] == AWQ_8B and "--quantization" not in awq  # vLLM reads the checkpoint's
    drafted = argv(space, {**base, "speculative_method": "ngram", "num_speculative_tokens": 3})
    assert json.loads(after(drafted, "--speculative-config")) == {
        "method": "ngram", "prompt_lookup_max": 4, "prompt_lookup_min": 2,
        "num_speculative_tokens": 3}


def test_the_70b_runs_tp_4_or_8_on_its_checkpoints_with_an_fp8_kv_cache() -> None:
    space = load_space(SPACE_70B)
    p = space.parameters
    assert p["tensor_parallel_size"].choices == [4, 8]
    assert "fp8" in p["kv_cache_dtype"].choices
    assert space.model.quantization_variants["fp8"].checkpoint == FP8_70B
    assert space.model.quantization_variants["awq"].checkpoint == AWQ_70B
    params = {**space.default_params(), "kv_cache_dtype": "fp8"}
    for quantization, model in (("fp8", FP8_70B), ("awq", AWQ_70B),
                                ("none", "meta-llama/Llama-3.1-70B-Instruct")):
        for tp in (4, 8):
            args = argv(space, {**params, "quantization": quantization,
                                "tensor_parallel_size": tp})
            assert args[2] == model and "--quantization" not in args
            assert after(args, "--tensor-parallel-size") == str(tp)
            assert after(args, "--kv-cache-dtype") == "fp8"
    # The vLLM-default trial passes no swept flag (so TP 1) on the default checkpoint: AWQ,
    # the one that fits a single H100.
    default = engine_config(space, space.default_params(), is_default=True)
    assert default.model == AWQ_70B
    assert "tensor_parallel_size" not in default.flags


@pytest.fixture(scope="module")
def flags_cache(tmp_path_factory) -> Path:
    """The session's engine-flags cache, shared with tests/engines/test_engine_flags.py: the
    installed vLLM is asked for its argument list (~20 s, import-bound) once per session."""
    path = tmp_path_factory.getbasetemp() / "engine-flags-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.mark.parametrize("path", [SPACE_8B, SPACE_70B], ids=lambda p: p.name)
def test_every_flag_is_one_the_installed_vllm_parses(path: Path, tmp_path: Path,
                                                     flags_cache: Path, monkeypatch) -> None:
    """The declared flag and engine.flags through the real check (the CPU build's parser, as a
    GPU host's `vllm serve` has the same engine arguments), and every option a trial of the
    space renders is one vLLM knows, with a value its choices allow."""
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(flags_cache))
    data = yaml.safe_load(path.read_text())
    data["engine"]["command"] = MODULE_FORM
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(data))
    space = load_space(copy)
    options = check_space_flags(space, copy)
    assert options is not None and options.version == engine_options(MODULE_FORM).version
    everything = dict(space.default_params())
    for name, spec in space.parameters.items():
        values = spec.choices if spec.choices is not None else [spec.high]
        for value in values:
            params = {**everything, name: value}
            if name == "num_speculative_tokens":
                params["speculative_method"] = "ngram"
            elif name == "speculative_method" and value == "ngram":
                params["num_speculative_tokens"] = 2
            args = argv(space, params)
            for i, arg in enumerate(args):
                if not arg.startswith("--") or arg in ("--model", "--host", "--port"):
                    continue
                info = options.options.get(arg)
                assert info is not None, f"{path.name}: vLLM has no option {arg}"
                if info["choices"] and i + 1 < len(args):
                    assert args[i + 1] in [str(c) for c in info["choices"]], (arg, args[i + 1])


def test_the_memory_fit_lets_every_70b_tp4_and_tp8_configuration_through(hub_cache) -> None:
    space = load_space(SPACE_70B)
    runner = TrialRunner(space, VllmLauncher(), h100s(8), Path("unused"))
    assert runner.model_config["num_hidden_layers"] == 80  # read from the hub cache
    p = space.parameters
    tight = {**space.default_params(), "gpu_memory_utilization": p["gpu_memory_utilization"].low,
             "max_num_batched_tokens": int(p["max_num_batched_tokens"].high),
             "max_num_seqs": int(p["max_num_seqs"].high)}
    kv_tokens = {}
    for quantization in p["quantization"].choices:
        for tp in p["tensor_parallel_size"].choices:
            for kv in p["kv_cache_dtype"].choices:
                params = {**tight, "quantization": quantization, "tensor_parallel_size": tp,
                          "kv_cache_dtype": kv}
                config = engine_config(space, params, is_default=False)
                assert runner.rejection(params, config) is None
                estimate = runner.memory_estimate(config)
                assert estimate is not None and estimate.device_memory == 80 * GIB
                assert estimate.misfit() is None, (quantization, tp, kv, estimate.misfit())
                kv_tokens[quantization, tp, kv] = estimate.kv_tokens
    # BF16 at TP 4 with the largest batch, 0.80 of 80 GiB, by hand: 64 GiB − weights 32.86 GiB
    # (parameters ÷ 4 ranks, BF16) − activation peak 16384 tokens × (3 × 28672/4 + 80 × 128/4
    # + 4 × 8192) × 2 bytes − 1.5 GiB overhead = 27.9 GiB of KV cache; 2 KV heads a rank × 128
    # × 2 bytes × 2 × 80 layers = 80 KiB a token: 22863 blocks of 16 tokens, 44 full sequences.
    linear = 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672)
    weights = (linear * 2 + 2 * 128256 * 8192 * 2) // 4 + 161 * 8192 * 2
    kv_memory = (64 * GIB - weights - 16384 * (21504 + 2560 + 32768) * 2 - 3 * GIB // 2)
    assert kv_tokens["none", 4, "auto"] == kv_memory // (80 * 1024 * 16) * 16 == 365_808
    assert kv_tokens["none", 4, "fp8"] == pytest.approx(2 * kv_tokens["none", 4, "auto"], 1e-3)
    assert kv_tokens["awq", 4, "auto"] > kv_tokens["fp8", 4, "auto"] > kv_tokens["none", 4, "auto"]
    # The vLLM-default trial is one GPU at vLLM's defaults: BF16 would not fit it, AWQ does.
    one_gpu = {"tensor_parallel_size": 1}
    bf16 = runner.memory_estimate(engine_config(space, {"quantization": "none", **one_gpu},
                                                is_default=False))
    assert bf16 is not None and bf16.misfit() is not None
    awq = runner.memory_estimate(engine_config(space, {"quantization": "awq", **one_gpu},
                                               is_default=False))
    assert awq is not None and awq.misfit() is None


def test_tp8_is_rejected_before_launch_on_four_gpus(hub_cache) -> None:
    space = load_space(SPACE_70B)
    runner = TrialRunner(space, VllmLauncher(), h100s(4), Path("unused"))
    for tp, rejected in ((4, False), (8, True)):
        params = {**space.default_params(), "tensor_parallel_size": tp}
        reason = runner.rejection(params, engine_config(space, params, is_default=False))
        assert (reason is not None) == rejected
        if rejected:
            assert "= 8 > 4 device(s) present" in reason


def test_the_70b_space_agrees_with_autotune_init(hub_cache) -> None:
    """``autotune init`` on 8 H100s finds TP 4 and 8 fitting the BF16 base and online FP8,
    as this space assumes (it adds the pre-quantized checkpoints instead of online FP8)."""
    config = json.loads((MODELS / "meta-llama--Llama-3.1-70B-Instruct" / "config.json")
                        .read_text())
    verdict = fit(config, Devices("gpu", 8, 80 * GIB, "8x H100"), 8192)
    assert {4, 8} <= set(verdict.tensor_parallel)
    assert verdict.quantization == ["none", "fp8"]
    low = load_space(SPACE_70B).parameters["gpu_memory_utilization"].low
    assert verdict.utilization_low is not None and verdict.utilization_low <= low


def test_the_memory_fit_lets_every_8b_configuration_through(hub_cache) -> None:
    space = load_space(SPACE_8B)
    runner = TrialRunner(space, VllmLauncher(), h100s(2), Path("unused"))
    p = space.parameters
    for quantization in p["quantization"].choices:
        for tp in p["tensor_parallel_size"].choices:
            params = {**space.default_params(), "quantization": quantization,
                      "tensor_parallel_size": tp, "gpu_memory_utilization": 0.80,
                      "max_num_batched_tokens": 16384, "max_num_seqs": 1024}
            estimate = runner.memory_estimate(engine_config(space, params, is_default=False))
            assert estimate is not None and estimate.misfit() is None, (quantization, tp)


def test_the_fp8_checkpoint_counts_its_weights_at_8_bits(hub_cache) -> None:
    """A compressed-tensors checkpoint gives its weights' bits in ``config_groups`` (no
    ``bits`` key): 8 here, per-tensor scales, so the weights are the linear layers at 1 byte
    plus embeddings and LM head in BF16 (67.7 GiB in all, 16.9 GiB a rank at TP 4)."""
    from autotune.model.config import read_model_config
    from autotune.model.shape import model_shape

    shape = model_shape(read_model_config(FP8_70B))
    assert shape is not None and shape.weight_bits == 8
    awq = model_shape(read_model_config(AWQ_70B))
    assert awq is not None and (awq.weight_bits, awq.group_size) == (4, 128)
    space = load_space(SPACE_70B)
    runner = TrialRunner(space, VllmLauncher(), h100s(8), Path("unused"))
    params = {**space.default_params(), "quantization": "fp8", "tensor_parallel_size": 4}
    estimate = runner.memory_estimate(engine_config(space, params, is_default=False))
    assert estimate is not None
    linear = 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672)
    edges = 2 * 128256 * 8192 * 2  # embed_tokens and lm_head, BF16
    norms = (2 * 80 + 1) * 8192 * 2  # on every rank
    assert estimate.weights == pytest.approx((linear + edges) / 4 + norms, rel=1e-5)
