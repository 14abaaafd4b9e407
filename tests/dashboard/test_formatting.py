"""The dashboard's one number formatter, metric units and groups."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

from autotune.bench.engine_metrics import EngineMetricsDelta
from autotune.dashboard.formatting import (
    format_metric,
    format_value,
    grouped,
    metric_group,
    metric_unit,
)
from autotune.metrics import GROUPS, known_metric_names, of_kind
from autotune.store.synthetic import RICH_METRICS


@pytest.mark.parametrize(("value", "unit", "text"), [
    (2_097_152, "B", "2.10 MB"),
    (999, "B", "999 B"),
    (2_097_152.0, "tokens", "2,097,152 tokens"),
    (12.34, "ms", "12.3 ms"),
    (0.512, "ms", "0.512 ms"),
    (1651.25, "ms", "1,651 ms"),
    (1159.3, "tok/s", "1,159 tok/s"),
    (946.78, "tok/s", "947 tok/s"),
    (14.79, "req/s", "14.8 req/s"),
    (0.9, "%", "0.9%"),
    (87.25, "%", "87.2%"),
    (100.0, "%", "100%"),
    (0.04, "%", "0.04%"),
    (0.009, "fraction", "0.9%"),
    (0.9375, "fraction", "93.8%"),
    (0.0, "fraction", "0.0%"),
    (-0.0125, "pt", "-1.2 pt"),
    (0.02, "pt", "+2.0 pt"),
    (3120.5, "MiB", "3.05 GiB"),
    (512.0, "MiB", "512 MiB"),
    (14.96, "GiB", "15.0 GiB"),
    (0.587, "$", "$0.587"),
    (6.489, "s", "6.49 s"),
    (96.0, "requests", "96 requests"),
    (3.0, "", "3"),
    (2_097_152.5, "", "2,097,152"),
    (2.87, "", "2.87"),
    (0.00731, "", "0.00731"),
    (3e-6, "", "3.00e-06"),
    (-12.34, "ms", "-12.3 ms"),
    (0, "ms", "0 ms"),
])
def test_format_value(value, unit, text):
    assert format_value(value, unit) == text


@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf])
def test_no_value_is_a_dash(value):
    assert format_value(value, "ms") == "—"


def test_booleans_and_text_pass_through():
    assert format_value(True) == "true" and format_value("int8") == "int8"


@pytest.mark.parametrize(("name", "unit", "group"), [
    ("ttft_p95_ms", "ms", "latency"),
    ("e2e_p95_ms_ci_high", "ms", "latency"),
    ("output_throughput", "tok/s", "throughput"),
    ("request_goodput", "req/s", "throughput"),
    ("goodput_fraction", "fraction", "throughput"),
    ("duration_s", "s", "throughput"),
    ("total_output_tokens", "tokens", "throughput"),
    ("queue_time_mean_ms", "ms", "engine"),
    ("kv_cache_usage_peak_pct", "%", "engine"),
    ("kv_cache_tokens", "tokens", "engine"),
    ("model_weights_gib_estimated", "GiB", "engine"),
    ("preemptions", "", "engine"),
    ("gpu_mem_peak_mib", "MiB", "resources"),
    ("cpu_util_mean_pct", "%", "resources"),
    ("host_steal_pct", "%", "resources"),
    ("quality_accuracy", "fraction", "quality"),
    ("quality_logprob_drift", "", "quality"),
    ("quality_s", "s", "quality"),
    ("cost_per_1m_output_tokens_usd", "$", "cost"),
    ("some_plugin_gauge", "", "other"),
])
def test_units_and_groups(name, unit, group):
    assert (metric_unit(name), metric_group(name)) == (unit, group)


def test_every_known_metric_has_a_group_other_than_other():
    assert [m for m in known_metric_names() if metric_group(m) == "other"] == []


def test_the_catalogue_lists_every_engine_metric_in_order():
    assert [m.name for m in of_kind("engine")] == [f.name for f in fields(EngineMetricsDelta)]


def test_an_old_name_shows_as_the_metric_it_became():
    assert (metric_unit("capacity_request_rate"), metric_group("capacity_request_rate")) == (
        "req/s", "capacity")
    assert format_metric("capacity_request_rate", 12.34) == format_metric("capacity_rps", 12.34)


def test_grouped_orders_groups_and_names():
    metrics = {"zeta_gauge": 1.0, "alpha_gauge": 2.0, **RICH_METRICS,
               "output_throughput": 1159.3, "e2e_p95_ms": 2400.5, "error_rate": 0.0}
    groups = grouped(metrics, skip=frozenset({"e2e_p95_ms"}))
    names = [g for g, _ in groups]
    assert names == [g for g in GROUPS if g in names] and names[-1] == "other"
    rows = dict(groups)
    assert [n for n, _, _ in rows["other"]] == ["alpha_gauge", "some_plugin_gauge", "zeta_gauge"]
    throughput = [n for n, _, _ in rows["throughput"]]
    assert throughput.index("output_throughput") < throughput.index("error_rate")
    assert all(n != "e2e_p95_ms" for _, cells in groups for n, _, _ in cells)
    shown = {n: (text, exact) for _, cells in groups for n, text, exact in cells}
    assert shown["kv_cache_tokens"] == ("2,097,152 tokens", "2.09715e+06")
    assert shown["output_throughput"] == ("1,159 tok/s", "1159.3")
    assert format_metric("prefix_cache_hit_rate", 0.009) == "0.9%"
