"""How far to trust a measurement: time windows, spread, intervals, robust scores, disturbance.

A benchmark's headline figures come from all its requests (``metrics.summarize``); this module
says how steady they were. ``windows`` cuts the measured period into equal time windows,
``spread`` and ``confidence_interval`` summarise per-window values, ``bootstrap_ci`` and
``percentile_ci`` bound per-request statistics, ``robust_score`` condenses repeats so one bad
repeat cannot carry the score, and ``detect_disturbance`` turns all that plus the host's CPU
accounting (``HostLoadSampler``) into reasons to measure again.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from autotune.bench.metrics import RequestRecord, percentile

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


def _abs_t_cdf(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):
                term *= c2 * (k - 1) / k
                total += term
        return 2.0 / math.pi * (theta + s * total)
    total, term = 1.0, 1.0
    for k in range(2, df - 1, 2):
        term *= c2 * (k - 1) / k
        total += term
    return s * total


def t_critical(level: float, df: int) -> float:
    """Two-sided critical value of Student's t: P(|T| ≤ value) = ``level`` with ``df`` ≥ 1."""
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    if df < 1:
        raise ValueError("df must be at least 1")
    if df > 1000:  # within 0.15% of t there, and the series below grows with df
        return statistics.NormalDist().inv_cdf(0.5 + level / 2)
    lo, hi = 0.0, 1.0
    while _abs_t_cdf(hi, df) < level:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _abs_t_cdf(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


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
# Host load


@dataclass(frozen=True)
class HostLoad:
    """CPU accounting of the host over a sampled period. Percentages are of host capacity.

    Capacity is every CPU's time over the period (``cpus`` × duration). ``busy_pct`` is the
    time CPUs ran anything (steal excluded), ``ours_pct`` the part run by our processes,
    ``foreign_pct`` the rest (busy − ours, never below 0), ``foreign_peak_pct`` the highest
    foreign share over any stretch of consecutive samples at least ``peak_window_s`` long, and
    ``steal_pct`` the time the hypervisor gave our virtual CPUs to someone else.
    """

    duration_s: float
    cpus: int
    busy_pct: float
    ours_pct: float
    foreign_pct: float
    foreign_peak_pct: float
    steal_pct: float
    samples: int

    @property
    def foreign_cores(self) -> float:
        """Foreign CPU use in cores (``foreign_pct`` of ``cpus``)."""
        return self.foreign_pct / 100.0 * self.cpus

    @property
    def foreign_share_of_busy_pct(self) -> float:
        """Foreign CPU time as a share of all busy time (NaN when the host was idle)."""
        return 100.0 * self.foreign_pct / self.busy_pct if self.busy_pct > 0 else math.nan

    def to_dict(self) -> dict[str, float]:
        out: dict[str, float] = {k: float(v) for k, v in asdict(self).items()}
        out["foreign_cores"] = self.foreign_cores
        out["foreign_share_of_busy_pct"] = self.foreign_share_of_busy_pct
        return out


@dataclass
class _Sample:
    at: float
    cpu: tuple[int, int, int]  # total, busy, steal jiffies, all CPUs
    uptime_ticks: float
    ours: dict[int, tuple[int, int]]  # pid -> (utime + stime, starttime), in ticks


@dataclass(frozen=True)
class _Interval:
    seconds: float
    total: int
    busy: int
    steal: int
    ours: int


class HostLoadSampler:
    """Samples host CPU (``/proc/stat``) and our processes' CPU (``/proc/PID/stat``) in a thread.

    Use as a context manager around a measurement, then read ``result()``::

        with HostLoadSampler(lambda: [os.getpid(), engine_pid]) as sampler:
            run_benchmark()
        load = sampler.result()

    ``ours`` is called at every sample, so processes that start later are picked up; with
    ``include_descendants`` every descendant of the pids it returns is ours too. Limits of
    the accounting: a process of ours that exits between two samples loses its CPU time of that
    interval (it shows as foreign), and in a container ``/proc/stat`` describes the host.
    Linux only: ``/proc`` must exist.
    """

    def __init__(
        self,
        ours: Callable[[], Iterable[int]],
        *,
        interval_s: float = 0.5,
        include_descendants: bool = True,
        peak_window_s: float = 2.0,
        proc: str | os.PathLike[str] = "/proc",
    ) -> None:
        self._ours = ours
        self._interval_s = interval_s
        self._include_descendants = include_descendants
        self._peak_window_s = peak_window_s
        self._proc = Path(proc)
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._cpus = 1
        self._samples: list[_Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def __enter__(self) -> HostLoadSampler:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("HostLoadSampler already started")
        self._record()
        self._thread = threading.Thread(target=self._loop, name="host-load", daemon=True)
        self._thread.start()

    def stop(self) -> HostLoad:
        """Take a last sample, stop the thread and return ``result()``.

        Raises:
            Exception: whatever ``ours`` (or reading ``/proc``) raised in the sampling thread.
        """
        if self._thread is not None and not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            if self._error is not None:
                raise self._error
            self._record()
        return self.result()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self._interval_s):
                self._record()
        except Exception as exc:  # handed to the caller by stop()
            self._error = exc

    def _read_cpu(self) -> tuple[int, int, int]:
        with open(self._proc / "stat") as f:
            lines = f.read().splitlines()
        self._cpus = max(1, sum(1 for line in lines if line[:3] == "cpu" and line[3:4].isdigit()))
        fields = [int(x) for x in lines[0].split()[1:]]
        fields += [0] * (8 - len(fields))
        user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
        busy = user + nice + system + irq + softirq
        return busy + idle + iowait + steal, busy, steal

    def _read_uptime_ticks(self) -> float:
        with open(self._proc / "uptime") as f:
            return float(f.read().split()[0]) * self._ticks

    def _stat(self, pid: int) -> tuple[int, int, int] | None:
        """(ppid, utime + stime, starttime) of ``pid``, or None if it is gone."""
        try:
            with open(self._proc / str(pid) / "stat") as f:
                text = f.read()
        except OSError:
            return None
        fields = text[text.rfind(")") + 2 :].split()
        return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])

    def _our_stats(self) -> dict[int, tuple[int, int]]:
        roots = {int(p) for p in self._ours()}
        if not self._include_descendants:
            stats = {pid: self._stat(pid) for pid in roots}
            return {pid: (s[1], s[2]) for pid, s in stats.items() if s is not None}
        everything: dict[int, tuple[int, int, int]] = {}
        for entry in os.scandir(self._proc):
            if entry.name.isdigit():
                s = self._stat(int(entry.name))
                if s is not None:
                    everything[int(entry.name)] = s
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in everything.items():
            children.setdefault(ppid, []).append(pid)
        ours: set[int] = set()
        todo = [pid for pid in roots if pid in everything]
        while todo:
            pid = todo.pop()
            if pid not in ours:
                ours.add(pid)
                todo.extend(children.get(pid, ()))
        return {pid: (everything[pid][1], everything[pid][2]) for pid in ours}

    def _record(self) -> None:
        uptime = self._read_uptime_ticks()
        cpu = self._read_cpu()
        ours = self._our_stats()
        with self._lock:
            self._samples.append(_Sample(time.monotonic(), cpu, uptime, ours))

    def _intervals(self, samples: Sequence[_Sample]) -> list[_Interval]:
        out = []
        for prev, cur in zip(samples, samples[1:], strict=False):
            ours = 0
            for pid, (ticks, started) in cur.ours.items():
                if pid in prev.ours and prev.ours[pid][1] == started:
                    ours += max(0, ticks - prev.ours[pid][0])
                elif started >= prev.uptime_ticks:
                    ours += ticks  # born during the interval: all its CPU time is in it
            out.append(
                _Interval(
                    seconds=cur.at - prev.at,
                    total=cur.cpu[0] - prev.cpu[0],
                    busy=cur.cpu[1] - prev.cpu[1],
                    steal=cur.cpu[2] - prev.cpu[2],
                    ours=ours,
                )
            )
        return out

    def result(self) -> HostLoad:
        """The load over everything sampled so far (zeros before the second sample)."""
        with self._lock:
            samples = list(self._samples)
        intervals = self._intervals(samples)

        def pct(part: float, whole: float) -> float:
            return 100.0 * part / whole if whole > 0 else 0.0

        def foreign(chunk: Sequence[_Interval]) -> float:
            busy = sum(i.busy for i in chunk)
            ours = min(busy, sum(i.ours for i in chunk))
            return pct(busy - ours, sum(i.total for i in chunk))

        total = sum(i.total for i in intervals)
        busy = sum(i.busy for i in intervals)
        ours = min(busy, sum(i.ours for i in intervals))
        peak = foreign(intervals)
        for first in range(len(intervals)):
            seconds = 0.0
            for last in range(first, len(intervals)):
                seconds += intervals[last].seconds
                if seconds >= self._peak_window_s:
                    peak = max(peak, foreign(intervals[first : last + 1]))
                    break
        return HostLoad(
            duration_s=sum(i.seconds for i in intervals),
            cpus=self._cpus,
            busy_pct=pct(busy, total),
            ours_pct=pct(ours, total),
            foreign_pct=pct(busy - ours, total),
            foreign_peak_pct=peak,
            steal_pct=pct(sum(i.steal for i in intervals), total),
            samples=len(samples),
        )


