"""Memory-fit arithmetic against hand-computed numbers, rejection reasons, the vLLM log parser,
and the TrialRunner hook (rejection before launch; the real start's figures win)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from autotune.devices import CpuSlotPool, NvmlGpuPool
from autotune.engines.failures import EngineFailure
from autotune.engines.vllm import VllmConventions
from autotune.model import memory_fit as mf
from autotune.model.shape import UNKNOWN_QUANT_BITS, ModelShape, model_shape
from autotune.space.model import load_space
from autotune.trial import TrialRunner
from autotune.trial_state import FailureKind
from tests.support.fake_nvml import FakeNvml

GIB = 1024**3
ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "search_spaces" / "quickstart-cpu.yaml"

LLAMA_8B = {  # meta-llama/Llama-3.1-8B-Instruct's config.json (the fields that matter)
    "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
    "max_position_embeddings": 131072,
}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}
DEMO = {  # the quickstart demo model (autotune/model/demo.py)
    "architectures": ["LlamaForCausalLM"], "hidden_size": 128, "intermediate_size": 384,
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
    "head_dim": 32, "vocab_size": 2048, "dtype": "float16", "tie_word_embeddings": True,
}
# Hand-computed: per layer q,o 4096×4096 + k,v 4096×1024 + gate,up,down 3×4096×14336.
LLAMA_LINEAR = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
LLAMA_EMBED = 128256 * 4096  # embed_tokens; lm_head the same (untied)
LLAMA_NORMS = (2 * 32 + 1) * 4096
REAL_CPU_LINE = (
    "(EngineCore pid=5630) INFO 11-27 16:47:41 [kv_cache_utils.py:2327] CPU KV cache size: "
    "2,097,152 tokens, Maximum concurrency for 512 tokens per request: 4096.00x"
)


def llama(**config) -> ModelShape:
    shape = ModelShape.from_config({**LLAMA_8B, **config})
    assert shape is not None
    return shape


def gpu(shape: ModelShape, memory: int = 80 * GIB, **flags) -> mf.MemoryEstimate:
    estimate = mf.estimate(shape, {"max_model_len": 8192, **flags}, device="gpu",
                           device_memory=memory)
    assert estimate is not None
    return estimate


def test_llama_8b_weights_are_its_parameter_count_in_bf16() -> None:
    assert LLAMA_LINEAR + 2 * LLAMA_EMBED + LLAMA_NORMS == 8_030_261_248
    assert gpu(llama()).weights == 2 * 8_030_261_248  # 14.96 GiB; vLLM logs ~14.99 GiB


def test_llama_8b_bytes_per_token_tp_and_fp8_kv() -> None:
    # 2 (K, V) × 8 KV heads × 128 head_dim × 2 bytes × 32 layers = 128 KiB per token.
    assert gpu(llama()).bytes_per_token == 131072
    assert gpu(llama(), tensor_parallel_size=2).bytes_per_token == 65536  # 4 heads per rank
    assert gpu(llama(), kv_cache_dtype="fp8").bytes_per_token == 65536
    assert gpu(llama(), tensor_parallel_size=16).bytes_per_token == 16384  # never < 1 head


def test_llama_8b_explicit_kv_budget_is_exact() -> None:
    # 40 GiB / (16 tokens × 128 KiB) = 20480 blocks; int(20480 / 512 × 8192) tokens.
    assert gpu(llama(), kv_cache_memory_bytes="40G").kv_tokens == 327_680
    assert gpu(llama(), kv_cache_memory_bytes="40G", tensor_parallel_size=2).kv_tokens == 655_360
    assert gpu(llama(), kv_cache_memory_bytes="40G", kv_cache_dtype="fp8").kv_tokens == 655_360


def test_llama_8b_on_an_80_gib_gpu() -> None:
    estimate = gpu(llama(), gpu_memory_utilization=0.9, enforce_eager=True,
                   max_num_batched_tokens=8192, max_num_seqs=256)
    budget = math.ceil(80 * GIB * 0.9)
    # Profile-run peak: 8192 tokens × (3 × 14336 + 48 × 128 + 4 × 4096) × 2 bytes = 1 GiB
    # (the sampler's 256 × 128256 × 8 bytes is less); eager: only non-torch memory on top.
    assert estimate.activations == GIB
    assert estimate.overhead == GIB // 2
    assert estimate.kv_memory == budget - 16_060_522_496 - GIB - GIB // 2 == 59_638_276_096
    assert estimate.num_blocks == 28_437  # kv_memory // (16 × 131072)
    assert estimate.kv_tokens == 454_992
    assert estimate.misfit() is None


def test_llama_8b_tp2_halves_weights_and_kv_heads() -> None:
    estimate = gpu(llama(), gpu_memory_utilization=0.9, enforce_eager=True,
                   max_num_batched_tokens=8192, max_num_seqs=256, tensor_parallel_size=2)
    assert estimate.weights == (2 * LLAMA_LINEAR + 4 * LLAMA_EMBED) // 2 + 2 * LLAMA_NORMS
    assert estimate.activations == 8192 * (3 * 7168 + 48 * 64 + 4 * 4096) * 2
    assert estimate.overhead == GIB  # non-torch + collectives
    assert estimate.kv_tokens == 1_030_480


def test_awq_checkpoint_weights() -> None:
    shape = llama(quantization_config=AWQ)
    assert shape.weight_bits == 4
    # 4-bit linear layers + a 16-bit scale and a 4-bit zero per group of 128; 16-bit embeddings.
    expected = int(LLAMA_LINEAR * (0.5 + 2.5 / 128) + 2 * LLAMA_EMBED * 2) + 2 * LLAMA_NORMS
    assert gpu(shape).weights == expected  # 5.33 GiB; vLLM logs ~5.4 GiB
    assert gpu(shape).kv_tokens > gpu(llama()).kv_tokens


def test_online_fp8_quantizes_linear_layers_only() -> None:
    assert gpu(llama(), quantization="fp8").weights == (
        LLAMA_LINEAR + 2 * LLAMA_EMBED * 2 + 2 * LLAMA_NORMS
    )


def test_unknown_quantized_variant_counts_as_4_bit() -> None:
    shape = model_shape(LLAMA_8B, quantized_checkpoint=True)
    assert shape is not None and shape.weight_bits == UNKNOWN_QUANT_BITS


def test_demo_model_on_the_cpu() -> None:
    shape = ModelShape.from_config(DEMO)
    assert shape is not None

    def cpu(**flags) -> mf.MemoryEstimate:
        estimate = mf.estimate(shape, {"max_model_len": 512, "dtype": "float16", **flags},
                               device="cpu", device_memory=16 * GIB)
        assert estimate is not None
        return estimate

    # 2 layers × 2 × 2 KV heads × 32 × 2 bytes = 512 bytes per token; blocks of 128 tokens.
    assert cpu(kv_cache_memory_bytes="1G").block_bytes == 512 * 128
    assert cpu(kv_cache_memory_bytes="1G").kv_tokens == 2_097_152  # vLLM logged exactly this
    assert cpu(kv_cache_memory_bytes="1G", dtype="float32").kv_tokens == 1_048_576
    # max_model_len not a multiple of the block: 4096 blocks / cdiv(1000, 128) × 1000.
    assert cpu(kv_cache_memory_bytes="256M", max_model_len=1000).kv_tokens == 512_000
    # VLLM_CPU_KVCACHE_SPACE (GiB) wins over the flag, as in vLLM's CPU platform.
    env_wins = mf.estimate(shape, {"max_model_len": 512, "kv_cache_memory_bytes": "1G"},
                           device="cpu", device_memory=None, env={"VLLM_CPU_KVCACHE_SPACE": "2"})
    assert env_wins is not None and env_wins.kv_tokens == 4_194_304
    # No explicit budget: node total × utilization − the worker's resident memory.
    auto = cpu(gpu_memory_utilization=0.5)
    assert auto.kv_memory == 8 * GIB - auto.weights - mf.CPU_WORKER_BASE_BYTES
    # Unknown device memory and no explicit budget: no estimate.
    assert mf.estimate(shape, {"max_model_len": 512}, device="cpu", device_memory=None) is None


def test_rejection_reasons_carry_the_numbers() -> None:
    no_room = gpu(llama(), gpu_memory_utilization=0.2)
    reason = no_room.misfit()
    assert reason is not None and reason.startswith("no memory left for the KV cache")
    assert "budget 16.00 GiB of 80.00 GiB" in reason and "weights 14.96 GiB" in reason

    one_sequence = gpu(llama(), kv_cache_memory_bytes="1G", max_model_len=131072)
    reason = one_sequence.misfit()
    assert reason is not None
    assert "max_model_len 131072 tokens needs 16.00 GiB" in reason
    assert "explicit KV budget 1.00 GiB" in reason and "8176 tokens fit" in reason


def test_one_sequence_check_holds_back_the_null_block() -> None:
    shape = ModelShape.from_config(DEMO)
    assert shape is not None
    # 512 tokens = 4 blocks of 64 KiB; vLLM also holds one null block back.
    for budget, fits in ((5 * 65536, True), (5 * 65536 - 1, False)):
        estimate = mf.estimate(shape, {"max_model_len": 512, "kv_cache_memory_bytes": budget},
                               device="cpu", device_memory=None)
        assert estimate is not None and (estimate.misfit() is None) == fits


def test_shortfall_is_a_note_not_a_rejection() -> None:
    estimate = gpu(llama(), max_num_seqs=256)
    assert estimate.misfit() is None
    note = estimate.shortfall(logged_tokens=450_000)
    assert note is not None and "450000 tokens (logged by vLLM)" in note
    assert "256 × 8192 = 2097152" in note
    assert estimate.shortfall(logged_tokens=256 * 8192) is None


def test_models_without_a_plain_estimate() -> None:
    assert ModelShape.from_config({}) is None
    assert ModelShape.from_config({**LLAMA_8B, "sliding_window": 4096}) is None
    assert ModelShape.from_config(
        {**LLAMA_8B, "sliding_window": 4096, "use_sliding_window": False}
    ) is not None
    assert ModelShape.from_config(
        {**LLAMA_8B, "layer_types": ["full_attention", "linear_attention"]}
    ) is None
    nested = ModelShape.from_config({"text_config": LLAMA_8B})
    assert nested == llama()


def test_log_parser_on_real_lines() -> None:
    cpu = mf.LoggedMemory.parse(
        "(Worker pid=5858) INFO 11-27 16:48:21 [cpu_worker.py:260] Explicitly set (1.0/15.71) "
        "GiB for KV cache on node 0.\n" + REAL_CPU_LINE + "\n"
    )
    assert cpu.kv_tokens == 2_097_152
    assert cpu.kv_memory_gib == 1.0 and cpu.device_memory_gib == 15.71
    gpu_log = mf.LoggedMemory.parse(
        "(Worker pid=1) INFO [gpu_model_runner.py:5150] Model loading took 14.99 GiB memory and "
        "5.2 seconds\n(Worker pid=1) INFO [gpu_worker.py:760] Available KV cache memory: "
        "54.61 GiB\n(EngineCore pid=2) INFO [kv_cache_utils.py:2327] GPU KV cache size: "
        "447,376 tokens, Maximum concurrency for 8,192 tokens per request: 54.61x\n"
    )
    assert gpu_log.kv_tokens == 447_376
    assert gpu_log.weights_gib == 14.99 and gpu_log.kv_memory_gib == 54.61
    assert mf.LoggedMemory.parse("no such line").kv_tokens is None


def test_comparison_metrics_and_calibration() -> None:
    predicted = gpu(llama(), gpu_memory_utilization=0.9, enforce_eager=True,
                    max_num_batched_tokens=8192, max_num_seqs=256)
    logged = mf.LoggedMemory(kv_tokens=440_000, weights_gib=14.99)
    metrics = mf.comparison_metrics(predicted, logged)
    assert metrics["kv_cache_tokens"] == 440_000
    assert metrics["kv_cache_tokens_estimated"] == 454_992
    assert metrics["memory_fit_kv_error"] == pytest.approx(454_992 / 440_000 - 1)
    assert metrics["model_weights_gib"] == 14.99
    calibration = mf.Calibration()
    calibration.observe(predicted, 440_000)
    calibrated = mf.estimate(llama(), {"max_model_len": 8192, "gpu_memory_utilization": 0.9,
                                       "enforce_eager": True, "max_num_batched_tokens": 8192,
                                       "max_num_seqs": 256},
                             device="gpu", device_memory=80 * GIB,
                             calibration=calibration.offset())
    assert calibrated is not None
    assert abs(calibrated.kv_tokens - 440_000) <= 16  # within one block
    # An explicit budget is exact: it teaches nothing.
    calibration.observe(gpu(llama(), kv_cache_memory_bytes="40G"), 100)
    assert len(calibration.offsets) == 1


# --- the TrialRunner hook ---------------------------------------------------------------------


class _Launcher(VllmConventions):
    """Writes ``log`` as the engine's log, then fails the start with ``failure``."""

    name = "scripted"

    def __init__(self, log: str, failure: EngineFailure) -> None:
        self.log, self.failure, self.started = log, failure, 0

    def argv(self, config, port=None):
        return ["engine", config.model]

    def start(self, config, devices, log_path, *, stop=None):
        self.started += 1
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(self.log)
        raise self.failure


