"""Dashboard latency on a 5,000-trial study: API p50/p95 per study endpoint, and the study
page's time to interactive in headless Chromium, beside the goals (p95 < 200 ms, < 1 s).

    .venv/bin/python benchmarks/dashboard_latency.py [--trials 5000] [--storage URL --study NAME]

The study is written to a temporary SQLite file through autotune's repository and Optuna (the
same writers the study loop uses; ~3 minutes for 5,000 trials on 2 cores), unless --storage
names an existing one. The dashboard runs in this process under uvicorn and is measured over
real HTTP. "first" is an endpoint's first request (what it computes once per study change:
Optuna's figures, a Pareto front over metrics not asked for before); the percentiles are over
the requests after it. "while writing" polls ``?after=N`` while another thread appends a trial
every second, as a running study does. In the browser, "interactive" is when the trials table
and controls work, "Pareto plot drawn" when the trade-off plot holds every trial; a first visit
starts from an empty browser cache, a return visit has plotly.js cached.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time

import httpx
import optuna
from common import arg_parser

from autotune.dashboard import create_app
from autotune.store import open_catalog
from autotune.store.synthetic import (
    random_kinds,
    write_study,
    write_trial,
)
from autotune.testing.live_server import (
    CHROMIUM,
    CHROMIUM_ARGS,
    running_server,
)

API_GOAL_MS = 200.0
PAGE_GOAL_MS = 1000.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed_get(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


def measure_api(base: str, study_id: int, n_trials: int, requests: int) -> list[tuple]:
    last = n_trials - 1
    endpoints = [
        ("GET /api/studies", "/api/studies"),
        ("GET /api/studies/{id}", f"/api/studies/{study_id}"),
        ("GET /api/studies/{id}/trials (all)", f"/api/studies/{study_id}/trials"),
        ("GET /api/studies/{id}/trials?after=N (poll)",
         f"/api/studies/{study_id}/trials?after={last - 5}"),
        ("GET /api/studies/{id}/front (objectives)", f"/api/studies/{study_id}/front"),
        ("GET /api/studies/{id}/front (other metrics)",
         f"/api/studies/{study_id}/front?metrics=request_goodput,ttft_p99_ms"),
        ("GET /api/studies/{id}/figures", f"/api/studies/{study_id}/figures"),
        ("GET /api/studies/{id}/trials/{n}", f"/api/studies/{study_id}/trials/{last // 2}"),
        ("GET /studies/{id} (page)", f"/studies/{study_id}"),
        ("GET /studies/{id}/trials/{n} (page)", f"/studies/{study_id}/trials/{last // 2}"),
    ]
    rows = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for label, path in endpoints:
            cold = timed_get(client, path)
            samples = [timed_get(client, path) for _ in range(requests)]
            rows.append((label, cold, statistics.median(samples), percentile(samples, 95)))
    return rows


def measure_while_writing(
    base: str, storage: str, name: str, study_id: int, requests: int
) -> tuple[float, float, float, int]:
    """Poll ``?after=N`` while another thread appends trials; also how long a new trial takes
    to show up in the poll (p50)."""
    study = optuna.load_study(study_name=name, storage=storage)
    stop = threading.Event()
    written: dict[int, float] = {}
    rng = random.Random(7)

    def writer() -> None:
        while not stop.is_set():
            number = write_trial(storage, study, "F", rng)
            written[number] = time.perf_counter()
            stop.wait(1.0)

    thread = threading.Thread(target=writer, daemon=True)
    samples: list[float] = []
    seen: dict[int, float] = {}
    with httpx.Client(base_url=base, timeout=120) as client:
        after = client.get(f"/api/studies/{study_id}").json()["counts"]["total"] - 1
        thread.start()
        for _ in range(requests):
            started = time.perf_counter()
            payload = client.get(f"/api/studies/{study_id}/trials?after={after}").json()
            samples.append((time.perf_counter() - started) * 1000)
            for row in payload["trials"]:
                seen.setdefault(row[0], time.perf_counter())
            time.sleep(0.2)
    stop.set()
    thread.join()
    delays = [seen[n] - written[n] for n in seen if n in written]
    return (statistics.median(samples), percentile(samples, 95),
            statistics.median(delays) if delays else float("nan"), len(delays))


def measure_page(base: str, study_id: int, visits: int) -> dict[str, list[float]]:
    """Time to interactive (table usable) and to the Pareto plot drawn, from navigation start:
    first visits (empty browser cache) and return visits (plotly.js cached)."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {k: [] for k in (
        "first visit: interactive", "first visit: Pareto plot drawn",
        "return visit: interactive", "return visit: Pareto plot drawn")}
    url = f"{base}/studies/{study_id}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(visits):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            for visit in ("first visit", "return visit"):
                page.goto(url)
                page.wait_for_selector("body[data-plotted]", timeout=60_000)
                out[f"{visit}: interactive"].append(page.evaluate("window.autotuneReadyAt"))
                out[f"{visit}: Pareto plot drawn"].append(
                    page.evaluate("window.autotunePlottedAt"))
            context.close()
        browser.close()
    return out


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=40, help="requests per endpoint")
    parser.add_argument("--visits", type=int, default=3, help="browser sessions")
    parser.add_argument("--storage", help="use this storage instead of writing a study")
    parser.add_argument("--study", default="bench-5000", help="study name")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="autotune-dashboard-bench-") as tmp:
        storage = args.storage or f"sqlite:///{tmp}/bench.db"
        if args.storage is None:
            started = time.perf_counter()
            print(f"writing a study of {args.trials} trials to {storage} ...", flush=True)
            write_study(storage, args.study, random_kinds(args.trials, seed=1), seed=1)
            print(f"  written in {time.perf_counter() - started:.0f} s", flush=True)
        with running_server(create_app(open_catalog(storage))) as base:
            report(args, storage, base)


