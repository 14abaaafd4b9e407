"""How far to trust a measurement: time windows, spread, intervals, robust scores, disturbance.

A benchmark's headline figures come from all its requests (``metrics.summarize``); this module
says how steady they were. ``windows`` cuts the measured period into equal time windows,
``spread`` and ``confidence_interval`` summarise per-window values, ``bootstrap_ci`` and
``percentile_ci`` bound per-request statistics (how precise one run's figure is),
``pooled_log_spread``, ``predictive_log_interval`` and ``binomial_cdf`` serve the between-server
intervals (``autotune.results.noise_model``), ``robust_score`` condenses repeats so one bad
repeat cannot carry the score, and ``detect_disturbance`` turns all that plus the host's CPU
accounting (``host_load.HostLoadSampler``) into reasons to measure again. Pure functions: no
threads, no /proc.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from autotune.bench.metrics import RequestRecord, percentile
from autotune.space import MeasurementSpec

if TYPE_CHECKING:
    from autotune.bench.host_load import HostLoad

# ---------------------------------------------------------------------------------------------
# Windows


@dataclass(frozen=True)
class Window:
    """One time window of a benchmark. ``start``/``end`` are absolute ``perf_counter`` seconds.

    ``output_tokens`` are the successful requests' tokens generated inside the window (see
    ``windows``); ``completed``/``failed`` count requests that ended inside it, and the latency
    percentiles (NaN when none) are over the successful requests that ended inside it.
    """

    start: float
    end: float
    output_tokens: float
    completed: int
    failed: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    e2e_p50_ms: float
    e2e_p95_ms: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def output_throughput(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def request_throughput(self) -> float:
        return self.completed / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def error_rate(self) -> float:
        ended = self.completed + self.failed
        return self.failed / ended if ended else 0.0

    def to_dict(self) -> dict[str, float]:
        out: dict[str, float] = {k: float(v) for k, v in asdict(self).items()}
        out["duration_s"] = self.duration_s
        out["output_throughput"] = self.output_throughput
        out["request_throughput"] = self.request_throughput
        out["error_rate"] = self.error_rate
        return out


def steady_span(sent_at: Sequence[float], done_at: Sequence[float]) -> tuple[float, float]:
    """The part of a run to judge steadiness on: from the first send to the last send.

    After the last send the in-flight requests run out one by one (the drain), and throughput
    falls for reasons that are not a disturbance. When sending took under a quarter of the run
    (e.g. concurrency ≥ number of requests, where every request is sent at once) there is no
    steady part to speak of, and the whole run, first send to last completion, is returned.
    """
    if not sent_at:
        raise ValueError("no requests")
    first, last_send, last_done = min(sent_at), max(sent_at), max(done_at)
    if last_send - first < 0.25 * (last_done - first):
        return first, last_done
    return first, last_send


def _token_times(record: RequestRecord, sent: float, done: float) -> tuple[list[float], float]:
    """Arrival times of a successful request's streamed chunks, and the tokens per chunk."""
    if record.ttft is None:
        return [done], float(record.output_tokens)
    times = [sent + record.ttft]
    for itl in record.itls:
        times.append(times[-1] + itl)
    return times, record.output_tokens / len(times)


