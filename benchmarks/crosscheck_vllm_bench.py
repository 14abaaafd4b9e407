"""Cross-check the built-in load driver against `vllm bench serve` on one running server.

Starts one vLLM CPU server on the quickstart's demo model, then measures the same workload
(random prompts, input/output lengths drawn around their means by ``--range-ratio``,
ignore_eos, fixed concurrency) alternately with autotune's driver and with vLLM's own
benchmark, both through the LoadDriver boundary (``HttpLoadDriver`` and ``VllmBenchDriver``,
vLLM's ``vllm.benchmarks.serve`` in this process; autotune/bench/crosscheck.py), fresh prompts
every run, steady-state-length runs (``vllm_bench.prompt_count``), at each concurrency, and
prints both side by side with the differences (the goal: throughput within 3%, median
TTFT/TPOT 5%). A difference is the median over the rounds of each round's pair.
The server runs on its own cores and both clients on the others (``--client-cores``; by
default one core in four, at least one), so neither client's CPU time slows the server.

    .venv/bin/python benchmarks/crosscheck_vllm_bench.py [--rounds 4] [--concurrency 4 16]
"""

from __future__ import annotations

import os

from common import (
    add_model_option,
    arg_parser,
    default_engine,
    demo_model,
    scratch_dir,
    space_data,
)

from autotune.bench.crosscheck import (
    CrossCheckLoad,
    cross_check,
    isolate,
    split_cores,
)
from autotune.bench.driver import Endpoint
from autotune.devices import CpuSlotPool
from autotune.space.model import Space

# The goal of issue 25 item 4 (tests/bench/test_crosscheck.py; docs/measurement.md,
# "vllm bench serve as the load driver").
LIMITS = {"output_throughput": 0.03, "ttft_p50_ms": 0.05, "tpot_p50_ms": 0.05}


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=160,
                        help="measured requests (each run sends vllm_bench.prompt_count)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--range-ratio", type=float, default=0.5,
                        help="lengths drawn around the means (vLLM's --random-range-ratio)")
    add_model_option(parser)
    parser.add_argument("--no-isolate", action="store_true",
                        help="server and clients share every core (as before)")
    args = parser.parse_args()

    model_dir = demo_model(args.model)
    data = space_data("quickstart-cpu", model=model_dir)
    # The engine core in a process of its own (the quickstart keeps it in the API server's for
    # a faster start): sharing one GIL on the server's core, a client's reads can change how
    # fast the server runs (docs/measurement.md, "Cross-check").
    data["engine"].setdefault("env", {})["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    space = Space.model_validate(data)
    work = scratch_dir("crosscheck-")
    host = sorted(os.sched_getaffinity(0))
    server_cores, client_cores = (host, host) if args.no_isolate else split_cores(host)
    with default_engine(space, work / "engine.log", CpuSlotPool(server_cores)) as engine:
        if not args.no_isolate:
            isolate(engine.pids(), server_cores, client_cores)
        endpoint = Endpoint(engine.base_url, engine.served_name)
        found = [
            cross_check(endpoint,
                        CrossCheckLoad(args.input_len, args.output_len, args.requests, c,
                                       args.warmup, args.range_ratio),
                        rounds=args.rounds, slos=space.slos)
            for c in args.concurrency
        ]

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
            difference = comparison.difference(metric)
            verdict = "within" if abs(difference) <= limit else "OUTSIDE"
            print(f"{metric}: {verdict} {100 * limit:.0f}% ({100 * difference:+.1f}%)")


if __name__ == "__main__":
    main()
