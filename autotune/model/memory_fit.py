"""Memory fit: will a configuration's weights, activations and KV cache fit its devices, and
how many KV-cache tokens will vLLM report at start?

The arithmetic mirrors vLLM 0.32 (read from its source, see docs/memory-fit.md):

* KV budget per device. ``kv_cache_memory_bytes`` (or ``VLLM_CPU_KVCACHE_SPACE`` GiB on the
  CPU build, which wins over the flag) is taken as is. Otherwise a GPU worker gets
  ``ceil(total × gpu_memory_utilization)`` minus weights, the profile run's activation peak,
  non-torch memory (CUDA context, NCCL) and the CUDA-graph estimate
  (``v1/worker/gpu_worker.py determine_available_memory``); a CPU worker gets
  ``ceil(node total × gpu_memory_utilization)`` minus its resident memory
  (``v1/worker/cpu_worker.py``).
* Page size: ``2 × kv_heads_per_rank × head_dim × kv_dtype_bytes × block_size`` per layer
  (``AttentionSpec.page_size_bytes``); TP divides the KV heads (never below one), PP the layers.
  ``num_blocks = budget // (page × layers)``, and the logged size is
  ``int(num_blocks / cdiv(max_model_len, block_size) × max_model_len)`` tokens
  (``kv_cache_utils.get_kv_cache_capacity``).
* vLLM refuses to start when the budget is not positive ("No available memory for the cache
  blocks") or when one ``max_model_len`` sequence needs more blocks than the budget holds
  after the null block ("... larger than the available KV cache memory").

Exact for an explicit KV budget; the weights, activation and overhead terms are estimates, and
uncertain inputs lean towards "fits" (an unknown quantized checkpoint counts as 4-bit), so a
configuration is rejected only when vLLM would refuse it. Plain full-attention decoders only:
sliding-window, hybrid (Mamba / linear attention) and unknown architectures get no estimate
(``model_shape`` reads a config.json into the ``ModelShape`` used here).
"""

from __future__ import annotations

import math
import re
import statistics
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from autotune.devices.cpu import parse_bytes
from autotune.model.shape import UNKNOWN_QUANT_BITS, ModelShape, dtype_size

GIB = 1024**3
DeviceKind = Literal["cpu", "gpu"]

