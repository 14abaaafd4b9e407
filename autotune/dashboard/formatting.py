"""How the dashboard's pages show a metric: its group, its unit and a readable number.

``format_value`` is the one number formatter of the server-rendered pages (trial, compare):
three significant digits, thousands separators from 1,000 up, the unit after the number
(``12.3 ms``, ``1,159 tok/s``, ``0.9%``, ``2.10 MB``, ``2,097,152 tokens``). ``metric_unit`` and
``metric_group`` know autotune's metric names (``autotune.bench.metrics`` and the modules that add
to them); any other name is a plain number in the group "other".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from autotune.bench.engine_metrics import EngineMetricsDelta
from autotune.bench.metrics import (
    CONVERSATION_COUNTS,
    CONVERSATION_METRICS,
    COUNT_METRICS,
    LATENCIES,
    LATENCY_METRIC,
    RESOURCE_METRICS,
    STATS,
    THROUGHPUT_METRICS,
)
from autotune.scoring import COST_METRIC
from autotune.space.ladder import LADDER_METRICS
from autotune.space.quality import QUALITY_INFO_METRICS, QUALITY_METRICS

GROUPS = ("latency", "throughput", "capacity", "engine", "resources", "quality", "cost", "other")

# Known names per group, in the order a group lists them; unknown names follow, sorted.
_ORDER: dict[str, tuple[str, ...]] = {
    "latency": tuple(f"{lat}_{stat}_ms{ci}" for lat in LATENCIES for stat in STATS
                     for ci in ("", "_ci_low", "_ci_high"))
    + tuple(m for m in CONVERSATION_METRICS if m not in CONVERSATION_COUNTS),
    "throughput": (
        *THROUGHPUT_METRICS, "output_throughput_robust", "output_throughput_ci_low",
        "output_throughput_ci_high", "output_throughput_cv", *COUNT_METRICS,
        *CONVERSATION_COUNTS, "measurement_runs", "disturbed_runs",
    ),
    # The load ladder's curve (bench/ladder_spec.LADDER_METRICS): how much load holds the SLOs,
    # what it gives per device and per user, its price, then how the ladder ran.
    "capacity": (
        "capacity_rps", "capacity_is_lower_bound", "throughput_per_device_at_capacity",
        "interactivity_at_capacity", "cost_per_1m_at_capacity", "ladder_levels_run",
        "ladder_stopped_early",
        # the SLO capacity search (bench.capacity), when the space asks for it
        "capacity_request_rate", "capacity_output_throughput", "capacity_resolution_rps",
        "capacity_load_points",
    ),
    "engine": (
        *(f.name for f in fields(EngineMetricsDelta)), "kv_cache_tokens",
        "kv_cache_tokens_estimated", "memory_fit_kv_error", "model_weights_gib",
        "model_weights_gib_estimated",
    ),
    "resources": (
        *(m for m in RESOURCE_METRICS
          if m != COST_METRIC and not m.startswith("capacity_") and m not in LADDER_METRICS),
        "host_foreign_cpu_pct", "host_steal_pct",
    ),
    "quality": (*QUALITY_METRICS, *QUALITY_INFO_METRICS),
    "cost": (COST_METRIC,),
}
_GROUP_OF = {name: group for group, names in _ORDER.items() for name in names}
_RANK = {name: i for names in _ORDER.values() for i, name in enumerate(names)}

# Shares (0..1) shown as percentages.
_FRACTIONS = frozenset({
    "goodput_fraction", "error_rate", "output_throughput_cv", "prefix_cache_hit_rate",
    "spec_decode_acceptance_rate", "memory_fit_kv_error", "quality_accuracy",
    "quality_seq_match", "quality_top1_agreement",
})
_UNITS = {
    "output_throughput": "tok/s", "total_token_throughput": "tok/s",
    "capacity_output_throughput": "tok/s", "output_throughput_robust": "tok/s",
    "output_throughput_ci_low": "tok/s", "output_throughput_ci_high": "tok/s",
    "request_throughput": "req/s", "request_goodput": "req/s", "capacity_request_rate": "req/s",
    "completed": "requests", "failed": "requests", "requests_waiting_peak": "requests",
    "requests_running_peak": "requests", "quality_prompts": "prompts",
    "quality_labelled": "prompts", "total_input_tokens": "tokens",
    "total_output_tokens": "tokens", "kv_cache_tokens": "tokens",
    "capacity_rps": "req/s", "capacity_resolution_rps": "req/s",
    "throughput_per_device_at_capacity": "tok/s",
    "interactivity_at_capacity": "tok/s", "cost_per_1m_at_capacity": "$",
    "kv_cache_tokens_estimated": "tokens", "quality_accuracy_delta": "pt",
}
# By the end of a name, longest first.
_SUFFIX_UNITS = (("_ms_ci_low", "ms"), ("_ms_ci_high", "ms"), ("_usd", "$"), ("_pct", "%"),
                 ("_mib", "MiB"), ("_gib", "GiB"), ("_bytes", "B"), ("_ms", "ms"), ("_s", "s"))
_SI = ("B", "kB", "MB", "GB", "TB", "PB")


def metric_group(name: str) -> str:
    """One of ``GROUPS``."""
    if name in _GROUP_OF:
        return _GROUP_OF[name]
    if LATENCY_METRIC.match(name.removesuffix("_ci_low").removesuffix("_ci_high")):
        return "latency"
    if name.startswith("quality_"):
        return "quality"
    if name.endswith("_usd"):
        return "cost"
    return "other"


def metric_unit(name: str) -> str:
    """The unit ``format_value`` takes for ``name``: ms, s, tok/s, req/s, % (a percentage),
    fraction (a share, shown as %), pt (percentage points from a share), tokens, requests,
    prompts, B, MiB, GiB, $, or "" (a plain number)."""
    if name in _UNITS:
        return _UNITS[name]
    if name in _FRACTIONS:
        return "fraction"
    name = name.removesuffix("_estimated")
    return next((unit for suffix, unit in _SUFFIX_UNITS if name.endswith(suffix)), "")


def _sig(value: float, digits: int = 3) -> str:
    """``digits`` significant digits without an exponent; from 1,000 up, a separated integer."""
    if value == 0:
        return "0"
    size = abs(value)
    if size >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    if size < 1e-4:
        return f"{value:.{digits - 1}e}"
    decimals = digits - 1 - math.floor(math.log10(size))
    return f"{value:.{decimals}f}"


def _count(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else _sig(value)


def _percent(value: float) -> str:
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size == 0 or size >= 0.1:
        return f"{value:.1f}"
    return f"{value:.2g}"


def _bytes(value: float, base: int, units: tuple[str, ...]) -> str:
    step = 0
    while abs(value) >= base and step < len(units) - 1:
        value /= base
        step += 1
    return f"{_sig(value)} {units[step]}"


def format_value(value: Any, unit: str = "") -> str:
    """``value`` for a reader, in ``unit`` (see ``metric_unit``); "—" when there is none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, int | float):
        return "—" if value is None else str(value)
    value = float(value)
    if not math.isfinite(value):
        return "—"
    if unit in ("tokens", "requests", "prompts"):
        return f"{_count(value)} {unit}"
    if unit == "fraction":
        return f"{_percent(value * 100)}%"
    if unit == "%":
        return f"{_percent(value)}%"
    if unit == "pt":
        return f"{'+' if value > 0 else ''}{_percent(value * 100)} pt"
    if unit == "B":
        return _bytes(value, 1000, _SI)
    if unit in ("MiB", "GiB"):
        units = ("MiB", "GiB", "TiB") if unit == "MiB" else ("GiB", "TiB")
        return _bytes(value, 1024, units)
    if unit == "$":
        return f"{'-' if value < 0 else ''}${_sig(abs(value))}"
    if not unit:
        return _count(value)
    return f"{_sig(value)} {unit}"


def format_metric(name: str, value: Any) -> str:
    return format_value(value, metric_unit(name))


def exact(value: Any) -> str:
    """Six significant digits, for a tooltip beside the readable figure."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.6g}"
    return ""


def metric_order(name: str) -> tuple[int, int, str]:
    """Sort key: by group, then a group's known names in its order, then the others by name."""
    return GROUPS.index(metric_group(name)), _RANK.get(name, len(_RANK)), name


def grouped(metrics: Mapping[str, Any], skip: frozenset[str] = frozenset()
            ) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """``(group, [(name, readable, exact), ...])`` in ``GROUPS`` order, empty groups left out;
    known names in their group's order, then the others sorted."""
    by_group: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name in metrics:
        if name not in skip:
            by_group[metric_group(name)].append(name)
    out = []
    for group in GROUPS:
        names = sorted(by_group[group], key=metric_order)
        if names:
            out.append((group, [(n, format_metric(n, metrics[n]), exact(metrics[n]))
                                for n in names]))
    return out