def windows(
    records: Sequence[RequestRecord],
    sent_at: Sequence[float],
    done_at: Sequence[float],
    *,
    n_windows: int | None = None,
    window_s: float | None = None,
    span: tuple[float, float] | None = None,
) -> list[Window]:
    """Cut ``span`` into equal, consecutive windows and measure each.

    Args:
        records: the measured requests, failed ones included.
        sent_at, done_at: each request's absolute send and completion time (``perf_counter``
            seconds), in the order of ``records``.
        n_windows: how many windows; exactly one of ``n_windows`` and ``window_s`` is given.
        window_s: a target window length: the span is cut into ``round(span / window_s)``
            (at least 1) equal windows, so that no short, noisy remainder window is left over.
        span: the period to cut, absolute seconds; default ``steady_span(sent_at, done_at)``.

    Output tokens are attributed to windows by time of generation, not of completion: a
    successful request's chunk times are rebuilt from ``sent + ttft`` and its ``itls``, and its
    ``output_tokens`` are shared equally between its chunks (a chunk may carry several tokens,
    e.g. with speculative decoding). Long requests that span several windows thus count in
    each. Tokens outside the span are not counted. Failed requests' tokens are never counted.
    A time exactly at a boundary belongs to the later window; the span's end to the last one.

    Raises:
        ValueError: lengths differ, not exactly one of ``n_windows``/``window_s``, or an empty
            or non-positive span.
    """
    if not (len(records) == len(sent_at) == len(done_at)):
        raise ValueError("records, sent_at and done_at must have the same length")
    if (n_windows is None) == (window_s is None):
        raise ValueError("give exactly one of n_windows and window_s")
    start, end = span if span is not None else steady_span(sent_at, done_at)
    length = end - start
    if length <= 0:
        raise ValueError(f"empty span {start}..{end}")
    if window_s is not None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        n_windows = max(1, round(length / window_s))
    assert n_windows is not None
    if n_windows < 1:
        raise ValueError("n_windows must be at least 1")
    width = length / n_windows

    def index(t: float) -> int | None:
        if t < start or t > end:
            return None
        return min(int((t - start) / width), n_windows - 1)

    tokens = [0.0] * n_windows
    completed = [0] * n_windows
    failed = [0] * n_windows
    ttfts: list[list[float]] = [[] for _ in range(n_windows)]
    e2es: list[list[float]] = [[] for _ in range(n_windows)]
    for record, sent, done in zip(records, sent_at, done_at, strict=True):
        ended = index(done)
        if not record.ok:
            if ended is not None:
                failed[ended] += 1
            continue
        times, per_chunk = _token_times(record, sent, done)
        for t in times:
            i = index(t)
            if i is not None:
                tokens[i] += per_chunk
        if ended is None:
            continue
        completed[ended] += 1
        if record.ttft is not None:
            ttfts[ended].append(record.ttft * 1000.0)
        if record.e2e is not None:
            e2es[ended].append(record.e2e * 1000.0)
    return [
        Window(
            start=start + i * width,
            end=end if i == n_windows - 1 else start + (i + 1) * width,
            output_tokens=tokens[i],
            completed=completed[i],
            failed=failed[i],
            ttft_p50_ms=percentile(ttfts[i], 50),
            ttft_p95_ms=percentile(ttfts[i], 95),
            e2e_p50_ms=percentile(e2es[i], 50),
            e2e_p95_ms=percentile(e2es[i], 95),
        )
        for i in range(n_windows)
    ]


# ---------------------------------------------------------------------------------------------
# Spread and intervals


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if not math.isnan(v)]


def spread(values: Iterable[float]) -> float:
    """Coefficient of variation: sample standard deviation (n−1) over the mean, NaN ignored.

    0.0 when all values are equal (zeros included); NaN with fewer than two values or a mean
    of zero.
    """
    xs = _finite(values)
    if len(xs) < 2:
        return math.nan
    if max(xs) == min(xs):
        return 0.0
    mean = statistics.fmean(xs)
    if mean == 0:
        return math.nan
    return statistics.stdev(xs) / abs(mean)


def t_critical(level: float, df: int) -> float:
    """Two-sided critical value of Student's t: P(|T| ≤ value) = ``level`` with ``df`` ≥ 1."""
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    if df < 1:
        raise ValueError("df must be at least 1")
    # Imported on first use: scipy.stats takes about a second to import, and most commands
    # never compute an interval.
    from scipy.stats import t as student_t  # type: ignore[import-untyped]

    return float(student_t.ppf(0.5 + level / 2, df))


