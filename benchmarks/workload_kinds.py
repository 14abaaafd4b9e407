"""Output throughput and TTFT p95 of the vLLM defaults under each workload kind, side by side.

One engine with the quickstart's engine settings (search_spaces/quickstart-cpu.yaml, vLLM
defaults for every tuned parameter); each kind is driven through ``HttpLoadDriver.run`` with a
run index of its own (fresh prompts: no run is served from an earlier run's prefix cache), at
the quickstart's closed-loop concurrency, or open-loop at the trace's own arrival times.

    python benchmarks/workload_kinds.py [--requests 48] [--concurrency 32]
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
from common import (
    ROOT,
    add_model_option,
    arg_parser,
    default_engine,
    demo_model,
    scratch_dir,
    space_data,
)

from autotune.bench.driver import Endpoint, EngineStalled, HttpLoadDriver
from autotune.bench.engine_metrics import engine_metrics
from autotune.bench.prompt_set import WorkloadError
from autotune.space.model import Space

SAMPLES = ROOT / "workloads"


def kinds() -> dict[str, dict[str, Any]]:
    """Each kind's prompts section (the sample files; lengths from the data)."""
    def trace(fmt: str, file: str, **more: Any) -> dict[str, Any]:
        return {"kind": "trace", "format": fmt, "path": str(SAMPLES / file), **more}

    return {
        "random 256/64": {"kind": "random", "input_tokens": 256, "output_tokens": 64},
        "jsonl": {"kind": "jsonl", "path": str(SAMPLES / "prompts-sample.jsonl"),
                  "output_tokens": 64},  # a line of the sample has none
        "sharegpt": {"kind": "sharegpt", "path": str(SAMPLES / "sharegpt-sample.json"),
                     "too_long": "truncate"},
        "chat": {"kind": "chat", "path": str(SAMPLES / "chat-sample.jsonl"),
                 "too_long": "truncate"},
        "chat multi-turn": {"kind": "chat", "path": str(SAMPLES / "chat-sample.jsonl"),
                            "too_long": "truncate", "multi_turn": {"max_turns": 3}},
        "shared_prefix": {"kind": "shared_prefix", "num_prefixes": 4, "prefix_tokens": 192,
                          "suffix_tokens": 64, "output_tokens": 64},
        "trace azure": trace("azure", "azure-trace-sample.csv"),
        "trace burstgpt": trace("burstgpt", "burstgpt-sample.csv"),
        "trace mooncake": trace("mooncake", "mooncake-trace-sample.jsonl", too_long="truncate"),
        "trace generic": trace(
            "generic", "generic-trace-sample.csv", time_unit="ms", group_prefix_tokens=64,
            columns={"timestamp": "arrival_ms", "input_tokens": "prompt_tokens",
                     "output_tokens": "completion_tokens", "group": "session"}),
    }


def main() -> None:
    parser = arg_parser(__doc__)
    add_model_option(parser)
    parser.add_argument("--requests", type=int, default=48, help="measured prompts per kind")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop kinds")
    args = parser.parse_args()

    space = Space.model_validate(
        space_data("quickstart-cpu", model=demo_model(args.model), quality=False))
    base = space.workload
    work = scratch_dir("workload-kinds-")
    rows = []
    failed: list[str] = []
    with default_engine(space, work / "engine.log") as engine:
        endpoint = Endpoint(engine.base_url, engine.served_name)
        for run_index, (name, prompts) in enumerate(kinds().items(), start=1):
            traced = prompts["kind"] == "trace"
            load = ({"kind": "trace"} if traced
                    else {"kind": "concurrency", "concurrency": args.concurrency})
            workload = base.model_validate({**base.model_dump(), "prompts": prompts,
                                            "num_requests": args.requests, "load": load})
            before = httpx.get(f"{endpoint.base_url}/metrics", timeout=30).text
            try:
                result = HttpLoadDriver().run(endpoint, workload, space.slos, run_index)
            except (WorkloadError, EngineStalled) as exc:  # the other kinds still run
                print(f"{name}: FAILED: {exc}", file=sys.stderr, flush=True)
                failed.append(name)
                continue
            after = httpx.get(f"{endpoint.base_url}/metrics", timeout=30).text
            m = {**result.metrics, **engine_metrics(before, after)}
            rows.append((name, load["kind"] if not traced else "trace x1", m))
            print(f"{name}: done ({m['completed']:.0f} requests, {result.benchmark_s:.1f} s)",
                  file=sys.stderr, flush=True)
    print(f"\nvLLM defaults, quickstart engine settings, demo model; {args.requests} prompts a "
          f"kind (+{base.warmup_requests} warm-up), concurrency {args.concurrency} or the "
          "trace's arrivals\n")
    print("| workload | load | requests ok | mean in / out tokens | output tok/s | TTFT p95 ms "
          "| E2E p95 ms | prefix-cache hit rate |")
    print("|---|---|---|---|---|---|---|---|")
    for name, load, m in rows:
        hit = m.get("prefix_cache_hit_rate")
        print(f"| {name} | {load} | {m['completed']:.0f}/{m['completed'] + m['failed']:.0f} | "
              f"{m['total_input_tokens'] / max(m['completed'], 1):.0f} / "
              f"{m['total_output_tokens'] / max(m['completed'], 1):.0f} | "
              f"{m['output_throughput']:.0f} | {m['ttft_p95_ms']:.0f} | {m['e2e_p95_ms']:.0f} | "
              f"{'-' if hit is None else f'{hit:.2f}'} |")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
