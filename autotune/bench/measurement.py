"""How one trial is measured so that its figures can be trusted.

Each measurement runs the workload once on the live engine while sampling host load (CPU used
by processes that are not ours, steal) and the engine's /metrics. The measured period is cut
into time windows; a measurement whose windows disagree, whose error rate is too high, or whose
host was busy with something else is *disturbed* and repeated on the same server, up to
``max_repeats`` times. The trial's headline figures are then the median over its measurements
(one bad repeat cannot move them), each kept in full with its windows and reasons. Every
headline throughput carries its spread (CV between windows) and a within-run confidence
interval (``*_ci_low/high``): how precisely this one run pinned its own figure. What another
server would measure is wider; that interval comes from the spread between independent runs
(``autotune.results.noise_model``), not from here.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from autotune.bench import stats
from autotune.bench.engine_metrics import Peaks, engine_metrics
from autotune.bench.host_load import HostLoad, HostLoadSampler
from autotune.bench.metrics import RequestRecord
from autotune.engines.process import live_pids
from autotune.periodic import PeriodicSampler
from autotune.space import MeasurementSpec

if TYPE_CHECKING:
    from autotune.bench.driver import BenchResult


# Per-measurement figures whose median across repeats is the trial's figure (all other
# metrics are taken from the measurement closest to that median throughput).
HEADLINE = "output_throughput"


class MetricsPoller(PeriodicSampler):
    """Scrapes the engine's /metrics before, during (every ``interval_s``) and after a run.
    The scrapes during the run are folded into their peaks as they come (``during``), not kept:
    a busy engine's /metrics is hundreds of KB, scraped every second of a long run."""

    def __init__(self, base_url: str, interval_s: float = 1.0) -> None:
        super().__init__(interval_s, name="metrics-poller", join_timeout_s=10)
        self.url = f"{base_url}/metrics"
        self.before = ""
        self.after = ""
        self.during = Peaks()
        self.unparsed = 0  # scrapes during the run that did not parse (cut off mid-line)

    def _get(self) -> str:
        try:
            return httpx.get(self.url, timeout=5).text
        except httpx.HTTPError:
            return ""

    def on_start(self) -> None:
        self.before = self._get()

    def sample(self) -> None:
        text = self._get()
        if text:
            try:
                self.during.add(text)
            except ValueError:
                self.unparsed += 1

    def on_stop(self) -> None:
        self.after = self._get()

    def delta(self) -> dict[str, float]:
        if not (self.before and self.after) or self.unparsed:
            return {}
        try:
            return engine_metrics(self.before, self.after, peaks=self.during)
        except ValueError:  # a scrape cut off mid-line
            return {}


@dataclass
class Measurement:
    result: BenchResult
    windows: list[stats.Window]
    host: HostLoad | None
    engine: dict[str, float]
    disturbances: list[str]

    @property
    def window_throughputs(self) -> list[float]:
        return [w.output_throughput for w in self.windows]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.result.metrics,
            "windows": [w.to_dict() for w in self.windows],
            "window_cv": stats.spread(self.window_throughputs),
            "host": self.host.to_dict() if self.host else None,
            "engine": self.engine,
            "disturbances": self.disturbances,
        }


@dataclass
class RobustResult:
    metrics: dict[str, float]
    measurements: list[Measurement] = field(default_factory=list)
    chosen: BenchResult | None = None

    @property
    def disturbed(self) -> bool:
        """No measurement came out clean: the figures are the best available, not trusted."""
        return all(m.disturbances for m in self.measurements)


MIN_JUDGED_WINDOWS = 3


