"""Capacity at SLO by rate bisection (the ``capacity:`` section); the ladder's interpolation,
the module's other strategy, is tested with the ladder (tests/bench/test_ladder.py)."""

from __future__ import annotations

import pytest

from autotune.bench.capacity import find_capacity
from autotune.metrics import CAPACITY_METRIC
from autotune.space.capacity import CapacitySpec, bracket_rates


def _server(true_capacity: float):
    def measure(rate: float) -> dict[str, float]:
        e2e = 500 if rate <= true_capacity else 9e3
        return {"output_throughput": rate * 32, "e2e_p95_ms": e2e}

    return measure


def _holds(metrics) -> bool:
    return metrics["e2e_p95_ms"] <= 4000


@pytest.mark.parametrize("truth", [0.3, 1.0, 3.7, 13.7, 100.0])
def test_bisection_lands_within_its_resolution(truth: float) -> None:
    spec = CapacitySpec(start_rate=1.0, max_rate=64.0, bisection_steps=4)
    result = find_capacity(_server(truth), _holds, spec)
    expected = min(truth, 64.0)
    assert result.rate <= expected
    assert expected - result.rate <= result.resolution + 1e-9
    assert result.output_throughput == pytest.approx(result.rate * 32)
    # bracketing doubles: 1, 2, 4, 8, 16 for 13.7 → then 4 bisection steps
    if truth == 13.7:
        assert [p.rate for p in result.points] == [1, 2, 4, 8, 16, 12, 14, 13, 13.5]
        assert result.rate == 13.5 and result.resolution == 0.5


def test_capped_at_max_rate() -> None:
    result = find_capacity(_server(1000), _holds, CapacitySpec(start_rate=8, max_rate=20))
    assert result.rate == 20 and result.resolution == 0
    assert [p.rate for p in result.points] == [8, 16, 20]


def test_even_the_first_rate_misses() -> None:
    result = find_capacity(_server(0.1), _holds, CapacitySpec(start_rate=1, bisection_steps=2))
    assert [p.rate for p in result.points] == [1, 0.5, 0.25]
    assert result.rate == 0.0 and result.output_throughput == 0.0
    assert result.resolution == 0.25


def test_the_bisection_reports_capacity_at_slo_under_the_one_name() -> None:
    result = find_capacity(_server(13.7), _holds, CapacitySpec(start_rate=1, max_rate=64))
    metrics = result.as_metrics()
    assert CAPACITY_METRIC == "capacity_rps" and metrics[CAPACITY_METRIC] == result.rate
    assert set(metrics) == {"capacity_rps", "capacity_output_throughput",
                            "capacity_resolution_rps", "capacity_load_points"}


def test_bracketing_rates_double_up_to_the_maximum() -> None:
    assert bracket_rates(1, 10) == [1, 2, 4, 8, 10]
    assert bracket_rates(2, 128) == [2, 4, 8, 16, 32, 64, 128]
    assert bracket_rates(0.5, 4.5, factor=3) == [0.5, 1.5, 4.5]
