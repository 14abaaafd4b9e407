"""A trial's load curve (its ladder levels, ``autotune.bench.ladder``) as a Plotly figure.

Two panels over one x axis, the achieved request rate: per-user interactivity (1000 / mean
TPOT, output tok/s each request sees) above, the latencies the SLOs bound (from arrival) with
their limits below. One marker per level; levels that missed the SLOs are open crosses; the
capacity at SLO (``capacity_rps``, interpolated by the ladder) is a star. None for a trial
without levels, so the page draws nothing.
"""

from __future__ import annotations

import math
from typing import Any

from autotune.bench import levels_of
from autotune.dashboard.data import number
from autotune.dashboard.figures import LEGEND_ABOVE
from autotune.dashboard.formatting import format_figure, format_metric, format_value
from autotune.store.values import TrialView

HELD = "level held the SLOs"
MISSED = "level missed an SLO"
CAPACITY = "capacity at SLO"
COLORS = {"held": "#1a7f37", "missed": "#d97706", "capacity": "#3b5bdb", "line": "#98a2b3"}
LATENCY_COLORS = ("#7c3aed", "#0e7490", "#be185d", "#4d7c0f")
# Panels: interactivity on top, SLO latencies below, a gap between for the lower one's title.
TOP, BOTTOM = [0.56, 1.0], [0.0, 0.42]


def interactivity(figures: dict[str, Any]) -> float | None:
    """Output tokens/s one request sees: 1000 / mean TPOT (ms), as the ladder computes it."""
    tpot = figures.get("tpot_mean_ms")
    if isinstance(tpot, int | float) and math.isfinite(tpot) and tpot > 0:
        return number(1000.0 / tpot)
    return None


def _load_text(kind: str, load: float) -> str:
    return f"concurrency {load:g}" if kind == "concurrency" else f"offered {load:g} req/s"


def _hover(level: dict[str, Any], slos: dict[str, float]) -> str:
    figures = level.get("metrics", {})
    rows = [f"level {level['ladder_level'] + 1}: {_load_text(level['kind'], level['load'])}",
            f"achieved {format_metric('request_throughput', figures.get('request_throughput'))}",
            f"output {format_metric('output_throughput', figures.get('output_throughput'))}",
            f"per user {format_value(interactivity(figures), 'tok/s')}"]
    rows += [f"{m} {format_metric(m, figures.get(m))} (limit {format_metric(m, limit)})"
             for m, limit in slos.items()]
    rows.append("held the SLOs" if level.get("holds") else "missed an SLO")
    return "<br>".join(rows)