def _window_series(result: BenchResult, n: int) -> tuple[list[stats.Window], bool]:
    """The measurement's windows, and whether they are long enough to judge the server by.

    A closed-loop run fills its pipeline first (the first window holds only prefills) and then
    completes requests in waves about one end-to-end latency apart, so windows shorter than
    two latencies swing with the waves even on a quiet host. The steady span therefore starts
    at the first completion and windows last at least two median latencies; with fewer than
    three such windows the spread between them is not judged (host load still is)."""
    records: list[RequestRecord] = result.records
    if not records:
        return [], False
    sent = [r.sent_at for r in records]
    done = [r.done_at for r in records]
    # Skip the first wave: the requests sent before anything completed run in lockstep and
    # finish together, a start-up pattern rather than the server's steady pace.
    first_wave = sum(1 for t in sent if t < min(done))
    start, end = sorted(done)[min(first_wave, len(done) - 1)], max(sent)
    e2e = sorted(r.e2e for r in records if r.ok and r.e2e is not None)
    if end <= start or not e2e:
        return stats.windows(records, sent, done, n_windows=n), False
    window_s = max((end - start) / n, 2 * e2e[len(e2e) // 2])
    count = int((end - start) // window_s)
    if count < MIN_JUDGED_WINDOWS:
        return stats.windows(records, sent, done, n_windows=n), False
    return stats.windows(records, sent, done, n_windows=count, span=(start, end)), True


def measure_once(
    run: Callable[[], BenchResult], base_url: str, spec: MeasurementSpec, *, closed_loop: bool,
    ours: Callable[[], list[int]] | None = None,
) -> Measurement:
    """One measurement with host-load sampling, /metrics deltas, windows and the verdict."""
    ours = ours or (lambda: [os.getpid(), *live_pids()])
    with HostLoadSampler(ours) as host_sampler, MetricsPoller(base_url) as poller:
        result = run()
    try:
        host = host_sampler.result()
    except (OSError, RuntimeError, ValueError):
        host = None
    series, judged = _window_series(result, spec.windows)
    reasons = stats.detect_disturbance(
        # Under open-loop (Poisson) load below saturation, throughput follows the arrivals:
        # the windows only say something about the server when it is kept busy.
        [w.output_throughput for w in series] if closed_loop and judged else [],
        result.metrics.get("error_rate", 0.0), host, spec,
    )
    release_itls(result)
    return Measurement(result, series, host, poller.delta(), reasons)


def release_itls(result: BenchResult) -> None:
    """Drop the per-token inter-token latencies of ``result``'s requests once its figures
    (metrics, windows) are computed from them: they are the only part of a run that grows with
    every token, and a trial re-measured ``max_repeats`` times would otherwise hold every
    repeat's. What is kept of a request (TTFT, E2E, counts, times) is enough for all that is
    computed from a measurement later (the latency intervals, the error shown)."""
    for record in (*result.records, *result.completed):
        record.itls = []


def measure_robustly(
    run: Callable[[], BenchResult], base_url: str, spec: MeasurementSpec, *, closed_loop: bool,
    on_repeat: Callable[[int, list[str]], None] = lambda *_: None,
    ours: Callable[[], list[int]] | None = None,
) -> RobustResult:
    """Measure, and re-measure on the same server while disturbed (up to ``max_repeats``)."""
    done: list[Measurement] = []
    for attempt in range(1 + spec.max_repeats):
        if attempt:
            on_repeat(attempt, done[-1].disturbances)
        done.append(measure_once(run, base_url, spec, closed_loop=closed_loop, ours=ours))
        if not done[-1].disturbances:
            break
    return _combine(done, spec)


def _combine(done: list[Measurement], spec: MeasurementSpec) -> RobustResult:
    clean = [m for m in done if not m.disturbances] or done
    # The trial's figures: the median measurement by throughput among the clean ones (with a
    # single clean one, that one); its other metrics come along so they stay consistent.
    values = [m.result.metrics.get(HEADLINE, 0.0) for m in clean]
    middle = statistics.median_low(values)
    chosen = clean[values.index(middle)]
    metrics = dict(chosen.result.metrics)
    metrics.update(chosen.engine)
    if chosen.host is not None:
        metrics["host_foreign_cpu_pct"] = chosen.host.foreign_pct
        metrics["host_steal_pct"] = chosen.host.steal_pct
    throughputs = chosen.window_throughputs
    # Within-run precision only: windows of one run share its server, so these intervals are
    # no forecast for a fresh server (noise_model.NoiseModel.interval is).
    metrics["output_throughput_cv"] = stats.spread(throughputs)
    low, high = stats.confidence_interval(throughputs, spec.confidence)
    metrics["output_throughput_ci_low"], metrics["output_throughput_ci_high"] = low, high
    ok = [r for r in chosen.result.records if r.ok]
    for name, values_ms in (
        ("ttft_p95_ms", [r.ttft * 1000 for r in ok if r.ttft is not None]),
        ("e2e_p95_ms", [r.e2e * 1000 for r in ok if r.e2e is not None]),
    ):
        if len(values_ms) >= 2:
            lo, hi = stats.percentile_ci(values_ms, 95, level=spec.confidence)
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = lo, hi
    metrics["measurement_runs"] = float(len(done))
    metrics["disturbed_runs"] = float(sum(1 for m in done if m.disturbances))
    if len(done) > 1:
        all_values = [m.result.metrics.get(HEADLINE, 0.0) for m in done]
        metrics["output_throughput_robust"] = stats.robust_score(all_values)
    return RobustResult(metrics, done, chosen.result)
