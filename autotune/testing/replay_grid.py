"""A tiny hand-made grid of recorded trials for the replay engine: 8 configurations of three
parameters and the vLLM-default row, with complete, failed and rejected states."""

from __future__ import annotations

import json
from pathlib import Path

from autotune.engines.vllm import engine_config
from autotune.space import Space

SPACE = {
    "name": "tiny",
    "model": {"path": "/nonexistent/tiny-model", "max_model_len": 512},
    "engine": {"command": ["vllm", "serve"], "flags": {"dtype": "float16"}},
    "workload": {
        "prompts": {"kind": "random", "input_tokens": 16, "output_tokens": 8},
        "num_requests": 4,
        "load": {"kind": "concurrency", "concurrency": 2},
    },
    "slos": {"e2e_p95_ms": 1000},
    "objectives": [
        {"metric": "output_throughput", "direction": "maximize"},
        {"metric": "e2e_p95_ms", "direction": "minimize"},
    ],
    "parameters": {
        "max_num_seqs": {"low": 8, "high": 64, "log": True, "default": 64},
        "max_num_batched_tokens": {"choices": [256, 2048], "default": 2048},
        "enable_chunked_prefill": {"choices": [True, False]},
    },
}


def metrics_of(throughput: float, e2e: float) -> dict[str, float]:
    return {
        "output_throughput": throughput,
        "e2e_p95_ms": e2e,
        "error_rate": 0.0,
        "completed": 4.0,
    }


# (max_num_seqs, budget, chunked) → (state, failure_kind, metrics)
ROWS = {
    (8, 256, True): ("complete", None, metrics_of(100.0, 900.0)),
    (8, 2048, True): ("complete", None, metrics_of(150.0, 800.0)),
    (64, 256, True): ("complete", None, metrics_of(300.0, 950.0)),
    (64, 2048, True): ("complete", None, metrics_of(400.0, 1200.0)),  # misses the SLO
    (8, 2048, False): ("complete", None, metrics_of(120.0, 500.0)),
    (64, 2048, False): ("failed", "out_of_memory", {}),
    (8, 256, False): ("rejected", "invalid_config", {}),
    (64, 256, False): ("rejected", "invalid_config", {}),
}
DEFAULT_METRICS = metrics_of(250.0, 700.0)


def write_grid(path: Path) -> Path:
    space = Space.model_validate(SPACE)
    lines = [{"meta": {"space": SPACE}}]
    default = space.default_params()
    lines.append(
        {
            "params": default,
            "default": True,
            "state": "complete",
            "failure_kind": None,
            "metrics": DEFAULT_METRICS,
            "flags": dict(engine_config(space, default, is_default=True).flags),
        }
    )
    for (seqs, budget, chunked), (state, kind, metrics) in ROWS.items():
        params = {
            "max_num_seqs": seqs,
            "max_num_batched_tokens": budget,
            "enable_chunked_prefill": chunked,
        }
        lines.append(
            {
                "params": params,
                "state": state,
                "failure_kind": kind,
                "failure_reason": f"recorded {kind}" if kind else None,
                "metrics": metrics,
                "flags": dict(engine_config(space, params, is_default=False).flags),
                "timings": {"startup_s": 20.0},
                "disturbed": seqs == 8,
            }
        )
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path
