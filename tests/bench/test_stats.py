from __future__ import annotations

import math

import numpy as np
import pytest

from autotune.bench.host_load import HostLoad
from autotune.bench.metrics import RequestRecord
from autotune.bench.stats import (
    bootstrap_ci,
    confidence_interval,
    detect_disturbance,
    mad,
    median,
    percentile_ci,
    robust_score,
    spread,
    steady_span,
    t_critical,
    windows,
)
from autotune.space.measurement import MeasurementSpec


def _ok(ttft: float, itls: list[float], tokens: int) -> RequestRecord:
    return RequestRecord(
        ok=True, output_tokens=tokens, ttft=ttft, e2e=ttft + sum(itls), itls=list(itls)
    )


# --- windows --------------------------------------------------------------------------------


def _three_requests() -> tuple[list[RequestRecord], list[float], list[float]]:
    a = _ok(0.5, [1.0, 1.0, 1.0], 8)  # chunks at 0.5, 1.5, 2.5, 3.5; 2 tokens each
    b = RequestRecord(ok=True, output_tokens=4, ttft=1.0, e2e=1.2)  # one chunk at 1.0
    c = RequestRecord(ok=False, error="HTTP 500")
    return [a, b, c], [0.0, 0.0, 1.0], [3.5, 1.2, 3.0]


def test_windows_hand_computed() -> None:
    records, sent, done = _three_requests()
    w0, w1 = windows(records, sent, done, n_windows=2, span=(0.0, 4.0))
    assert (w0.start, w0.end, w1.start, w1.end) == (0.0, 2.0, 2.0, 4.0)
    # [0, 2): A's chunks at 0.5 and 1.5 (2 + 2 tokens) and B's single chunk (4 tokens).
    assert w0.output_tokens == 8.0
    assert w0.output_throughput == 4.0
    assert (w0.completed, w0.failed) == (1, 0)
    assert w0.ttft_p50_ms == pytest.approx(1000.0)
    assert w0.e2e_p95_ms == pytest.approx(1200.0)
    # [2, 4]: A's chunks at 2.5 and 3.5; A completes, C fails.
    assert w1.output_tokens == 4.0
    assert w1.output_throughput == 2.0
    assert (w1.completed, w1.failed) == (1, 1)
    assert w1.request_throughput == 0.5
    assert w1.error_rate == 0.5
    assert w1.e2e_p50_ms == pytest.approx(3500.0)
    assert w1.to_dict()["output_throughput"] == 2.0


def test_windows_window_s_rounds_to_equal_windows_and_keeps_every_token() -> None:
    records, sent, done = _three_requests()
    ws = windows(records, sent, done, window_s=1.5, span=(0.0, 4.0))
    # 4 s / 1.5 s = 2.67 → 3 windows of 4/3 s, no short remainder.
    assert len(ws) == 3
    assert all(w.duration_s == pytest.approx(4 / 3) for w in ws)
    assert sum(w.output_tokens for w in ws) == 12.0
    assert [w.output_tokens for w in ws] == [6.0, 4.0, 2.0]  # 0.5,1.0 | 1.5,2.5 | 3.5


def test_windows_boundary_and_out_of_span() -> None:
    rec = _ok(1.0, [1.0, 1.0], 3)  # chunks at 1.0, 2.0, 3.0
    w = windows([rec], [0.0], [3.0], n_windows=2, span=(1.0, 2.5))
    # width 0.75: 1.0 → window 0; 2.0 → window 1; 3.0 is outside the span.
    assert [x.output_tokens for x in w] == [1.0, 1.0]
    assert [x.completed for x in w] == [0, 0]


def test_windows_failed_requests_count_no_tokens() -> None:
    bad = RequestRecord(ok=False, output_tokens=50, ttft=0.1, itls=[0.1], error="truncated")
    (w,) = windows([bad], [0.0], [1.0], n_windows=1, span=(0.0, 1.0))
    assert (w.output_tokens, w.completed, w.failed) == (0.0, 0, 1)
    assert math.isnan(w.ttft_p50_ms)


def test_windows_rejects_bad_arguments() -> None:
    records, sent, done = _three_requests()
    with pytest.raises(ValueError):
        windows(records, sent, done)
    with pytest.raises(ValueError):
        windows(records, sent, done, n_windows=2, window_s=1.0)
    with pytest.raises(ValueError):
        windows(records, sent[:2], done, n_windows=2)
    with pytest.raises(ValueError):
        windows(records, sent, done, n_windows=2, span=(1.0, 1.0))


