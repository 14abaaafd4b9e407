"""A commented starting space file for a model on the devices found (``autotune init``).

The model's config.json (``model_config``) gives its shape; the memory fit
(``memory_fit.estimate``) decides which tensor-parallel sizes and quantization variants can
hold the weights and one ``max_model_len`` sequence of KV cache, and from which
``gpu_memory_utilization`` the smallest of them fits. ``write_starter_space`` loads the text
back through ``space.load_space`` before it replaces anything, so what it writes is a valid
space.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.devices.cpu import available_memory_bytes
from autotune.errors import AutotuneError, OptionError
from autotune.model import GIB, estimate, find_model_config, model_shape, size

# Starting ranges, wide enough that the defaults sit inside them.
GPU_UTILIZATION_HIGH = 0.95
GPU_UTILIZATION_FLOOR = 0.5
GPU_TP_SIZES = (1, 2, 4, 8)
DEFAULT_MAX_MODEL_LEN = 4096
# Online quantization variants per device kind (vLLM 0.32 methods; on the CPU build only
# fp8_per_channel really quantizes a dense model's linear layers, see the CPU quickstart).
GPU_VARIANTS = {"fp8": "fp8"}
CPU_VARIANTS = {"fp8": "fp8_per_channel"}
CPU_KV_BYTES = GIB  # the quickstart's fixed KV budget: trials don't fight over host RAM


class InitError(AutotuneError):
    """``autotune init`` cannot write a space for this model here (exit 2, nothing written)."""

    exit_code = 2


@dataclass(frozen=True)
class Devices:
    """What the space is written for: ``count`` devices of ``memory`` bytes each."""

    kind: str  # "cpu" or "gpu"
    count: int
    memory: int
    label: str


@dataclass
class Fit:
    """The memory fit's verdict for the starting space."""

    tensor_parallel: list[int] = field(default_factory=lambda: [1])
    quantization: list[str] = field(default_factory=lambda: ["none"])
    utilization_low: float | None = None
    notes: list[str] = field(default_factory=list)


def devices_of(pool: Any) -> Devices:
    """A device pool (``devices.pool_from_spec``) as the space sees it."""
    memory = pool.device_memory() if hasattr(pool, "device_memory") else {}
    if pool.kind == "gpu":
        return Devices("gpu", len(memory), min(memory.values()), pool.describe())
    host = min(memory.values()) if memory else available_memory_bytes()
    return Devices("cpu", 1, host, pool.describe())


def fit(config: dict[str, Any], devices: Devices, max_model_len: int) -> Fit:
    shape = model_shape(config)
    if shape is None:
        raise InitError("the memory fit has no estimate for this architecture (sliding-window, "
                        "hybrid or unknown): write the space by hand (docs/tuning-guide.md)")
    heads = int(config.get("num_attention_heads") or (config.get("text_config") or {}).get(
        "num_attention_heads") or 1)
    prequantized = shape.weight_bits is not None
    variants = {} if prequantized else (GPU_VARIANTS if devices.kind == "gpu"
                                        else CPU_VARIANTS)
    tps = [t for t in GPU_TP_SIZES if t <= devices.count and heads % t == 0] or [1]
    if devices.kind == "cpu":
        tps = [1]
    result = Fit(tensor_parallel=[], quantization=[])
    lowest: float | None = None
    for tp in tps:
        for name, method in [("none", ""), *variants.items()]:
            flags: dict[str, Any] = {"max_model_len": max_model_len, "tensor_parallel_size": tp}
            if method:
                flags["quantization"] = method
            if devices.kind == "cpu":
                flags["kv_cache_memory_bytes"] = CPU_KV_BYTES
                picture = estimate(shape, flags, device="cpu", device_memory=devices.memory)
                assert picture is not None
                fits = (picture.misfit() is None and picture.weights + picture.overhead
                        + CPU_KV_BYTES <= devices.memory)
                need = None
            else:
                need = _lowest_utilization(shape, flags, devices.memory)
                fits = need is not None
            if not fits:
                continue
            if tp not in result.tensor_parallel:
                result.tensor_parallel.append(tp)
            if name not in result.quantization:
                result.quantization.append(name)
            if need is not None:
                lowest = need if lowest is None else min(lowest, need)
    if not result.tensor_parallel:
        where = f"{devices.count}x {size(devices.memory)}"
        raise InitError(f"the model does not fit {where} with any of tensor_parallel_size "
                        f"{tps} and quantization {['none', *variants]} at max_model_len "
                        f"{max_model_len} (memory fit); try a smaller --max-model-len, more "
                        "devices or a quantized checkpoint")
    result.utilization_low = lowest
    result.quantization.sort(key=lambda q: (q != "none", q))
    if 1 not in result.tensor_parallel:
        result.notes.append(f"tensor_parallel_size 1 does not fit: the vLLM-default trial is "
                            f"rejected before launch; the smallest that fits is "
                            f"{result.tensor_parallel[0]}")
    if prequantized:
        result.notes.append("the checkpoint is already quantized: no quantization variant")
    return result


