"""Every dashboard page fits the window at 1400 and 800 px, and no legend sits on its plot.

Pages of the real recorded CPU quickstart and of a synthetic study with every kind of metric
(autotune/store/synthetic.py), in Debian's headless Chromium. Screenshots of each page
at each width go to test-output/dashboard/layout-WIDTH-PAGE.png.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotune.dashboard import create_app
from autotune.store import open_catalog, upgrade_schema
from autotune.store.synthetic import enrich_trial, write_study
from autotune.testing.live_server import CHROMIUM, running_server
from tests.dashboard.conftest import SHOTS
from tests.support.dashboard import MIXED, MIXED_KINDS, QUICKSTART, QUICKSTART_DB, study_id

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"),
]
TIMEOUT_MS = 30_000
RICH_TRIAL = 1  # a measured trial of MIXED (MIXED_KINDS[1] == "V")

# Whether the page is wider than the window; which tables stick out of the viewport (a table may
# scroll inside its card, never the page) and which scroll inside their card.
OVERFLOW = """() => {
  const root = document.documentElement;
  const out = { scrollWidth: root.scrollWidth, innerWidth: window.innerWidth, past: [],
                scrolling: [] };
  for (const table of document.querySelectorAll("table")) {
    let box = table.parentElement;
    while (box && getComputedStyle(box).overflowX === "visible") box = box.parentElement;
    const name = table.id || table.className;
    const right = (box || table).getBoundingClientRect().right;
    if (right > window.innerWidth + 0.5) out.past.push(`${name}: ${right}`);
    if (box && box.scrollWidth > box.clientWidth + 1) {
      out.scrolling.push(`${name}: ${box.scrollWidth} px in ${box.clientWidth}`);
    }
  }
  return out;
}"""

# Optuna's figures are drawn, or their notes say why not.
FIGURES_DONE = """() => ["history", "importance"].every((id) =>
  document.getElementById(id).data
  || !document.getElementById(`${id}-note`).textContent.startsWith("loading"))"""

# A figure's legend, its plot area (Plotly's drag layer over the axes) and its data labels
# (Optuna's importance bars carry their values as text past the bar's end).
LEGEND_AND_PLOT = """(id) => {
  const gd = document.getElementById(id);
  const box = (node) => { const r = node.getBoundingClientRect();
    return { left: r.left, right: r.right, top: r.top, bottom: r.bottom }; };
  const legend = gd.querySelector(".legend");
  const area = gd.querySelector(".draglayer .xy .nsewdrag");
  return { legend: legend ? box(legend) : null, plot: area ? box(area) : null,
           labels: [...gd.querySelectorAll(".bartext")].map(box) };
}"""


@pytest.fixture(scope="module")
def layout_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The quickstart and a mixed study with a rich trial whose engine log exists."""
    root = tmp_path_factory.mktemp("layout")
    path = root / "studies.db"
    shutil.copy(QUICKSTART_DB, path)
    url = f"sqlite:///{path}"
    upgrade_schema(url)
    write_study(url, MIXED, MIXED_KINDS, seed=3)
    logs = root / "logs" / MIXED
    logs.mkdir(parents=True)
    log = logs / f"trial-{RICH_TRIAL:04d}.log"
    log.write_text("".join(f"INFO line {i}: <b>engine</b> {'x' * (i % 7) * 40}\n"
                           for i in range(100)))
    enrich_trial(url, MIXED, RICH_TRIAL, str(log))
    with running_server(create_app(open_catalog(url))) as base:
        yield base, url


def pages(base: str, url: str) -> dict[str, str]:
    quick, mixed = study_id(url, QUICKSTART), study_id(url, MIXED)
    failed = MIXED_KINDS.index("X")
    return {
        "studies": "/",
        "study": f"/studies/{quick}",
        "trials": f"/studies/{mixed}",
        "trial": f"/studies/{mixed}/trials/{RICH_TRIAL}",
        "trial-quickstart": f"/studies/{quick}/trials/1",
        "trial-failed": f"/studies/{mixed}/trials/{failed}",
        "compare": f"/studies/{mixed}/compare?trials=0,1,2,3,4,5",
        "compare-quickstart": f"/studies/{quick}/compare?trials=0,1,2",
    }


def overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] \
        and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.mark.parametrize("width", [1400, 800])
def test_pages_fit_the_window_and_legends_clear_the_plots(page, layout_site, width):
    base, url = layout_site
    page.set_viewport_size({"width": width, "height": 1000})
    problems = []
    for name, path in pages(base, url).items():
        page.goto(base + path)
        study_page = re.fullmatch(r"/studies/\d+", path) is not None
        if study_page:
            page.wait_for_selector("body[data-plotted]", timeout=TIMEOUT_MS)
            page.wait_for_function(FIGURES_DONE, timeout=TIMEOUT_MS)
            page.evaluate("() => new Promise((r) => requestAnimationFrame(() => r()))")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SHOTS / f"layout-{width}-{name}.png", full_page=True)
        fit = page.evaluate(OVERFLOW)
        if fit["scrollWidth"] > fit["innerWidth"]:
            problems.append(f"{name}: page {fit['scrollWidth']} px wide in {width} px")
        problems += [f"{name}: table past the window: {t}" for t in fit["past"]]
        if width >= 1400:  # room enough: every table fits its card without scrolling
            problems += [f"{name}: table scrolls in its card: {t}" for t in fit["scrolling"]]
        if study_page:
            for figure in ("importance", "history", "pareto"):
                boxes = page.evaluate(LEGEND_AND_PLOT, figure)
                if boxes["plot"] is None:  # not drawn: its note says why
                    continue
                legend = boxes["legend"]
                if legend is None:
                    continue
                for what in [boxes["plot"], *boxes["labels"]]:
                    if overlap(legend, what):
                        problems.append(f"{name}: the {figure} legend {legend} sits on {what}")
    assert not problems, "\n".join(problems)
