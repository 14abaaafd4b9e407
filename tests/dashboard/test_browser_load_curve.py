"""The trial page's load curve in a real headless Chromium: one SVG marker per ladder level
(held and missed drawn apart), the capacity star, the stop reason under it, and the page fits
the window at 800 and 1400 px with the legend clear of the plot. Screenshots go to
test-output/dashboard/."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.dashboard import create_app
from autotune.store import open_catalog
from autotune.store.synthetic import SLOS, add_ladder, write_study
from autotune.testing.live_server import CHROMIUM, running_server
from tests.dashboard.test_browser_layout import OVERFLOW, overlap
from tests.support.dashboard import MIXED, MIXED_KINDS, study_id

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"),
]
TIMEOUT_MS = 30_000
LADDER_TRIAL = 2  # measured (MIXED_KINDS[2] == "F")
PLAIN_TRIAL = 3

# Markers Plotly drew, per trace name (lines-only traces draw none).
CURVE_STATE = """() => {
  const gd = document.getElementById("load-curve");
  const points = {};
  gd.querySelectorAll(".scatterlayer .trace").forEach((node, i) => {
    points[gd._fullData[i].name] = node.querySelectorAll("path.point").length;
  });
  const box = (node) => { const r = node.getBoundingClientRect();
    return { left: r.left, right: r.right, top: r.top, bottom: r.bottom }; };
  const legend = gd.querySelector(".legend");
  return { points, legend: legend ? box(legend) : null,
           plots: [...gd.querySelectorAll(".draglayer .nsewdrag")].map(box),
           svg: gd.querySelectorAll("svg.main-svg").length,
           x: gd.layout.xaxis.title.text, y: gd.layout.yaxis.title.text,
           y2: gd.layout.yaxis2.title.text };
}"""


def test_the_load_curve_is_drawn_and_fits(page, tmp_path):
    url = f"sqlite:///{tmp_path / 'curve.db'}"
    write_study(url, MIXED, MIXED_KINDS, seed=3)
    add_ladder(url, MIXED, LADDER_TRIAL, [1, 2, 4, 8])
    sid = study_id(url, MIXED)
    with running_server(create_app(open_catalog(url))) as base:
        for width in (800, 1400):
            page.set_viewport_size({"width": width, "height": 1000})
            page.goto(f"{base}/studies/{sid}/trials/{LADDER_TRIAL}")
            page.wait_for_selector("body[data-plotted]", timeout=TIMEOUT_MS)
            page.wait_for_selector("#load-curve .scatterlayer path.point")
            state = page.evaluate(CURVE_STATE)
            assert state["svg"] >= 1
            # 3 levels ran (the third missed an SLO and stopped the ladder): 2 held, 1 missed,
            # one capacity star, and each SLO latency one marker per level.
            assert state["points"] == {
                "load curve": 0, "level held the SLOs": 2, "level missed an SLO": 1,
                "capacity at SLO": 1, **{f"{m} (from arrival)": 3 for m in SLOS}}
            assert "req/s" in state["x"] and "tok/s" in state["y"] and "ms" in state["y2"]
            assert page.locator("#curve-stop").text_content().startswith(
                "stopped early: level 3 (concurrency 4) missed the SLOs")
            assert page.locator("#curve-note").text_content().startswith("hover")
            overflow = page.evaluate(OVERFLOW)
            assert overflow["scrollWidth"] <= overflow["innerWidth"], overflow
            # Both panels drawn, the legend on neither, and the plot inside the window.
            assert len(state["plots"]) == 2 and state["legend"] is not None
            assert not [p for p in state["plots"] if overlap(state["legend"], p)], state
            assert all(p["right"] <= width for p in state["plots"]), state
            page.shot(f"load-curve-{width}")

        # Hovering the capacity star names it.
        star = page.locator("#load-curve .scatterlayer .trace").nth(3).locator("path.point")
        star.scroll_into_view_if_needed()  # the curve sits below the fold at 1000 px high
        box = star.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_selector("#load-curve .hoverlayer .hovertext")
        assert "capacity at SLO" in page.locator("#load-curve .hoverlayer").text_content()

        page.goto(f"{base}/studies/{sid}/trials/{PLAIN_TRIAL}")
        assert page.locator("#load-curve").count() == 0
        assert page.locator("#load-curve-panel").count() == 0


# The trade-off plot's traces: name → (points, symbol, labels); the labels Plotly drew.
BOUND_STATE = """() => {
  const gd = document.getElementById("pareto");
  const traces = {};
  for (const t of gd.data) {
    traces[t.name] = { points: t.x.length, symbol: t.marker.symbol,
      labels: t.texttemplate || [] };
  }
  const drawn = [...gd.querySelectorAll(".scatterlayer .textpoint text")]
    .map((n) => n.textContent);
  const legend = [...gd.querySelectorAll(".legend .legendtext")].map((n) => n.textContent);
  return { traces, drawn, legend };
}"""


def test_a_bound_is_marked_on_the_trade_off_plot(page, tmp_path):
    """A trial whose capacity is a lower bound (every level held) is ringed with its own
    symbol, labelled "≥ ≤" (capacity ≥, per-user tok/s ≤), has a legend entry and says so in
    its hover and the trials table; an exact one has none of it."""
    from tests.support.bounds import NAME, bound_study_url

    url = bound_study_url(tmp_path)
    with running_server(create_app(open_catalog(url))) as base:
        page.goto(f"{base}/studies/{study_id(url, NAME)}")
        page.wait_for_selector("body[data-plotted]", timeout=TIMEOUT_MS)
        state = page.evaluate(BOUND_STATE)
        ring = state["traces"]["≥ / ≤: a bound (every load level held the SLOs)"]
        assert ring == {"points": 1, "symbol": "triangle-up-open", "labels": ["≥ ≤"]}
        assert state["drawn"] == ["≥ ≤"]  # drawn beside the point, the only label
        assert state["traces"]["Pareto front (feasible)"]["symbol"] == "circle"
        assert "≥ / ≤: a bound (every load level held the SLOs)" in state["legend"]
        assert "1 marked ≥ / ≤" in page.locator("#pareto-note").text_content()
        # The table: the defaults' figures marked, the bracketed trials' not.
        assert page.locator('#trials tr[data-number="0"] td.col-m\\:capacity_rps') \
            .text_content() == "≥ 36"
        assert page.locator('#trials tr[data-number="1"] td.col-m\\:capacity_rps') \
            .text_content() == "9"
        page.shot("bound-on-the-front")
        ringed = page.locator("#pareto .scatterlayer .trace").last.locator("path.point").first
        box = ringed.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_selector("#pareto .hoverlayer .hovertext")
        hover = page.locator("#pareto .hoverlayer .hovertext").text_content()
        assert "trial 0" in hover and "capacity_rps: ≥ 36" in hover
        assert "interactivity_at_capacity: ≤ 72" in hover and "a bound" in hover
        page.shot("bound-hover")