def load_curve(record: TrialView, slos: dict[str, float]) -> dict[str, Any] | None:
    """``{"figure": {data, layout}, "levels": [...], "capacity": ..., "stop_reason": ...}`` for
    a trial with ladder levels (plain JSON: no NaN), else None. ``slos``: the study's limits."""
    levels = [lv for lv in levels_of(record.measurements)
              if number((lv.get("metrics") or {}).get("request_throughput")) is not None]
    if not levels:
        return None
    kind = levels[0].get("kind", "concurrency")
    for level in levels:
        level.setdefault("kind", kind)
    latency_slos = {m: limit for m, limit in slos.items() if m.endswith("_ms")
                    and any(m in lv.get("metrics", {}) for lv in levels)}
    rows = []
    for level in levels:
        figures = level.get("metrics", {})
        rows.append({
            "level": level["ladder_level"] + 1, "load": number(level["load"]),
            "rate": number(figures.get("request_throughput")),
            "interactivity": interactivity(figures), "holds": bool(level.get("holds")),
            "latency": {m: number(figures.get(m)) for m in latency_slos},
            "hover": _hover(level, latency_slos),
        })
    stops = [lv["stop_reason"] for lv in levels if lv.get("stop_reason")]
    metrics = record.metrics
    capacity = {key: number(metrics.get(key)) for key in (
        "capacity_rps", "interactivity_at_capacity", "throughput_per_device_at_capacity",
        "capacity_is_lower_bound")}

    data: list[dict[str, Any]] = [{
        "type": "scatter", "mode": "lines", "name": "load curve", "showlegend": False,
        "x": [r["rate"] for r in rows], "y": [r["interactivity"] for r in rows],
        "line": {"color": COLORS["line"], "width": 1.5}, "hoverinfo": "skip",
        "xaxis": "x", "yaxis": "y",
    }]
    for name, held, symbol, color in ((HELD, True, "circle", COLORS["held"]),
                                      (MISSED, False, "x-open", COLORS["missed"])):
        picked = [r for r in rows if r["holds"] == held]
        if picked:
            data.append({
                "type": "scatter", "mode": "markers", "name": name,
                "x": [r["rate"] for r in picked], "y": [r["interactivity"] for r in picked],
                "text": [r["hover"] for r in picked], "hoverinfo": "text",
                "marker": {"symbol": symbol, "size": 10, "color": color,
                           "line": {"width": 2, "color": color}},
                "xaxis": "x", "yaxis": "y",
            })
    if capacity["capacity_rps"] and capacity["interactivity_at_capacity"] is not None:
        bound = " (a lower bound: every level held)" if capacity["capacity_is_lower_bound"] else ""
        data.append({
            "type": "scatter", "mode": "markers", "name": CAPACITY,
            "x": [capacity["capacity_rps"]], "y": [capacity["interactivity_at_capacity"]],
            "text": [f"capacity at SLO{bound}<br>"
                     f"{format_figure('capacity_rps', metrics)}, "
                     f"{format_figure('interactivity_at_capacity', metrics)} per user"],
            "hoverinfo": "text",
            "marker": {"symbol": "star", "size": 16, "color": COLORS["capacity"],
                       "line": {"width": 1, "color": "#fff"}},
            "xaxis": "x", "yaxis": "y",
        })
    shapes, annotations = [], []
    for i, (metric, limit) in enumerate(latency_slos.items()):
        color = LATENCY_COLORS[i % len(LATENCY_COLORS)]
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": f"{metric} (from arrival)",
            "x": [r["rate"] for r in rows], "y": [r["latency"][metric] for r in rows],
            "text": [r["hover"] for r in rows], "hoverinfo": "text",
            "marker": {"symbol": ["circle" if r["holds"] else "x-open" for r in rows],
                       "size": 8, "color": color, "line": {"width": 2, "color": color}},
            "line": {"color": color, "width": 1.5}, "xaxis": "x", "yaxis": "y2",
        })
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y2",
                       "y0": limit, "y1": limit, "line": {"color": color, "dash": "dash",
                                                          "width": 1}})
        # At the left, where the zero-based rate axis leaves room (the levels sit right of it).
        annotations.append({"xref": "paper", "x": 0.01, "xanchor": "left", "yref": "y2",
                            "y": limit, "yanchor": "bottom", "showarrow": False,
                            "text": f"{metric} SLO {format_metric(metric, limit)}",
                            "font": {"size": 11, "color": color}})
    # One x axis at the bottom, anchored to the lower panel; the top panel shares it.
    layout: dict[str, Any] = {
        "xaxis": {"title": {"text": "achieved request rate (req/s)"},
                  "anchor": "y2" if latency_slos else "y", "rangemode": "tozero",
                  "automargin": True},
        "yaxis": {"domain": TOP if latency_slos else [0, 1], "rangemode": "tozero",
                  "title": {"text": "per user (output tok/s)"}, "automargin": True},
        "legend": LEGEND_ABOVE, "margin": {"l": 70, "r": 20, "t": 40, "b": 50},
        "hovermode": "closest", "shapes": shapes, "annotations": annotations,
    }
    if latency_slos:
        layout["yaxis2"] = {"domain": BOTTOM, "anchor": "x", "rangemode": "tozero",
                            "title": {"text": "latency (ms)"}, "automargin": True,
                            "tickformat": ",~g"}
    return {
        "figure": {"data": data, "layout": layout},
        "kind": kind,
        "levels": [{k: v for k, v in r.items() if k != "hover"} for r in rows],
        "capacity": capacity,
        "stop_reason": stops[-1] if stops else None,
        "summary": _summary(capacity, metrics, len(rows)),
    }


def _summary(capacity: dict[str, float | None], metrics: dict[str, float], n_levels: int) -> str:
    levels = f"{n_levels} level{'s' if n_levels != 1 else ''} measured"
    if not capacity["capacity_rps"]:
        return f"{levels}; no level held the SLOs: capacity at SLO 0"
    text = (f"{levels}; capacity at SLO {format_figure('capacity_rps', metrics)}"
            f" at {format_figure('interactivity_at_capacity', metrics)} per user")
    if capacity["throughput_per_device_at_capacity"] is not None:
        text += f", {format_figure('throughput_per_device_at_capacity', metrics)} per device"
    if capacity["capacity_is_lower_bound"]:
        text += " (a lower bound: every level held, the ladder never reached the SLOs' edge)"
    return text
