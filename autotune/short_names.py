"""Short names for parameters, values and metrics, so a study's table fits an 80-column terminal.

One fixed table (documented in docs/output.md): the compact views of ``study show`` and the
end-of-study front print ``seqs=16`` instead of ``max_num_seqs=16``. A name not in the table is
printed in full (and wrapped, never cut), so a flag autotune does not know stays readable.
"""

from __future__ import annotations

import json
from typing import Any

PARAMETER_NAMES = {
    "quantization": "quant",
    "gpu_memory_utilization": "gpu_mem",
    "max_num_batched_tokens": "batch_tok",
    "max_num_seqs": "seqs",
    "enable_chunked_prefill": "chunked",
    "enable_prefix_caching": "prefix",
    "kv_cache_dtype": "kv",
    "tensor_parallel_size": "tp",
    "pipeline_parallel_size": "pp",
    "block_size": "block",
    "dtype": "dtype",
    "speculative_method": "spec",
    "num_speculative_tokens": "spec_tok",
    "max_model_len": "max_len",
    "swap_space": "swap",
    "cpu_offload_gb": "offload_gb",
    "enforce_eager": "eager",
    "async_scheduling": "async",
    "scheduling_policy": "policy",
    "max_num_partial_prefills": "partial_prefills",
}

METRIC_NAMES = {
    "output_throughput": "tok/s",
    "request_throughput": "req/s",
    "total_token_throughput": "total tok/s",
    "request_goodput": "goodput req/s",
    "goodput_fraction": "goodput share",
    "error_rate": "errors",
    "output_throughput_cv": "tput CV",
    "kv_cache_usage_peak_pct": "KV peak %",
    "preemptions": "preempt",
    "prefix_cache_hit_rate": "prefix hit",
    "spec_decode_acceptance_rate": "spec accept",
    "queue_time_mean_ms": "queue ms",
    "capacity_request_rate": "capacity req/s",
    "gpu_util_mean_pct": "GPU util %",
    "gpu_mem_peak_mib": "GPU mem MiB",
    "cpu_util_mean_pct": "CPU util %",
    "engine_rss_peak_mib": "engine RSS MiB",
    "cost_per_1m_output_tokens_usd": "$/1M tok",
    "parallel_trials": "ran at once",
    "kv_cache_tokens": "KV tokens",
    "memory_fit_kv_error": "KV estimate err",
    "quality_accuracy": "accuracy",
    "quality_accuracy_delta": "Δ accuracy",
    "quality_seq_match": "same output",
    "quality_top1_agreement": "top-1 agree",
    "quality_logprob_drift": "logprob drift",
}

FAILURE_NAMES = {
    "invalid_config": "invalid",
    "out_of_memory": "OOM",
    "unsupported": "unsupported",
    "startup_timeout": "timeout",
    "crashed": "crashed",
    "benchmark_failed": "bench failed",
    "host_fault": "host fault",
    "interrupted": "interrupted",
    "worker_lost": "worker lost",
}


def parameter(name: str) -> str:
    return PARAMETER_NAMES.get(name, name)


def value(v: Any) -> str:
    """``True`` → on, ``False`` → off, floats to 3 significant digits, mappings as JSON."""
    if v is True:
        return "on"
    if v is False:
        return "off"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"), sort_keys=True)
    return str(v)


def assignment(name: str, v: Any) -> str:
    return f"{parameter(name)}={value(v)}"


def metric(name: str) -> str:
    """``e2e_p95_ms`` → ``e2e p95 ms``; listed metrics by the table; others as they are."""
    if name in METRIC_NAMES:
        return METRIC_NAMES[name]
    parts = name.split("_")
    if len(parts) == 3 and parts[2] == "ms" and parts[0] in ("ttft", "tpot", "itl", "e2e"):
        return " ".join(parts)
    return name


def failure(kind: str | None) -> str:
    return FAILURE_NAMES.get(kind or "", kind or "failed")
