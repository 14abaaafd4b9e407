"""The one rule of bounds (autotune.metrics.bound_mark, gain_mark): which figures a capacity the
ladder could not bracket turns into bounds, and which way."""

from __future__ import annotations

import math

import pytest

from autotune.metrics import CATALOGUE, LOWER_BOUND_FLAG, bound_mark, gain_mark, markdown_table

AT_CAPACITY = {"capacity_rps": "≥", "throughput_per_device_at_capacity": "≥",
               "interactivity_at_capacity": "≤", "cost_per_1m_at_capacity": "≤"}


def figures(flag: float | None) -> dict[str, float]:
    out = {name: 10.0 for name in AT_CAPACITY} | {"output_throughput": 5.0,
                                                  "capacity_request_rate": 10.0}
    return out if flag is None else out | {LOWER_BOUND_FLAG: flag}


def test_a_lower_bound_capacity_marks_the_figures_taken_at_it() -> None:
    bound = figures(1.0)
    assert {name: bound_mark(name, bound) for name in AT_CAPACITY} == AT_CAPACITY
    assert bound_mark("capacity_request_rate", bound) == "≥"  # an old name reads as the new
    # The main load's figures, the flag itself and names not catalogued stay exact.
    for name in ("output_throughput", LOWER_BOUND_FLAG, "ttft_p95_ms", "no_such_metric"):
        assert bound_mark(name, bound) == ""
    assert {m.name for m in CATALOGUE if m.bound} == set(AT_CAPACITY)


@pytest.mark.parametrize("flag", [0.0, None, math.nan, -1.0])
def test_a_bracketed_capacity_marks_nothing(flag: float | None) -> None:
    assert all(bound_mark(name, figures(flag)) == "" for name in AT_CAPACITY)


def test_a_gain_is_bounded_the_way_the_bound_moves_it() -> None:
    bound, exact = figures(1.0), figures(0.0)
    # The trial a bound: higher capacity / lower cost could only raise its gain (≥), lower
    # per-user tok/s only lower it (≤); the defaults a bound: the other way round.
    assert {m: gain_mark(m, bound, exact) for m in AT_CAPACITY} == {
        "capacity_rps": "≥", "throughput_per_device_at_capacity": "≥",
        "interactivity_at_capacity": "≤", "cost_per_1m_at_capacity": "≥"}
    assert {m: gain_mark(m, exact, bound) for m in AT_CAPACITY} == {
        "capacity_rps": "≤", "throughput_per_device_at_capacity": "≤",
        "interactivity_at_capacity": "≥", "cost_per_1m_at_capacity": "≤"}
    # Both bounds: their ratio bounds nothing. Neither: exact.
    assert {gain_mark(m, bound, bound) for m in AT_CAPACITY} == {"?"}
    assert {gain_mark(m, exact, exact) for m in AT_CAPACITY} == {""}
    assert gain_mark("output_throughput", bound, exact) == ""


def test_the_rule_is_in_the_generated_docs() -> None:
    text = markdown_table()
    assert f"`{LOWER_BOUND_FLAG}` 1" in text
    assert "**≥** (the true figure is at least this) for `capacity_rps`, " \
           "`throughput_per_device_at_capacity`" in text
    assert "for `interactivity_at_capacity`, `cost_per_1m_at_capacity`" in text
