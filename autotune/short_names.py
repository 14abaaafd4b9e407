"""Short names for parameters, values and failures, so a study's table fits an 80-column terminal.

One fixed table (documented in docs/output.md): the compact views of ``study show`` and the
end-of-study front print ``seqs=16`` instead of ``max_num_seqs=16``. A name not in the table is
printed in full (and wrapped, never cut), so a flag autotune does not know stays readable.
Metrics' short names are the metric catalogue's (``autotune.metrics.short_name``).
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


def failure(kind: str | None) -> str:
    return FAILURE_NAMES.get(kind or "", kind or "failed")
