"""What the trial and compare pages show, formatted: the templates only lay it out."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune.dashboard.data import Snapshot, number, timestamp
from autotune.dashboard.formatting import (
    exact,
    format_figure,
    format_metric,
    format_value,
    grouped,
    metric_group,
    metric_order,
)
from autotune.dashboard.load_curve import load_curve
from autotune.dashboard.logs import TAIL_LINES, log_tail, refusal
from autotune.metrics import GROUPS, LATENCIES, STATS, bound_mark, gain_mark
from autotune.results import Interval
from autotune.store.values import TrialView

LATENCY_TABLE = frozenset(f"{lat}_{stat}_ms" for lat in LATENCIES for stat in STATS)


def param_text(value: Any) -> str:
    """A parameter's value as the space file would write it (no separators: 1372, not 1,372)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "—"}[value]
    if isinstance(value, float):
        rounded = number(value)
        return "—" if rounded is None else f"{rounded:.6g}"
    return str(value)


def status_of(record: TrialView) -> str:
    """feasible | violating | failed | running | skipped (how the plot and the table colour a
    trial; skipped: a suggestion answered without an engine, reused or predicted to fail)."""
    if record.state == "complete":
        return "feasible" if record.feasible else "violating"
    if record.state in ("reused", "skipped"):
        return "skipped"
    return "running" if record.state == "running" else "failed"


def engine_log(record: TrialView, log_root: Path) -> dict[str, str] | None:
    """The log's last lines when its file can be read here, else the excerpt recorded with the
    trial; None when there is neither."""
    tail = log_tail(record.log_path, log_root)
    if tail is not None:
        return {"text": tail, "source": f"the last {TAIL_LINES} lines of {record.log_path}"}
    if not record.log_excerpt:
        return None
    refused = refusal(record.log_path, log_root) if record.log_path else None
    where = (f" ({refused})" if refused else
             f" ({record.log_path} cannot be read here)" if record.log_path else "")
    return {"text": record.log_excerpt,
            "source": f"the excerpt recorded with the trial, around its deciding line{where}"}


def trial_view(snapshot: Snapshot, record: TrialView,
               intervals: Mapping[str, Interval] | None = None, *,
               log_root: Path) -> dict[str, Any]:
    """The trial page's content; ``intervals``: what a fresh server will measure, by headline
    metric (``autotune.results.noise_model``)."""
    intervals = intervals or {}
    report = snapshot.report
    metrics = record.metrics
    latency = [
        (lat, [(format_value(metrics.get(f"{lat}_{stat}_ms")), exact(metrics.get(
            f"{lat}_{stat}_ms"))) for stat in STATS])
        for lat in LATENCIES if any(f"{lat}_{stat}_ms" in metrics for stat in STATS)
    ]
    groups = grouped(metrics, skip=LATENCY_TABLE)
    if latency and (not groups or groups[0][0] != "latency"):
        groups.insert(0, ("latency", []))
    gains = report.gains(record)
    default = report.trial(report.default_number) if report.default_number is not None else None
    base = default.metrics if default is not None else {}

    def gain(metric: str) -> str:
        value = gains.get(metric)
        return "—" if value is None else f"{gain_mark(metric, metrics, base)}{value:.2f}x"

    def held(metric: str, limit: float) -> bool:
        # With a load ladder an SLO is judged at every level (capacity_rps), not told as a
        # constraint of its own: show whether the main load held it.
        if metric in record.violations:
            return record.violations[metric] <= 0
        value = metrics.get(metric)
        return value is not None and value <= limit

    slos = [
        (metric, format_metric(metric, limit), format_metric(metric, metrics.get(metric)),
         exact(metrics.get(metric)), held(metric, limit))
        for metric, limit in report.slos.items()
    ]
    timings = [(label, format_value(value), exact(value)) for label, value in (
        ("startup s", record.startup_s), ("warmup s", record.warmup_s),
        ("benchmark s", record.benchmark_s), ("teardown s", record.teardown_s),
    )]
    return {
        "status": status_of(record),
        "pareto": record.number in report.pareto_front,
        "params": [(k, param_text(v)) for k, v in record.params.items()],
        "flags": [(k, param_text(v)) for k, v in record.engine_flags.items()],
        "objectives": [
            (o["metric"], o["direction"], format_figure(o["metric"], metrics),
             exact(metrics.get(o["metric"])), gain(o["metric"]))
            for o in report.objectives
        ],
        # Some figure is a bound (every load level held): the page says what ≥ and ≤ mean.
        "bounds": any(bound_mark(name, metrics) for name in metrics),
        "latency_stats": list(STATS),
        "latency": latency,
        "groups": groups,
        "slos": slos,
        "timings": timings,
        "started": timestamp(record.started_at) or "—",
        "finished": timestamp(record.finished_at) or "—",
        "command": shlex.join(record.engine_command) if record.engine_command else "",
        "log": engine_log(record, log_root),
        "curve": load_curve(record, report.slos),
        "intervals": [
            (metric, format_figure(metric, metrics),
             f"{format_metric(metric, i.low)} – {format_metric(metric, i.high)}",
             f"±{i.spread.sigma:.0%}")
            for metric, i in intervals.items()
        ],
        "interval_level": next((f"{i.level:.0%}" for i in intervals.values()), ""),
        # What the spreads rest on ("prior only, ..."), once for the metrics that share it.
        "interval_basis": list(dict.fromkeys(i.spread.basis() for i in intervals.values())),
    }


def compare_view(snapshot: Snapshot, records: list[TrialView]) -> dict[str, Any]:
    """Rows of params and metrics across trials; params that differ are flagged, metrics come
    in the trial page's groups, and the best value of each metric is marked."""
    params = list(dict.fromkeys(p for r in records for p in r.params))
    param_rows = []
    for name in params:
        values = [r.params.get(name) for r in records]
        differs = any(repr(v) != repr(values[0]) for v in values)
        param_rows.append({"name": name, "cells": [param_text(v) for v in values],
                           "differs": differs})
    metric_rows: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    present_names = {m for r in records for m in r.metrics}
    for name in sorted(present_names, key=metric_order):
        raw = [r.metrics.get(name) for r in records]
        values = [number(v) for v in raw]  # compared at the precision the API sends
        present = [v for v in values if v is not None]
        best = None
        if len(set(present)) > 1:
            best = (max if snapshot.direction(name) == "maximize" else min)(present)
        metric_rows[metric_group(name)].append({
            "name": name, "direction": snapshot.direction(name),
            "cells": [(format_figure(name, r.metrics), exact(shown), v is not None and v == best)
                      for r, shown, v in zip(records, raw, values, strict=True)],
        })
    return {"trials": records, "status": [status_of(r) for r in records],
            "params": param_rows,
            "bounds": any(bound_mark(m, r.metrics) for r in records for m in r.metrics),
            "metric_groups": [(g, rows) for g, rows in metric_rows.items() if rows]}