def test_steady_span_drops_the_drain() -> None:
    # Closed loop: sends keep coming until t=8, the last request ends at 10.
    assert steady_span([0.0, 0.0, 3.0, 8.0], [3.0, 4.0, 8.0, 10.0]) == (0.0, 8.0)
    # Every request sent at once: no steady part, the whole run.
    assert steady_span([0.0, 0.01, 0.02], [5.0, 6.0, 7.0]) == (0.0, 7.0)


# --- spread and intervals -------------------------------------------------------------------


def test_spread_hand_computed() -> None:
    # mean 12, sample stdev sqrt((4 + 0 + 4) / 2) = 2 → CV 1/6.
    assert spread([10.0, 12.0, 14.0]) == pytest.approx(1 / 6)
    assert spread([5.0, 5.0, 5.0]) == 0.0
    assert spread([0.0, 0.0]) == 0.0
    assert math.isnan(spread([5.0]))
    assert spread([10.0, math.nan, 14.0]) == pytest.approx(spread([10.0, 14.0]))


@pytest.mark.parametrize(
    ("level", "df", "expected"),
    [
        (0.95, 1, 12.706205),
        (0.95, 2, 4.302653),
        (0.95, 4, 2.776445),
        (0.95, 9, 2.262157),
        (0.95, 29, 2.045230),
        (0.95, 100, 1.983972),
        (0.99, 5, 4.032143),
        (0.90, 10, 1.812461),
        (0.99, 1, 63.656741),
    ],
)
def test_t_critical_matches_tables(level: float, df: int, expected: float) -> None:
    assert t_critical(level, df) == pytest.approx(expected, abs=2e-6)


def test_confidence_interval_hand_computed() -> None:
    # 12 ± t(0.95, 2) · 2 / sqrt(3) = 12 ± 4.302653 · 1.154701 = 12 ± 4.968275.
    low, high = confidence_interval([10.0, 12.0, 14.0])
    assert low == pytest.approx(12 - 4.968275, abs=1e-5)
    assert high == pytest.approx(12 + 4.968275, abs=1e-5)
    assert all(math.isnan(x) for x in confidence_interval([3.0]))


def test_bootstrap_is_deterministic_and_sensible() -> None:
    data = list(np.random.default_rng(1).lognormal(size=400))
    p95 = float(np.percentile(data, 95))
    first = bootstrap_ci(data, lambda x: float(np.percentile(x, 95)), seed=7, n_resamples=500)
    again = bootstrap_ci(data, lambda x: float(np.percentile(x, 95)), seed=7, n_resamples=500)
    other = bootstrap_ci(data, lambda x: float(np.percentile(x, 95)), seed=8, n_resamples=500)
    assert first == again
    assert first != other
    assert first[0] < p95 < first[1]
    assert percentile_ci(data, 95, seed=7, n_resamples=500) == pytest.approx(first)
    narrow = percentile_ci(data, 95, seed=7, n_resamples=500, level=0.5)
    assert first[0] < narrow[0] < narrow[1] < first[1]
    assert bootstrap_ci([3.0], np.mean) == (3.0, 3.0)
    assert all(math.isnan(x) for x in percentile_ci([], 50))


# --- robust score ---------------------------------------------------------------------------


def test_robust_score_hand_computed() -> None:
    # The three runs of one config: median 6672, |deviations| 0, 68, 3636 → MAD 68.
    runs = [6672.0, 6740.0, 3036.0]
    assert median(runs) == 6672.0
    assert mad(runs) == 68.0
    assert robust_score(runs) == 6604.0
    assert robust_score(runs, k=2.0) == 6536.0
    assert robust_score([100.0, 102.0, 45.0], direction="minimize") == 102.0
    assert robust_score([100.0, 102.0, 45.0], k=0.5, direction="minimize") == 101.0
    assert math.isnan(robust_score([]))
    with pytest.raises(ValueError):
        robust_score(runs, direction="up")


# --- disturbance ----------------------------------------------------------------------------

# Tighter window limits than a space's defaults: what these tests were written for.
TIGHT = MeasurementSpec(max_cv=0.15, min_window_ratio=0.6)