def _lowest_utilization(shape: Any, flags: dict[str, Any], memory: int) -> float | None:
    """The smallest gpu_memory_utilization (in 0.05 steps) at which ``flags`` fits."""
    steps = int(round((GPU_UTILIZATION_HIGH - GPU_UTILIZATION_FLOOR) / 0.05))
    for i in range(steps + 1):
        utilization = round(GPU_UTILIZATION_FLOOR + 0.05 * i, 2)
        picture = estimate(shape, {**flags, "gpu_memory_utilization": utilization},
                           device="gpu", device_memory=memory)
        if picture is not None and picture.misfit() is None:
            return utilization
    return None


def starter_space(model: str, devices: Devices, *, max_model_len: int | None = None) -> str:
    """The commented YAML text of a starting space for ``model`` on ``devices``."""
    found = find_model_config(model)
    if found is None:
        raise InitError(f"no config.json for {model!r}: give the model's local folder, or a hub "
                        "id already in the Hugging Face cache (autotune never downloads)")
    config = found.config
    text = config.get("text_config") or config
    context = int(text.get("max_position_embeddings") or DEFAULT_MAX_MODEL_LEN)
    length = max_model_len or min(context, DEFAULT_MAX_MODEL_LEN)
    if length > context:
        raise InitError(f"--max-model-len {length} is longer than the model's "
                        f"max_position_embeddings ({context})")
    verdict = fit(config, devices, length)
    name = Path(model.rstrip("/")).name
    lines = [
        f"# Starting space for {model}, written by `autotune init`",
        f"# on {devices.label}.",
        f"# Model: {text.get('num_hidden_layers')} layers, hidden {text.get('hidden_size')}, "
        f"{text.get('num_attention_heads')} heads ({text.get('num_key_value_heads')} KV), "
        f"context {context}.",
        "# Edit the workload and SLOs to match your traffic first: they decide what is best.",
        "# Every key: docs/search-space.md; how to choose them: docs/tuning-guide.md.",
        f"name: {name}-{devices.kind}",
        "",
        "model:",
        f"  path: {json.dumps(model)}",
        f"  max_model_len: {length}   # longest prompt + answer you serve (context {context})",
    ]
    variants = GPU_VARIANTS if devices.kind == "gpu" else CPU_VARIANTS
    chosen = [q for q in verdict.quantization if q != "none"]
    # Only quantized weights fit: no sweep, the method is fixed (the default trial too).
    fixed_quantization = variants[chosen[0]] if "none" not in verdict.quantization else None
    if chosen and fixed_quantization is None:
        lines.append("  quantization_variants:   # online methods the memory fit lets in")
        lines += [f"    {q}: {{method: {variants[q]}}}" for q in chosen]
    lines += ["", "engine:"]
    fixed: list[str] = []
    if devices.kind == "gpu":
        lines += ['  command: ["vllm", "serve"]', "  devices: gpu"]
    else:
        lines += [
            "  # The CPU build's `vllm` console script does not start; its module form does.",
            '  command: ["{python}", "-m", "vllm.entrypoints.openai.api_server"]',
            "  model_as_flag: true",
            "  env:",
            '    HF_HUB_OFFLINE: "1"',
            "  startup_timeout_s: 300",
            "  devices: cpu",
        ]
        fixed += [
            "    dtype: float16            # bf16 kernels can die with SIGILL on some CPU hosts",
            "    enforce_eager: true       # much shorter starts than with torch.compile",
            f"    kv_cache_memory_bytes: {CPU_KV_BYTES // GIB}G # fixed KV budget: "
            "trials don't fight over host RAM",
        ]
    if fixed_quantization is not None:
        fixed.append(f"    quantization: {fixed_quantization}   # unquantized weights do not fit")
    if fixed:
        lines += ["  flags:", *fixed]
    prompt_in = min(512, length // 2)
    prompt_out = min(128, max(16, length // 8))
    lines += [
        "",
        "# Replace with your traffic: real prompts (JSONL) beat random ones (search-space.md)",
        "workload:",
        f"  prompts: {{kind: random, input_tokens: {prompt_in}, output_tokens: {prompt_out}}}",
        f"  num_requests: {200 if devices.kind == 'gpu' else 96}",
        "  warmup_requests: 8",
        f"  load: {{kind: concurrency, concurrency: {64 if devices.kind == 'gpu' else 16}}}",
        "  seed: 0",
        "",
        "# What your users tolerate; a trial that misses one is infeasible.",
        "slos:",
        f"  ttft_p95_ms: {1000 if devices.kind == 'gpu' else 2000}",
        f"  e2e_p95_ms: {10000 if devices.kind == 'gpu' else 8000}",
        "",
        "objectives:",
        "  - {metric: output_throughput, direction: maximize}",
        "  - {metric: e2e_p95_ms, direction: minimize}",
        "",
        "parameters:",
    ]
    lines += _parameters(devices, verdict)
    lines += ["", "search:", "  sampler: auto", "  seed: 0",
              f"  trials: {24 if devices.kind == 'gpu' else 8}"]
    return "\n".join(lines) + "\n"


def _parameters(devices: Devices, verdict: Fit) -> list[str]:
    lines: list[str] = []
    for note in verdict.notes:
        lines.append(f"  # {note}")
    if len(verdict.quantization) > 1:
        lines.append("  # weights at 8 bits: more room for the KV cache, maybe less accuracy")
        lines.append(f"  quantization: {{choices: [{', '.join(verdict.quantization)}]}}")
    if devices.kind == "gpu":
        if len(verdict.tensor_parallel) > 1:
            lines.append(f"  # sizes that divide the heads and fit {devices.count} GPU(s); a "
                         "combination that does not fit is rejected before launch")
            lines.append("  tensor_parallel_size: {choices: ["
                         + ", ".join(str(t) for t in verdict.tensor_parallel) + "]}")
        low = verdict.utilization_low or GPU_UTILIZATION_FLOOR
        if low < GPU_UTILIZATION_HIGH:
            lines.append("  # the share of GPU memory vLLM takes; the memory fit finds a "
                         f"listed combination fitting from {low:.2f}")
            lines.append(f"  gpu_memory_utilization: {{low: {low:.2f}, high: "
                         f"{GPU_UTILIZATION_HIGH}, step: 0.05, default: "
                         f"{max(low, 0.9):.2f}}}")
        lines += [
            "  # sequences per step: throughput up, per-token latency up",
            "  max_num_seqs: {low: 16, high: 512, log: true, default: 256}",
            "  # tokens per step: long prompts prefill faster, decodes wait longer",
            "  max_num_batched_tokens: {low: 1024, high: 16384, log: true, default: 8192}",
            "  enable_prefix_caching: {choices: [true, false]}",
        ]
    else:
        lines += [
            "  # sequences per step: throughput up, per-token latency up",
            "  max_num_seqs: {low: 4, high: 128, log: true, default: 128}",
            "  # tokens per step: long prompts prefill faster, decodes wait longer",
            "  max_num_batched_tokens: {low: 256, high: 4096, log: true, default: 2048}",
            "  enable_chunked_prefill: {choices: [true, false]}",
        ]
    return lines


def write_starter_space(text: str, output: Path, *, force: bool) -> None:
    """Validate ``text`` as a space, then write it to ``output`` (refused if it exists and not
    ``force``). Nothing is left behind when it does not validate."""
    from autotune.space.model import load_space

    if output.exists() and not force:
        raise OptionError(f"{output} exists: pass --force to overwrite it")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:
        load_space(tmp)
    except AutotuneError:
        tmp.unlink()
        raise
    tmp.replace(output)