# vLLM 0.32 defaults (config/cache.py, engine/arg_utils.py, platforms/cpu.py).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
GPU_BLOCK_SIZE = 16
CPU_BLOCK_SIZE = 128
# Estimated, not measured on a GPU here (see docs/memory-fit.md): memory a GPU worker holds
# outside torch's allocator (CUDA context, cuBLAS workspaces), NCCL buffers once several ranks
# talk, and CUDA graphs when the engine is not eager. Observed starts calibrate them away.
GPU_NON_TORCH_BYTES = GIB // 2
GPU_COLLECTIVES_BYTES = GIB // 2
GPU_CUDA_GRAPH_BYTES = GIB // 2
# Resident memory of a CPU worker besides the weights, after its warm-up (vLLM 0.32 CPU build,
# eager): 0.69 GiB "consumed by non-kv usages" on the demo model, by benchmarks/memory_fit.py.
CPU_WORKER_BASE_BYTES = int(0.7 * GIB)
@dataclass(frozen=True)
class MemoryEstimate:
    """One configuration on one device (the per-device share of TP/PP). Bytes throughout."""

    device: DeviceKind
    device_memory: int | None  # total memory of one device (a CPU node); None = unknown
    explicit_kv: bool  # kv_cache_memory_bytes / VLLM_CPU_KVCACHE_SPACE fixes the budget
    budget: int  # total × utilization, or the explicit KV budget
    weights: int
    activations: int
    overhead: int  # non-torch memory, collectives, CUDA graphs; a CPU worker's base RSS
    calibration: int  # subtracted from the KV memory: what earlier starts showed we overrate
    kv_memory: int
    block_size: int
    block_bytes: int  # one block of every layer of this device
    max_model_len: int
    max_num_seqs: int

    @property
    def blocks_per_sequence(self) -> int:
        return -(-self.max_model_len // self.block_size)

    @property
    def num_blocks(self) -> int:
        return max(self.kv_memory, 0) // self.block_bytes

    @property
    def kv_tokens(self) -> int:
        """The size vLLM logs as "KV cache size: N tokens"."""
        return int(self.num_blocks / self.blocks_per_sequence * self.max_model_len)

    @property
    def bytes_per_token(self) -> float:
        return self.block_bytes / self.block_size

    def misfit(self) -> str | None:
        """Why vLLM would refuse to start this configuration, with the numbers; or None."""
        if self.kv_memory <= 0:
            return (
                f"no memory left for the KV cache: {self._budget_text()} minus weights "
                f"{size(self.weights)}, activations {size(self.activations)} and overhead "
                f"{size(self.overhead + self.calibration)} leaves {size(self.kv_memory)}"
            )
        needed = self.blocks_per_sequence * self.block_bytes
        usable = self.kv_memory - self.block_bytes  # the null block vLLM holds back
        if needed > usable:
            fits = max(usable, 0) // self.block_bytes * self.block_size
            return (
                f"one sequence of max_model_len {self.max_model_len} tokens needs "
                f"{size(needed)} of KV cache, more than the {size(usable)} available "
                f"({self._budget_text()}; {fits} tokens fit)"
            )
        return None

    def shortfall(self, logged_tokens: int | None = None) -> str | None:
        """A note when the KV cache (``logged_tokens`` when the engine reported it, else the
        estimate) holds fewer than max_num_seqs full sequences: vLLM runs, but preempts
        sequences when every slot is full."""
        tokens = self.kv_tokens if logged_tokens is None else logged_tokens
        wanted = self.max_num_seqs * self.max_model_len
        if tokens >= wanted:
            return None
        source = "logged by vLLM" if logged_tokens is not None else "estimated"
        return (
            f"memory fit: the KV cache holds {tokens} tokens ({source}), fewer than "
            f"max_num_seqs × max_model_len = {self.max_num_seqs} × {self.max_model_len} = "
            f"{wanted}: sequences are preempted when every slot is full"
        )

    def _budget_text(self) -> str:
        if self.explicit_kv:
            return f"explicit KV budget {size(self.budget)}"
        memory = f" of {size(self.device_memory)}" if self.device_memory else ""
        return f"budget {size(self.budget)}{memory}"


def size(value: float | None) -> str:
    """Bytes for people: GiB with two decimals, MiB or KiB below."""
    if value is None:
        return "?"
    if abs(value) >= GIB or value == 0:
        return f"{value / GIB:.2f} GiB"
    if abs(value) >= 1024**2:
        return f"{value / 1024**2:.1f} MiB"
    return f"{value / 1024:.1f} KiB"


def estimate(
    shape: ModelShape,
    flags: Mapping[str, Any],
    *,
    device: DeviceKind,
    device_memory: int | None,
    env: Mapping[str, str] | None = None,
    calibration: int = 0,
) -> MemoryEstimate | None:
    """The memory picture of one configuration (engine ``flags`` with underscored names, as
    ``engines.vllm.engine_flags`` builds them). None when the budget is unknown (no explicit
    KV budget and no device memory figure)."""
    env = env or {}
    explicit = _explicit_kv_bytes(flags, env, device)
    if explicit is None and not device_memory:
        return None
    tp = int(flags.get("tensor_parallel_size") or 1)
    pp = int(flags.get("pipeline_parallel_size") or 1)
    max_model_len = int(flags["max_model_len"])
    act_bytes = dtype_size(str(flags.get("dtype") or "auto"), default=shape.dtype_bytes)
    kv_dtype = str(flags.get("kv_cache_dtype") or "auto")
    kv_bytes = dtype_size(kv_dtype, default=act_bytes)
    block_size = int(flags.get("block_size") or (CPU_BLOCK_SIZE if device == "cpu"
                                                 else GPU_BLOCK_SIZE))
    layers_here = -(-shape.layers // pp)
    layers_here += _draft_layers(flags.get("speculative_config"))
    if shape.mla_kv_dim:
        page = shape.mla_kv_dim * kv_bytes * block_size  # one latent "head", not TP-split
    else:
        page = 2 * max(1, shape.kv_heads // tp) * shape.head_dim * kv_bytes * block_size
    block_bytes = page * layers_here

    weights = _weight_bytes(shape, flags, act_bytes, tp, pp)
    max_seqs, max_batched = _scheduler_limits(flags, device, device_memory)
    if device == "cpu":
        activations = 0  # inside the worker's resident memory, which CPU_WORKER_BASE covers
        overhead = CPU_WORKER_BASE_BYTES
    else:
        activations = _activation_bytes(shape, act_bytes, tp, max_batched, max_seqs)
        overhead = GPU_NON_TORCH_BYTES
        overhead += GPU_COLLECTIVES_BYTES if tp * pp > 1 else 0
        overhead += 0 if flags.get("enforce_eager") else GPU_CUDA_GRAPH_BYTES
    if explicit is not None:
        budget, kv_memory, calibration = explicit, explicit, 0
    else:
        assert device_memory is not None
        utilization = float(flags.get("gpu_memory_utilization") or DEFAULT_GPU_MEMORY_UTILIZATION)
        budget = math.ceil(device_memory * utilization)
        kv_memory = budget - weights - activations - overhead - calibration
    return MemoryEstimate(
        device=device, device_memory=device_memory, explicit_kv=explicit is not None,
        budget=budget, weights=weights, activations=activations, overhead=overhead,
        calibration=calibration, kv_memory=kv_memory, block_size=block_size,
        block_bytes=block_bytes, max_model_len=max_model_len, max_num_seqs=max_seqs,
    )


def _explicit_kv_bytes(
    flags: Mapping[str, Any], env: Mapping[str, str], device: DeviceKind
) -> int | None:
    space = env.get("VLLM_CPU_KVCACHE_SPACE", "") if device == "cpu" else ""
    if space.strip():
        return int(space) * GIB  # vLLM's CPU platform lets the env var win over the flag
    return parse_bytes(flags.get("kv_cache_memory_bytes"))


def _draft_layers(spec: Any) -> int:
    """KV layers a speculative method adds (EAGLE/MTP heads carry one decoder layer; n-gram
    and suffix drafting need none; a separate draft model is not counted)."""
    method = str(spec.get("method", "")) if isinstance(spec, Mapping) else ""
    return 1 if method.startswith(("eagle", "mtp")) or method.endswith("_mtp") else 0


def _scheduler_limits(
    flags: Mapping[str, Any], device: DeviceKind, device_memory: int | None
) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens), with vLLM's API-server defaults."""
    if device == "cpu":
        seqs, batched = 128, 2048
    elif device_memory and device_memory >= 160 * GIB:
        seqs, batched = 1024, 16384
    elif device_memory and device_memory >= 70 * GIB:
        seqs, batched = 1024, 8192
    else:
        seqs, batched = 256, 2048
    seqs = int(flags.get("max_num_seqs") or seqs)
    batched = int(flags.get("max_num_batched_tokens") or batched)
    if flags.get("enable_chunked_prefill") is False:
        batched = max(batched, int(flags["max_model_len"]))
    return seqs, batched


def _online_bits(method: str) -> float | None:
    """Weight bits of an online ``--quantization`` method; None for a checkpoint's own."""
    method = method.lower()
    if not method or method in ("none", "awq", "awq_marlin", "gptq", "gptq_marlin",
                                "compressed-tensors", "marlin"):
        return None
    if "fp8" in method or "int8" in method or method in ("experts_int8", "modelopt"):
        return 8.0
    if method in ("bitsandbytes", "mxfp4", "nvfp4", "modelopt_fp4"):
        return 4.0
    return float(UNKNOWN_QUANT_BITS)


def _weight_bytes(
    shape: ModelShape, flags: Mapping[str, Any], act_bytes: int, tp: int, pp: int
) -> int:
    """Weights on one device: quantizable linear layers at the quantized width (plus one
    16-bit scale and a zero point per group), embeddings and the LM head at the model dtype."""
    online = _online_bits(str(flags.get("quantization") or ""))
    bits = online if online is not None else shape.weight_bits
    if bits is None:
        linear_bytes: float = act_bytes
    elif online is not None:
        linear_bytes = bits / 8  # online methods keep per-channel scales: negligible
    else:
        linear_bytes = bits / 8 + (2 + bits / 8) / shape.group_size
    moe_layers = shape.layers - shape.dense_layers if shape.experts else 0
    dense_layers = shape.layers - moe_layers
    per_stage = -(-shape.layers // pp) / shape.layers
    linear = (
        dense_layers * shape.layer_linear_params(moe=False)
        + moe_layers * shape.layer_linear_params(moe=True)
    ) * per_stage
    embeddings = shape.embedding_params
    head = 0 if shape.tied_embeddings else shape.embedding_params
    edges = embeddings + head if pp == 1 else max(embeddings, head)
    norms = (2 * shape.layers + 1) * shape.hidden
    return int((linear * linear_bytes + edges * act_bytes) / tp + norms * act_bytes)


def _activation_bytes(
    shape: ModelShape, act_bytes: int, tp: int, max_batched: int, max_seqs: int
) -> int:
    """Peak of vLLM's profile run: a forward pass over max_num_batched_tokens tokens (the MLP's
    gate/up output and activation, attention projections, a few residual-sized buffers), or
    the dummy sampler over max_num_seqs rows of float32 logits and probabilities."""
    inter = shape.intermediate
    if shape.experts:
        inter = shape.experts_per_token * shape.expert_intermediate + shape.shared_intermediate
    per_token = 3 * inter // tp + (shape.heads + 2 * shape.kv_heads) * shape.head_dim // tp
    per_token += 4 * shape.hidden
    forward = max_batched * per_token * act_bytes
    sampler = max_seqs * shape.vocab * 4 * 2
    return max(forward, sampler)


# ----------------------------------------------------------------------------------------------
# What vLLM logged at start

_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
_KV_MEMORY = re.compile(
    r"Available KV cache memory: ([\d.]+) GiB|"
    r"(?:Explicitly|Auto) set \(([\d.]+)/([\d.]+)\) GiB for KV cache"
)
_WEIGHTS = re.compile(r"Model loading took ([\d.]+) GiB")
_CPU_BASE = re.compile(r"([\d.]+) GiB memory was consumed by non-kv usages")


@dataclass(frozen=True)
class LoggedMemory:
    """The memory figures a vLLM start logs (each None when its line is missing)."""

    kv_tokens: int | None = None
    kv_memory_gib: float | None = None
    device_memory_gib: float | None = None  # CPU build: the NUMA node's total
    weights_gib: float | None = None  # GPU workers only
    non_kv_gib: float | None = None  # CPU build without an explicit KV budget

    @classmethod
    def parse(cls, log: str) -> LoggedMemory:
        tokens = _KV_TOKENS.search(log)
        memory = _KV_MEMORY.search(log)
        weights = _WEIGHTS.search(log)
        base = _CPU_BASE.search(log)
        kv_memory = device_memory = None
        if memory:
            kv_memory = float(memory.group(1) or memory.group(2))
            device_memory = float(memory.group(3)) if memory.group(3) else None
        return cls(
            kv_tokens=int(tokens.group(1).replace(",", "")) if tokens else None,
            kv_memory_gib=kv_memory,
            device_memory_gib=device_memory,
            weights_gib=float(weights.group(1)) if weights else None,
            non_kv_gib=float(base.group(1)) if base else None,
        )


def comparison_metrics(predicted: MemoryEstimate, logged: LoggedMemory) -> dict[str, float]:
    """The trial metrics that set the estimate beside what vLLM logged."""
    metrics: dict[str, float] = {"kv_cache_tokens_estimated": float(predicted.kv_tokens)}
    if logged.kv_tokens is not None:
        metrics["kv_cache_tokens"] = float(logged.kv_tokens)
        if logged.kv_tokens > 0:
            metrics["memory_fit_kv_error"] = predicted.kv_tokens / logged.kv_tokens - 1
    if logged.weights_gib is not None:
        metrics["model_weights_gib"] = logged.weights_gib
        metrics["model_weights_gib_estimated"] = predicted.weights / GIB
    return metrics


@dataclass
class Calibration:
    """What real starts showed about the non-explicit KV budget: the median of (estimated −
    logged) KV memory, subtracted from later estimates. Thread-safe; starts only with an
    explicit budget teach nothing (their estimate is exact)."""

    offsets: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, predicted: MemoryEstimate, logged_kv_tokens: int) -> None:
        if predicted.explicit_kv or predicted.kv_tokens <= 0 or logged_kv_tokens <= 0:
            return
        # Back from tokens to memory, before this estimate's own correction was applied.
        estimated = predicted.kv_memory + predicted.calibration
        observed = int(logged_kv_tokens * predicted.bytes_per_token)
        with self._lock:
            self.offsets.append(estimated - observed)

    def offset(self) -> int:
        with self._lock:
            return int(statistics.median(self.offsets)) if self.offsets else 0