# ---------------------------------------------------------------------------------------------
# Disturbance

MAX_CV = 0.15
MIN_WINDOW_RATIO = 0.6
MAX_ERROR_RATE = 0.01
MAX_FOREIGN_CPU_PCT = 10.0
MAX_FOREIGN_PEAK_PCT = 25.0
MAX_STEAL_PCT = 5.0


def detect_disturbance(
    window_throughputs: Sequence[float],
    error_rate: float,
    host_load: HostLoad | None,
    *,
    max_cv: float = MAX_CV,
    min_window_ratio: float = MIN_WINDOW_RATIO,
    max_error_rate: float = MAX_ERROR_RATE,
    max_foreign_cpu_pct: float = MAX_FOREIGN_CPU_PCT,
    max_foreign_peak_pct: float = MAX_FOREIGN_PEAK_PCT,
    max_steal_pct: float = MAX_STEAL_PCT,
) -> list[str]:
    """Why a measurement should not be trusted as it is: human-readable reasons, [] if clean.

    Flags: per-window throughputs whose coefficient of variation exceeds ``max_cv``, or whose
    slowest window is below ``min_window_ratio`` × the median window (a single slow window
    that the CV of many windows would dilute); an error rate above ``max_error_rate``; and,
    when ``host_load`` is given, foreign CPU use above ``max_foreign_cpu_pct`` on average or
    ``max_foreign_peak_pct`` at its peak, or CPU steal above ``max_steal_pct`` (all as % of
    host capacity). Under an open-loop (Poisson) load below saturation, throughput follows the
    arrivals: pass the windows' throughputs only when the load keeps the server busy.
    """
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