def confidence_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of ``values`` (e.g. per-window throughputs), NaN ignored.

    Assumes the values are independent draws, roughly normal. ``(nan, nan)`` with fewer than
    two values.
    """
    xs = _finite(values)
    if len(xs) < 2:
        return math.nan, math.nan
    mean = statistics.fmean(xs)
    half = t_critical(level, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return mean - half, mean + half


def _percentile_interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    samples: Sequence[float],
    statistic: Callable[[np.ndarray], float],
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval for ``statistic`` over per-request ``samples``.

    Deterministic for a given ``seed``. ``(nan, nan)`` for no samples. For percentiles prefer
    ``percentile_ci``, which gives the same result vectorised.
    """
    xs = np.asarray(_finite(samples), dtype=float)
    if xs.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for i in range(n_resamples):
        stats[i] = statistic(xs[rng.integers(0, xs.size, xs.size)])
    return _percentile_interval(stats, level)


def percentile_ci(
    samples: Sequence[float],
    q: float,
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """``bootstrap_ci`` of the ``q``-th percentile (``metrics.percentile``'s definition).

    Equal to ``bootstrap_ci(samples, lambda x: np.percentile(x, q), ...)`` with the same seed.
    """
    xs = np.asarray(_finite(samples), dtype=float)
    if xs.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    rows = max(1, 2_000_000 // xs.size)
    for first in range(0, n_resamples, rows):
        count = min(rows, n_resamples - first)
        # Same draws, in the same order, as bootstrap_ci's row-by-row loop.
        idx = np.stack([rng.integers(0, xs.size, xs.size) for _ in range(count)])
        stats[first : first + count] = np.percentile(xs[idx], q, axis=1)
    return _percentile_interval(stats, level)


# ---------------------------------------------------------------------------------------------
# Between independent runs (fresh servers)


def pooled_log_spread(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """Pooled spread of the logarithms within groups: (sum of squares, degrees of freedom).

    Each group holds one configuration's figures from independent runs; a group contributes
    the squared deviations of its logs from their mean and ``len − 1`` degrees of freedom.
    Values that are NaN, infinite or not positive are left out; groups left with fewer than
    two values contribute nothing. ``sum / df`` estimates the variance of ``log(figure)``
    between runs (the relative spread, squared) common to all groups.
    """
    total, df = 0.0, 0
    for group in groups:
        logs = [math.log(v) for v in group if math.isfinite(v) and v > 0]
        if len(logs) < 2:
            continue
        mean = statistics.fmean(logs)
        total += sum((x - mean) ** 2 for x in logs)
        df += len(logs) - 1
    return total, df


def predictive_log_interval(
    center_log: float, sigma: float, df: float, n: int, level: float = 0.95,
) -> tuple[float, float]:
    """Where the next independent run's figure falls, on a log-normal noise model.

    ``center_log``: the mean log of the ``n`` runs made so far; ``sigma``: the estimated
    standard deviation of a run's log figure, on ``df`` degrees of freedom. The next run
    differs from the mean of ``n`` by ``sigma·sqrt(1 + 1/n)``, Student-t with ``df``: the
    interval is ``exp(center ± t·sigma·sqrt(1 + 1/n))``.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    half = t_critical(level, max(1, round(df))) * sigma * math.sqrt(1 + 1 / n)
    return math.exp(center_log - half), math.exp(center_log + half)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p)."""
    if not 0 <= p <= 1:
        raise ValueError("p must be in [0, 1]")
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, min(k, n) + 1))


# ---------------------------------------------------------------------------------------------
# Robust scores over repeats


def median(values: Iterable[float]) -> float:
    """Median of the non-NaN values; NaN when there are none."""
    xs = _finite(values)
    return statistics.median(xs) if xs else math.nan


def mad(values: Iterable[float]) -> float:
    """Median absolute deviation from the median (unscaled); NaN when there are no values."""
    xs = _finite(values)
    if not xs:
        return math.nan
    m = statistics.median(xs)
    return statistics.median(abs(x - m) for x in xs)


def robust_score(values: Iterable[float], k: float = 1.0, *, direction: str = "maximize") -> float:
    """A pessimistic, outlier-proof summary of repeated measurements of one metric.

    ``median − k·MAD`` when higher is better (``direction="maximize"``), ``median + k·MAD``
    when lower is better (``"minimize"``). One wild repeat out of three moves neither the
    median nor the MAD much, and a configuration whose repeats disagree is scored down.
    """
    m, d = median(values), mad(values)
    if direction == "maximize":
        return m - k * d
    if direction == "minimize":
        return m + k * d
    raise ValueError(f"direction must be 'maximize' or 'minimize', not {direction!r}")


# ---------------------------------------------------------------------------------------------
# Disturbance

def detect_disturbance(
    window_throughputs: Sequence[float],
    error_rate: float,
    host_load: HostLoad | None,
    limits: MeasurementSpec | None = None,
) -> list[str]:
    """Why a measurement should not be trusted as it is: human-readable reasons, [] if clean.

    The thresholds are ``limits``' (the space's ``measurement`` section; its defaults when
    None). Flags: per-window throughputs whose coefficient of variation exceeds ``max_cv``, or
    whose slowest window is below ``min_window_ratio`` × the median window (a single slow
    window that the CV of many windows would dilute); an error rate above ``max_error_rate``;
    and, when ``host_load`` is given, foreign CPU use above ``max_foreign_cpu_pct`` on average
    or ``max_foreign_peak_pct`` at its peak, or CPU steal above ``max_steal_pct`` (all as % of
    host capacity). Under an open-loop (Poisson) load below saturation, throughput follows the
    arrivals: pass the windows' throughputs only when the load keeps the server busy.
    """
    limits = limits or MeasurementSpec()
    max_cv, min_window_ratio = limits.max_cv, limits.min_window_ratio
    max_error_rate, max_steal_pct = limits.max_error_rate, limits.max_steal_pct
    max_foreign_cpu_pct, max_foreign_peak_pct = (limits.max_foreign_cpu_pct,
                                                 limits.max_foreign_peak_pct)
    reasons: list[str] = []
    xs = _finite(window_throughputs)
    cv = spread(xs)
    if not math.isnan(cv) and cv > max_cv:
        reasons.append(
            f"throughput varies between windows: CV {cv:.1%} > {max_cv:.0%} "
            f"(windows: {', '.join(f'{x:.0f}' for x in xs)})"
        )
    mid = median(xs)
    if len(xs) >= 2 and mid > 0 and min(xs) < min_window_ratio * mid:
        reasons.append(
            f"slowest window at {min(xs) / mid:.0%} of the median window "
            f"(limit {min_window_ratio:.0%})"
        )
    if error_rate > max_error_rate:
        reasons.append(f"error rate {error_rate:.1%} > {max_error_rate:.1%}")
    if host_load is not None:
        if host_load.foreign_pct > max_foreign_cpu_pct:
            reasons.append(
                f"other processes used {host_load.foreign_pct:.0f}% of host CPU "
                f"({host_load.foreign_cores:.1f} of {host_load.cpus} cores; "
                f"limit {max_foreign_cpu_pct:.0f}%)"
            )
        elif host_load.foreign_peak_pct > max_foreign_peak_pct:
            reasons.append(
                f"other processes used {host_load.foreign_peak_pct:.0f}% of host CPU for a "
                f"while (limit {max_foreign_peak_pct:.0f}%)"
            )
        if host_load.steal_pct > max_steal_pct:
            reasons.append(
                f"CPU steal {host_load.steal_pct:.1f}% > {max_steal_pct:.1f}% "
                "(the hypervisor gave our CPUs to other guests)"
            )
    return reasons
