"""One-wave load levels against steady-state ones, and a study's reported figure against
fresh servers, before and after its confirm stage.

``levels``: one vLLM server with the quickstart's engine flags and workload (the vLLM
defaults), at concurrency C (default 48): two tries of one wave (C requests sent at once and
measured whole, as levels were measured before steady state) and two tries of a steady-state
level (ramp-up and drain left out, autotune/bench/steady.py), alternating. Prints each try's
request throughput and TTFT p95 and the spread between the two tries of each kind.

``picks``: a finished study (e.g. README's first command: ``--storage sqlite:///autotune.db
--study quickstart-cpu``): its best-capacity trial's figure from its first run and the figure
the study reports after its confirm stage (the mean over fresh servers), against K more fresh
servers (``autotune confirm``'s runs): their median, how far each reported figure is from it,
how many fall inside the reported interval and how wide it is.

    .venv/bin/python benchmarks/steady_state.py levels [--concurrency 48]
    .venv/bin/python benchmarks/steady_state.py picks --study quickstart-cpu [--times 5]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import common

METRIC = "capacity_rps"


def levels(concurrency: int, model: Path) -> None:
    from autotune.bench.driver import Endpoint, HttpLoadDriver
    from autotune.space.model import Space

    data = common.space_data("quickstart-cpu", model=common.demo_model(model), quality=False)
    space = Space.model_validate(data)
    primary = space.primary_workload
    slos = space.mix[0].slos
    waves = type(primary).model_validate({
        **primary.model_dump(), "load": {"kind": "concurrency", "concurrency": concurrency},
        "num_requests": concurrency, "warmup_requests": 0, "steady_state": None})
    steady = type(primary).model_validate({**waves.model_dump(), "steady_state": {}})
    found: dict[str, list[dict[str, float]]] = {"one wave": [], "steady": []}
    with common.default_engine(space, common.scratch_dir("steady-") / "engine.log") as engine:
        endpoint = Endpoint(engine.base_url, engine.served_name)
        driver = HttpLoadDriver()
        driver.run(endpoint, primary, slos, run_index=900)  # warm-up: the first batches
        run = 0
        for _ in range(2):
            for kind, workload in (("one wave", waves), ("steady", steady)):
                run += 1
                result = driver.run(endpoint, workload, slos, run_index=run)
                found[kind].append(result.figures(slos, from_arrival=True))
    print(f"\nconcurrency {concurrency}, quickstart workload and engine flags, one server "
          f"(tries alternate: wave, steady, wave, steady)")
    print(f"{'level':<10}{'req/s try 1':>12}{'try 2':>8}{'spread':>8}"
          f"{'TTFT p95 ms 1':>15}{'2':>7}{'requests':>10}")
    for kind, runs in found.items():
        rates = [r["request_throughput"] for r in runs]
        ttft = [r["ttft_p95_ms"] for r in runs]
        spread = abs(rates[0] - rates[1]) / statistics.mean(rates)
        counts = "/".join(f"{r['completed']:.0f}" for r in runs)
        print(f"{kind:<10}{rates[0]:>12.2f}{rates[1]:>8.2f}{100 * spread:>7.1f}%"
              f"{ttft[0]:>15.0f}{ttft[1]:>7.0f}{counts:>10}")


def picks(storage: str, study: str, times: int, space_path: Path | None) -> int:
    from autotune.results.noise_model import study_noise_model
    from autotune.results.report import load_report
    from autotune.space.model import load_space
    from autotune.store import open_catalog
    from autotune.study.confirm import confirm_trial

    catalog = open_catalog(storage)
    report = load_report(catalog, study)
    best = report.best(METRIC, "maximize")
    if not best:
        print(f"study {study!r} has no front trial with {METRIC}", file=sys.stderr)
        return 2
    record = best[0]
    first = report.first_runs.get(record.number, record.metrics)[METRIC]
    reported = record.metrics[METRIC]
    servers = report.servers_of(record)
    space = load_space(space_path or common.SPACES / "quickstart-cpu.yaml")
    noise = study_noise_model(catalog, study)
    interval = noise.intervals(record).get(METRIC)
    result = confirm_trial(space, record, times=times, log_dir=common.scratch_dir("picks-"),
                           noise=noise, objectives=[METRIC])
    values = [r[METRIC] for r in result.runs if METRIC in r]
    if not values:
        print(f"no fresh run measured {METRIC}: {result.failures}", file=sys.stderr)
        return 1
    median = statistics.median(values)
    print(f"\nstudy {study!r}, trial {record.number} (best {METRIC}), "
          f"{times} fresh servers: " + ", ".join(f"{v:.2f}" for v in values)
          + f"; median {median:.2f}")
    print(f"{'figure':<38}{'value':>8}{'vs median':>11}")
    rows: list[tuple[str, Any]] = [
        ("first run (before the confirm stage)", first),
        (f"reported (mean over {servers} servers)", reported)]
    for name, value in rows:
        print(f"{name:<38}{value:>8.2f}{100 * (value / median - 1):>+10.1f}%")
    if interval is not None:
        inside = sum(1 for v in values if interval.contains(v))
        width = (interval.high - interval.low) / reported
        print(f"interval {interval.text()}: {inside} of {len(values)} inside, "
              f"{100 * width:.0f}% of the figure wide ({interval.level:.0%})")
    return 0


def main() -> int:
    parser = common.arg_parser(__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    lv = sub.add_parser("levels")
    lv.add_argument("--concurrency", type=int, default=48)
    common.add_model_option(lv)
    pk = sub.add_parser("picks")
    pk.add_argument("--storage", default="sqlite:///autotune.db")
    pk.add_argument("--study", default="quickstart-cpu")
    pk.add_argument("--times", type=int, default=5)
    pk.add_argument("--space", type=Path, default=None)
    args = parser.parse_args()
    if args.what == "levels":
        levels(args.concurrency, args.model)
        return 0
    return picks(args.storage, args.study, args.times, args.space)


if __name__ == "__main__":
    sys.exit(main())