def _runner(tmp_path: Path, launcher, pool=None, **model) -> TrialRunner:
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(DEMO))
    data = yaml.safe_load(QUICKSTART.read_text())
    data["model"].update({"path": str(model_dir), "build_demo": False, **model})
    data.pop("quality", None)
    data["objectives"] = [{"metric": "output_throughput", "direction": "maximize"}]
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return TrialRunner(load_space(path), launcher, pool or CpuSlotPool(slots=1), tmp_path / "logs")


PARAMS = {"quantization": "none", "max_num_batched_tokens": 2048, "max_num_seqs": 8,
          "enable_chunked_prefill": True, "speculative_method": "none"}


def test_predicted_misfit_is_rejected_before_launch_and_default_never(tmp_path: Path) -> None:
    launcher = _Launcher(REAL_CPU_LINE, EngineFailure(FailureKind.CRASHED, "scripted"))
    runner = _runner(tmp_path, launcher, max_model_len=4096)
    runner.space.engine.flags["kv_cache_memory_bytes"] = "1M"  # 4096 tokens need 2 MiB
    outcome = runner.run(1, PARAMS, is_default=False)
    assert outcome.state == "rejected" and launcher.started == 0
    assert outcome.failure is not None and outcome.failure.kind == FailureKind.OUT_OF_MEMORY
    assert outcome.failure.reason.startswith("predicted before launch: one sequence")
    assert "4096 tokens needs 2.0 MiB of KV cache" in outcome.failure.reason
    assert "explicit KV budget 1.0 MiB" in outcome.failure.reason
    default = runner.run(0, {}, is_default=True)
    assert launcher.started == 1 and default.state == "failed"


