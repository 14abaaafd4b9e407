"""Noise benchmark: one configuration measured N times, each on a fresh server.

For every fresh server it records what a one-run tuner would report (the first measurement)
and autotune's robust figure (disturbed measurements repeated on the same server, the clean
median kept), then prints the spread of both side by side. ``--disturb RUN`` starts a
competing CPU load (busy loops on every core) in the middle of that run's first measurement,
the kind of disturbance that made one run in three 2.2x off on this class of machine.

    .venv/bin/python benchmarks/noise.py [--runs 5] [--disturb 2] [--model DIR]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

from common import (
    add_model_option,
    arg_parser,
    default_engine,
    demo_model,
    scratch_dir,
    space_data,
)

from autotune.bench.driver import Endpoint, HttpLoadDriver
from autotune.bench.measurement import measure_robustly
from autotune.devices import CpuSlotPool
from autotune.space.measurement import MeasurementSpec
from autotune.space.model import Space

BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def disturb(delay_s: float, duration_s: float, cores: int) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        loops = [subprocess.Popen([sys.executable, "-c", BUSY.format(s=duration_s)])
                 for _ in range(cores)]
        for loop in loops:
            loop.wait()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def describe(values: list[float]) -> str:
    cv = statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
    return (f"median {statistics.median(values):7.1f}  min {min(values):7.1f}  "
            f"max {max(values):7.1f}  max/min {max(values) / min(values):5.2f}  CV {cv:6.1%}")


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--disturb", type=int, action="append", default=[],
                        help="1-based run whose first measurement gets a competing load")
    add_model_option(parser)
    parser.add_argument("--requests", type=int, default=160)
    args = parser.parse_args()

    data = space_data("cpu-fixed-load", model=demo_model(args.model), quality=False)
    data["workload"].update({"num_requests": args.requests, "warmup_requests": 8,
                             "load": {"kind": "concurrency", "concurrency": 16}})
    space = Space.model_validate(data)
    spec = MeasurementSpec(max_repeats=2)
    single: list[float] = []
    robust: list[float] = []
    work = scratch_dir("noise-")
    cores = len(CpuSlotPool().cores)
    for run in range(1, args.runs + 1):
        with default_engine(space, work / f"engine-{run}.log") as engine:
            endpoint = Endpoint(engine.base_url, engine.served_name)
            loop = disturb(2.0, 4.0, cores) if run in args.disturb else None
            result = measure_robustly(
                lambda endpoint=endpoint: HttpLoadDriver().run(endpoint, space.workload,
                                                               space.slos),
                engine.base_url, spec, closed_loop=True)
            if loop:
                loop.join()
        first = result.measurements[0].result.metrics["output_throughput"]
        single.append(first)
        robust.append(result.metrics["output_throughput"])
        flags = "; ".join(result.measurements[0].disturbances) or "clean"
        print(f"server {run}: single run {first:7.1f} tok/s | robust "
              f"{result.metrics['output_throughput']:7.1f} tok/s after "
              f"{len(result.measurements)} measurement(s) | first: {flags[:110]}", flush=True)
    print(f"\n{args.runs} fresh servers, demo model, {args.requests} requests at concurrency 16"
          f"{', competing load in run(s) ' + str(args.disturb) if args.disturb else ''}")
    print(f"single run (one-shot tuners): {describe(single)}")
    print(f"autotune robust figure:       {describe(robust)}")


if __name__ == "__main__":
    main()