def report(args: argparse.Namespace, storage: str, base: str) -> None:
    started = time.perf_counter()
    studies = httpx.get(f"{base}/api/studies", timeout=300).json()
    first_ms = (time.perf_counter() - started) * 1000
    study = next(s for s in studies if s["name"] == args.study)
    n_trials = study["counts"]["total"]
    print(f"\nstudy {args.study!r}: {study['counts']}")
    print(f"first request after start (reads every study): {first_ms:.0f} ms\n")

    rows = measure_api(base, study["id"], n_trials, args.requests)
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'endpoint':<{width}}{'first ms':>10}{'p50 ms':>10}{'p95 ms':>10}"
          f"   goal p95 < {API_GOAL_MS:.0f} ms")
    for label, first, p50, p95 in rows:
        verdict = "ok" if p95 < API_GOAL_MS else "MISSED"
        print(f"{label:<{width}}{first:>10.1f}{p50:>10.1f}{p95:>10.1f}   {verdict}")
    p50, p95, delay, count = measure_while_writing(
        base, storage, args.study, study["id"], args.requests)
    verdict = "ok" if p95 < API_GOAL_MS else "MISSED"
    print(f"{'poll ?after=N while writing':<{width}}{'':>10}{p50:>10.1f}{p95:>10.1f}   "
          f"{verdict}; a new trial showed up after {delay:.2f} s (p50 of {count})")

    if not args.no_browser:
        print(f"\nstudy page in Chromium ({args.visits} sessions)   median ms   max ms"
              f"   goal < {PAGE_GOAL_MS:.0f} ms")
        for label, values in measure_page(base, study["id"], args.visits).items():
            verdict = "ok" if statistics.median(values) < PAGE_GOAL_MS else "MISSED"
            print(f"  {label:<34}{statistics.median(values):>9.0f}{max(values):>9.0f}"
                  f"   {verdict}")


if __name__ == "__main__":
    main()