def test_real_start_figures_are_recorded(tmp_path: Path) -> None:
    launcher = _Launcher(REAL_CPU_LINE, EngineFailure(FailureKind.CRASHED, "scripted"))
    runner = _runner(tmp_path, launcher)
    outcome = runner.run(1, PARAMS, is_default=False)
    assert outcome.metrics["kv_cache_tokens"] == 2_097_152
    assert outcome.metrics["kv_cache_tokens_estimated"] == 2_097_152
    assert outcome.metrics["memory_fit_kv_error"] == 0.0


def test_the_engines_failure_wins_over_a_fitting_estimate(tmp_path: Path) -> None:
    launcher = _Launcher("ValueError: No available memory for the cache blocks",
                         EngineFailure(FailureKind.OUT_OF_MEMORY, "no memory"))
    runner = _runner(tmp_path, launcher)
    outcome = runner.run(1, PARAMS, is_default=False)
    assert outcome.state == "failed" and outcome.failure is not None
    assert outcome.failure.kind == FailureKind.OUT_OF_MEMORY
    assert any("memory fit had predicted 2097152 KV-cache tokens" in n for n in outcome.notes)
    assert "kv_cache_tokens" not in outcome.metrics


def test_gpu_pool_memory_decides_the_prediction(tmp_path: Path) -> None:
    pool = NvmlGpuPool.discover(FakeNvml(), release_timeout_s=1, poll_s=0.01)
    assert pool is not None
    sizes = pool.device_memory()
    assert sizes and all(size > 0 for size in sizes.values())
    runner = _runner(tmp_path, _Launcher("", EngineFailure(FailureKind.CRASHED, "x")), pool)
    runner.space.engine.flags.pop("kv_cache_memory_bytes")
    estimate = runner.memory_estimate(runner_config(runner))
    assert estimate is not None and estimate.device == "gpu"
    assert estimate.device_memory == max(sizes.values())


def runner_config(runner: TrialRunner):
    from autotune.engines.vllm import engine_config

    return engine_config(runner.space, PARAMS, is_default=False)
