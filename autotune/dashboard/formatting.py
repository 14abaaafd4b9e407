"""How the dashboard's pages show a metric: its group, its unit and a readable number.

``format_value`` is the one number formatter of the server-rendered pages (trial, compare):
three significant digits, thousands separators from 1,000 up, the unit after the number
(``12.3 ms``, ``1,159 tok/s``, ``0.9%``, ``2.10 MB``, ``2,097,152 tokens``). A metric's group,
unit and place in its group are the metric catalogue's (``autotune.metrics``); any other name
takes its unit from the end of its name and is in the group "other".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from autotune.metrics import GROUPS, LATENCY_METRIC, bound_mark, lookup, rank

# An uncatalogued name's unit, by the end of its name, longest first.
_SUFFIX_UNITS = (("_ms_ci_low", "ms"), ("_ms_ci_high", "ms"), ("_usd", "$"), ("_pct", "%"),
                 ("_mib", "MiB"), ("_gib", "GiB"), ("_bytes", "B"), ("_ms", "ms"), ("_s", "s"))
_SI = ("B", "kB", "MB", "GB", "TB", "PB")


def metric_group(name: str) -> str:
    """One of ``GROUPS``."""
    found = lookup(name)
    if found is not None:
        return found.group
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
    found = lookup(name)
    if found is not None:
        return found.unit
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


def format_figure(name: str, metrics: Mapping[str, Any]) -> str:
    """A trial's ``metrics[name]`` as ``format_metric`` shows it, after "≥ " or "≤ " when the
    figure is a bound (``autotune.metrics.bound_mark``: every load level held the SLOs)."""
    mark = bound_mark(name, metrics)
    text = format_metric(name, metrics.get(name))
    return f"{mark} {text}" if mark and text != "—" else text


def exact(value: Any) -> str:
    """Six significant digits, for a tooltip beside the readable figure."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.6g}"
    return ""


def metric_order(name: str) -> tuple[int, int, str]:
    """Sort key: by group, then a group's known names in its order, then the others by name."""
    return GROUPS.index(metric_group(name)), rank(name), name


def grouped(metrics: Mapping[str, Any], skip: frozenset[str] = frozenset()
            ) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """``(group, [(name, readable, exact), ...])`` in ``GROUPS`` order, empty groups left out;
    known names in their group's order, then the others sorted; a bound after its mark."""
    by_group: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name in metrics:
        if name not in skip:
            by_group[metric_group(name)].append(name)
    out = []
    for group in GROUPS:
        names = sorted(by_group[group], key=metric_order)
        if names:
            out.append((group, [(n, format_figure(n, metrics), exact(metrics[n]))
                                for n in names]))
    return out
