"""Cross-check the built-in load driver against `vllm bench serve` on one running server.

Starts one vLLM CPU server on the quickstart's demo model, then measures the same workload
(random prompts, fixed input/output lengths, ignore_eos, fixed concurrency) alternately with
autotune's driver and with vLLM's own benchmark (``vllm.benchmarks.serve``, in this process;
autotune/bench/crosscheck.py), fresh prompts every run, at each concurrency, and prints both
side by side with the differences (the goal: throughput within 3%, median TTFT/TPOT 5%).
Each round's two runs send the same request lengths (vLLM's draws for its seed, around the
means by ``--range-ratio``); a difference is the median over the rounds of each round's pair.
The server runs on its own cores and both clients on the others (``--client-cores``; by
default one core in four, at least one), so neither client's CPU time slows the server.

    .venv/bin/python benchmarks/crosscheck_vllm_bench.py [--rounds 4] [--concurrency 4 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.bench.crosscheck import (  # noqa: E402
    ROWS,
    CrossCheckLoad,
    cross_check,
    isolate,
    split_cores,
)
from autotune.bench.driver import Endpoint  # noqa: E402
from autotune.devices import CpuSlotPool  # noqa: E402
from autotune.engines.vllm import VllmLauncher, engine_config  # noqa: E402
from autotune.model.demo import build_demo_model  # noqa: E402
from autotune.space.model import Space  # noqa: E402

# The goal of issue 13 item 9 (tests/integration/test_crosscheck.py, out of the default run:
# see docs/measurement.md, "Cross-check").
LIMITS = {"output_throughput": 0.03, "ttft_p50_ms": 0.05, "tpot_p50_ms": 0.05}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--range-ratio", type=float, default=0.5,
                        help="lengths drawn around the means (vLLM's --random-range-ratio)")
    parser.add_argument("--model", type=Path, default=Path("~/.cache/autotune/demo-llama"),
                        help="model directory (default: the quickstart's demo model)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="server and clients share every core (as before)")
    args = parser.parse_args()

    model_dir = args.model.expanduser()
    if not (model_dir / "config.json").is_file():
        model_dir = build_demo_model(model_dir)
    data = yaml.safe_load((ROOT / "search_spaces" / "quickstart-cpu.yaml").read_text())
    data["model"]["path"] = str(model_dir)
    # The engine core in a process of its own (the quickstart keeps it in the API server's for
    # a faster start): sharing one GIL on the server's core, a client's reads can change how
    # fast the server runs (docs/measurement.md, "Cross-check").
    data["engine"].setdefault("env", {})["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    space = Space.model_validate(data)
    config = engine_config(space, {}, is_default=True)
    work = Path(tempfile.mkdtemp(prefix="crosscheck-"))
    host = sorted(os.sched_getaffinity(0))
    server_cores, client_cores = (host, host) if args.no_isolate else split_cores(host)
    pool = CpuSlotPool(server_cores)
    engine = VllmLauncher().start(config, pool.acquire(1), work / "engine.log")
    if not args.no_isolate:
        isolate(engine.pids(), server_cores, client_cores)
    try:
        endpoint = Endpoint(engine.base_url, engine.served_name)
        found = [
            cross_check(endpoint, model_dir,
                        CrossCheckLoad(args.input_len, args.output_len, args.requests, c,
                                       args.warmup, args.range_ratio),
                        work, rounds=args.rounds, slos=space.slos)
            for c in args.concurrency
        ]
    finally:
        engine.stop()

    print(f"server: vLLM {engine.version}, demo model, CPU cores {server_cores}, clients on "
          f"{client_cores}, one start; workload: "
          f"{args.requests} requests, {args.input_len} in / {args.output_len} out "
          f"(range ratio {args.range_ratio:g}), "
          f"{args.rounds} rounds per concurrency (ours, theirs, theirs, ours, ...); "
          f"goodput SLOs {dict(space.slos)}")
    for comparison in found:
        print(f"\nconcurrency {comparison.load.concurrency}")
        print(comparison.table())
        for metric, limit in LIMITS.items():
            their = dict(ROWS)[metric]
            difference = comparison.difference(metric, their)
            verdict = "within" if abs(difference) <= limit else "OUTSIDE"
            print(f"{metric}: {verdict} {100 * limit:.0f}% ({100 * difference:+.1f}%)")


if __name__ == "__main__":
    main()
