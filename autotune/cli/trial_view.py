"""`study show NAME --trial N`: one trial in full, every figure it recorded, grouped."""

from __future__ import annotations

import shlex
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from autotune import short_names
from autotune.bench import levels_of
from autotune.cli.common import console
from autotune.cli.render import BOUND_NOTE, gain_text, measured, result_cell, slo_cell
from autotune.metrics import LATENCIES, STATS, bound_mark, of_kind, short_name
from autotune.scoring import CAPACITY_CONSTRAINT
from autotune.space import LADDER_METRICS, QUALITY_METRICS, format_quality, split_metric

THROUGHPUT = tuple(m.name for m in of_kind("throughput", "count", "mix"))
LATENCY_METRICS = {m.name for m in of_kind("latency")}


def _grid(title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left",
                  show_header=False)
    table.add_column(style="bold", overflow="fold")
    table.add_column(overflow="fold")
    return table


def _number(v: Any) -> str:
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4g}"
    return escape(str(v))


def print_trial(report: Any, t: Any, intervals: dict[str, Any] | None = None) -> None:
    """Parameters, objectives and constraints, latencies, throughput, the fresh-server
    ``intervals`` (``noise_model.Interval`` by metric), engine metrics, quality, timings, and
    the failure with its log line."""
    head = f"trial {t.number} of {escape(report.name)}: {t.state}, {result_cell(report, t)}"
    console.print(head + (" (the vLLM defaults)" if t.is_default else ""), highlight=False)
    default = report.trial(report.default_number) if report.default_number is not None else None
    params = Table(title="parameters", box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for col in ("name", "short", "value", "default"):
        params.add_column(col, overflow="fold")
    changed = report.changed(t)
    for k, v in t.params.items():
        base = default.params.get(k, "—") if default is not None else "—"
        params.add_row(escape(k), short_names.parameter(k),
                       ("[bold]" if k in changed else "") + escape(short_names.value(v)),
                       escape(short_names.value(base)))
    console.print(params)
    m = t.metrics
    if report.metrics and m:
        goals = _grid("objectives")
        for metric, gain in report.gains(t).items():
            shown = _marked(m, metric) if metric in m else "—"
            goals.add_row(escape(metric), shown + ("" if gain is None else
                                                   f" {gain_text(report, t, metric, gain)} "
                                                   "vs the defaults"))
        console.print(goals)
    if t.violations and t.state == "complete":
        constraints = _grid(f"constraints: {slo_cell(report, t)}")
        for key, v in t.violations.items():
            limit = report.slos.get(key)
            value = _marked(m, key) if key in m else "—"
            bound = f" (limit {_number(limit)})" if limit is not None else ""
            if key == CAPACITY_CONSTRAINT and limit is None:
                bound = " (some ladder level held every SLO)"
            constraints.add_row(escape(key), f"{value}{bound}: " + ("met" if v <= 0 else
                                                                   "[yellow]missed[/]"))
        console.print(constraints)
    if any(k in m for k in LATENCY_METRICS):
        latency = Table(title="latency, ms", box=box.SIMPLE_HEAD, pad_edge=False,
                        title_justify="left")
        latency.add_column("")
        for stat in STATS:
            latency.add_column(stat, justify="right")
        for lat in LATENCIES:
            latency.add_row(lat, *(f"{m[f'{lat}_{s}_ms']:.1f}" if f"{lat}_{s}_ms" in m
                                   else "—" for s in STATS))
        console.print(latency)
    _section("throughput", [(k, m[k]) for k in THROUGHPUT if k in m])
    if intervals:
        level = next(iter(intervals.values())).level
        fresh = _grid(f"what a fresh server will measure ({level:.0%} interval)")
        for metric, interval in intervals.items():
            fresh.add_row(escape(metric), f"{_marked(m, metric)} recorded, "
                          f"{interval.text()} ({escape(interval.spread.describe())})")
        console.print(fresh)
    _per_workload(m)
    levels = levels_of(t.measurements)
    if levels:
        _section("load curve", [(k, _marked(m, k)) for k in LADDER_METRICS if k in m])
        console.print(ladder_table(levels))
        if any(bound_mark(k, m) for k in m):
            console.print(BOUND_NOTE, highlight=False)
    _section("quality", [(short_name(k), format_quality(k, m[k]))
                         for k in QUALITY_METRICS if k in m])
    elsewhere = {*THROUGHPUT, *LATENCY_METRICS, *QUALITY_METRICS,
                 *(LADDER_METRICS if levels else ())}
    _section("engine and measurement metrics",
             [(f"{short_name(k)} ({k})" if short_name(k) != k else k, _marked(m, k))
              for k in sorted(m) if k not in elsewhere and split_metric(k)[0] is None])
    _section("timings, s", [(k, f"{v:.1f}") for k, v in (
        ("startup", t.startup_s), ("warmup", t.warmup_s), ("benchmark", t.benchmark_s),
        ("teardown", t.teardown_s)) if v is not None] + [("measured", measured(t))])
    if t.failure_kind or t.failure_reason:
        _section("failure", [("kind", t.failure_kind or "—"), ("reason", t.failure_reason or ""),
                             ("log line", t.failure_line or "—")])
    _section("engine", [(k, v) for k, v in (
        ("command", shlex.join(t.engine_command) if t.engine_command else None),
        ("version", t.engine_version), ("host", t.host), ("devices", t.devices),
        ("log", t.log_path)) if v])


def _marked(m: dict[str, Any], metric: str) -> str:
    """The figure, after "≥" or "≤" when it is a bound (``autotune.metrics.bound_mark``)."""
    return bound_mark(metric, m) + _number(m[metric])


def _per_workload(m: dict[str, Any]) -> None:
    """A mix's figures, one column per workload (the sections above show the aggregates)."""
    columns: dict[str, dict[str, Any]] = {}
    for key, value in m.items():
        workload, base = split_metric(key)
        if workload is not None:
            columns.setdefault(workload, {})[base] = value
    if not columns:
        return
    order = [*THROUGHPUT, *(f"{lat}_{s}_ms" for lat in LATENCIES for s in STATS)]
    names = {n for figures in columns.values() for n in figures}
    rows = [n for n in order if n in names] + sorted(names - set(order))
    table = Table(title="per workload", box=box.SIMPLE_HEAD,
                  pad_edge=False, title_justify="left")
    table.add_column("metric", overflow="fold")
    for workload in columns:
        table.add_column(escape(workload), justify="right")
    for name in rows:
        table.add_row(escape(name), *(_number(columns[w][name]) if name in columns[w] else "—"
                                      for w in columns))
    console.print(table)


LADDER_COLUMNS = (("req/s", "request_throughput"), ("tok/s", "output_throughput"),
                  ("TTFT\np95", "ttft_p95_ms"), ("TPOT\nmean", "tpot_mean_ms"),
                  ("E2E\np95", "e2e_p95_ms"))


def _compact(v: float) -> str:
    """A figure in at most 5 characters or so: 1234, 56.7, 8.91."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def _percent(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def ladder_table(levels: list[dict[str, Any]]) -> Table:
    """One row per measured level of the load ladder: its load, the achieved figures
    (latencies in ms, from arrival), errors and prefix-cache hits, per-user tok/s
    (1000 / TPOT) and whether the SLOs held; the early stop's reason under it. Fits 80
    columns."""
    kind = levels[0].get("kind", "concurrency")
    table = Table(title="load ladder (latency ms, from arrival)", box=box.SIMPLE_HEAD,
                  pad_edge=False, title_justify="left", caption_justify="left")
    table.add_column("in\nflight" if kind == "concurrency" else "offered\nreq/s",
                     justify="right")
    for title, _ in LADDER_COLUMNS:
        table.add_column(title, justify="right")
    table.add_column("errors", justify="right")
    table.add_column("prefix\nhits", justify="right")
    table.add_column("tok/s\nper user", justify="right")
    table.add_column("SLOs")
    for level in levels:
        figures = level.get("metrics", {})
        tpot = figures.get("tpot_mean_ms")
        table.add_row(
            _number(float(level["load"])),
            *(_compact(figures[key]) if key in figures else "—" for _, key in LADDER_COLUMNS),
            _percent(figures.get("error_rate")), _percent(figures.get("prefix_cache_hit_rate")),
            _compact(1000.0 / tpot) if tpot else "—",
            "held" if level.get("holds") else "[yellow]missed[/]",
        )
    stops = [level["stop_reason"] for level in levels if level.get("stop_reason")]
    if stops:
        table.caption = "stopped early: " + escape(stops[-1])
    return table


def _section(title: str, rows: list[tuple[str, Any]]) -> None:
    if not rows:
        return
    table = _grid(title)
    for key, value in rows:
        table.add_row(escape(key), value if title == "quality" or key == "measured"
                      else _number(value))
    console.print(table)
