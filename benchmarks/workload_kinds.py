"""Output throughput and TTFT p95 of the vLLM defaults under each workload kind, side by side.

One engine with the quickstart's engine settings (search_spaces/quickstart-cpu.yaml, vLLM
defaults for every tuned parameter); each kind is driven through ``HttpLoadDriver.run`` with a
run index of its own (fresh prompts: no run is served from an earlier run's prefix cache), at
the quickstart's closed-loop concurrency, or open-loop at the trace's own arrival times.

    python benchmarks/workload_kinds.py [--requests 48] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.bench.driver import Endpoint, EngineStalled, HttpLoadDriver  # noqa: E402
from autotune.bench.engine_metrics import engine_metrics  # noqa: E402
from autotune.bench.workload import WorkloadError  # noqa: E402
from autotune.devices import CpuSlotPool  # noqa: E402
from autotune.engines.vllm import VllmLauncher, engine_config  # noqa: E402
from autotune.model.demo import build_demo_model  # noqa: E402
from autotune.space.model import Space  # noqa: E402

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("~/.cache/autotune/demo-llama"))
    parser.add_argument("--requests", type=int, default=48, help="measured prompts per kind")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop kinds")
    args = parser.parse_args()

    model = args.model.expanduser()
    if not (model / "config.json").is_file():
        model = build_demo_model(model)
    data = yaml.safe_load((ROOT / "search_spaces" / "quickstart-cpu.yaml").read_text())
    data["model"]["path"] = str(model)
    data["model"]["build_demo"] = False
    data.pop("quality", None)
    space = Space.model_validate(data)
    base = space.workload
    pool = CpuSlotPool(slots=1)
    devices = pool.acquire(1)
    work = Path(tempfile.mkdtemp(prefix="workload-kinds-"))
    engine = VllmLauncher().start(engine_config(space, {}, is_default=True), devices,
                                  work / "engine.log")
    endpoint = Endpoint(engine.base_url, engine.served_name)
    rows = []
    failed: list[str] = []
    try:
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
    finally:
        engine.stop()
        pool.release(devices)
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