def test_the_default_limits_are_the_space_files() -> None:
    """One home for the thresholds: the check's defaults are the measurement section's."""
    spec = MeasurementSpec()
    wobbly = [1000.0, 780.0, 1000.0, 1000.0, 1000.0]  # CV 9%, slowest at 78%
    assert detect_disturbance(wobbly, 0.0, None) == detect_disturbance(wobbly, 0.0, None, spec)
    one_slow = [1000.0, 1000.0, 1000.0, 1000.0, 560.0]  # CV 22%, slowest at 56%
    assert detect_disturbance(one_slow, 0.0, None) == []
    assert len(detect_disturbance(one_slow, 0.0, None, TIGHT)) == 2
    assert detect_disturbance([*one_slow[:4], 450.0], 0.0, None) != []


def _clean(n: int, seed: int) -> list[float]:
    return list(1000.0 * np.random.default_rng(seed).uniform(0.97, 1.03, size=n))


@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_clean_series_is_not_flagged(n: int) -> None:
    for seed in range(20):
        assert detect_disturbance(_clean(n, seed), 0.0, None, TIGHT) == []


@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_one_window_at_45_percent_is_flagged(n: int) -> None:
    series = _clean(n, 0)
    series[n // 2] = 0.45 * 1000.0
    reasons = detect_disturbance(series, 0.0, None, TIGHT)
    assert any("slowest window at" in r for r in reasons)
    if n <= 10:
        assert any("CV" in r for r in reasons)


def _closed_loop_run(
    slow_from: float, slow_to: float, speed: float
) -> tuple[list[RequestRecord], list[float], list[float]]:
    """4 streams of 20-token requests for 10 s, at ``speed`` × normal in [slow_from, slow_to)."""
    records, sent_at, done_at = [], [], []
    for slot in range(4):
        t = slot * 0.013
        while t < 10.0:
            sent, times = t, []
            for _ in range(20):
                t += (0.1 if not times else 0.05) / (speed if slow_from <= t < slow_to else 1.0)
                times.append(t)
            itls = [b - a for a, b in zip(times, times[1:], strict=False)]
            records.append(_ok(times[0] - sent, itls, 20))
            sent_at.append(sent)
            done_at.append(t)
    return records, sent_at, done_at


def test_windows_of_a_run_slowed_in_the_middle_are_flagged() -> None:
    steady = [w.output_throughput for w in windows(*_closed_loop_run(0, 0, 1.0), n_windows=5)]
    assert spread(steady) < 0.05
    assert detect_disturbance(steady, 0.0, None, TIGHT) == []
    slowed = [w.output_throughput for w in windows(*_closed_loop_run(4, 6, 0.45), n_windows=5)]
    assert min(slowed) / median(slowed) == pytest.approx(0.45, abs=0.1)
    assert len(detect_disturbance(slowed, 0.0, None, TIGHT)) == 2


def _load(foreign: float = 0.0, peak: float | None = None, steal: float = 0.0) -> HostLoad:
    return HostLoad(
        duration_s=10.0,
        cpus=2,
        busy_pct=60.0,
        ours_pct=60.0 - foreign,
        foreign_pct=foreign,
        foreign_peak_pct=foreign if peak is None else peak,
        steal_pct=steal,
        samples=21,
    )


def test_errors_and_host_load_are_flagged() -> None:
    clean = _clean(5, 3)
    assert detect_disturbance(clean, 0.01, _load(foreign=2.0, peak=8.0, steal=1.0)) == []
    assert any("error rate" in r for r in detect_disturbance(clean, 0.03, None))
    (reason,) = detect_disturbance(clean, 0.0, _load(foreign=30.0))
    assert "30% of host CPU" in reason and "0.6 of 2 cores" in reason
    (reason,) = detect_disturbance(clean, 0.0, _load(foreign=4.0, peak=40.0))
    assert "for a while" in reason
    (reason,) = detect_disturbance(clean, 0.0, _load(steal=9.0))
    assert "steal" in reason
    relaxed = MeasurementSpec(max_foreign_cpu_pct=50.0, max_foreign_peak_pct=50.0)
    assert detect_disturbance(clean, 0.0, _load(foreign=30.0), relaxed) == []
    loose = MeasurementSpec(max_cv=1.0, min_window_ratio=0.4)
    assert detect_disturbance([1000.0, 500.0], 0.0, None, loose) == []
