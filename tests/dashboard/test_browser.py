"""The dashboard in a real headless Chromium (Debian's), driven by Playwright.

Screenshots of every page visited go to test-output/dashboard/. Each test also checks that the
page raised no JavaScript error, opened no dialog and asked nothing of any other host.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotune.dashboard import create_app
from autotune.metrics import natural_direction
from autotune.results.export import export_yaml
from autotune.results.report import load_report, pareto_front
from autotune.store import open_catalog
from autotune.store.synthetic import finish_trial, write_study, write_trial
from autotune.testing.live_server import CHROMIUM, running_server
from tests.support.dashboard import HOSTILE, HOSTILE_PARAM, MIXED, MIXED_KINDS, study_id

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"),
]
STATUSES = ("feasible", "violating", "failed")
TIMEOUT_MS = 30_000

PLOT_STATE = """() => {
  const gd = document.getElementById("pareto");
  const points = {};
  for (const trace of gd.data) points[trace.name] = trace.x.length;
  const titles = gd.layout.scene
    ? ["xaxis", "yaxis", "zaxis"].map((a) => gd.layout.scene[a].title.text)
    : [gd.layout.xaxis.title.text, gd.layout.yaxis.title.text];
  return { points, types: gd.data.map((t) => t.type), titles,
           svgPoints: gd.querySelectorAll(".scatterlayer path.point").length };
}"""


@pytest.fixture(scope="module")
def site(studies_url) -> Iterator[str]:
    with running_server(create_app(open_catalog(studies_url))) as base:
        yield base


def open_study(page, base: str, sid: int) -> None:
    page.goto(f"{base}/studies/{sid}")
    page.wait_for_selector("body[data-plotted]", timeout=TIMEOUT_MS)


def plot(page) -> dict:
    return page.evaluate(PLOT_STATE)


def points_by_status(state: dict) -> dict[str, int]:
    names = {"Pareto front (feasible)": "front", "feasible, dominated": "dominated",
             "violates an SLO": "violating"}
    out = {names.get(name, "failed"): n for name, n in state["points"].items()}
    assert set(out) == {"front", "dominated", "violating", "failed"}
    return out


def test_studies_page(page, site):
    page.goto(site + "/")
    page.wait_for_selector("body[data-ready]")
    rows = page.locator("#studies tbody tr")
    assert rows.count() == 3
    names = page.locator("a.study-link").all_text_contents()
    assert set(names) == {MIXED, "only-failed", HOSTILE}  # shown as text, never run
    mixed = page.locator("tr", has=page.get_by_role("link", name=MIXED, exact=True))
    cells = mixed.locator("td").all_text_contents()
    assert cells[3:7] == [str(len(MIXED_KINDS)), str(MIXED_KINDS.count("F") +
                          MIXED_KINDS.count("V")), str(MIXED_KINDS.count("X")), "1"]
    assert "vs defaults" in cells[7]
    page.shot("studies")
    page.get_by_role("link", name=MIXED, exact=True).click()
    page.wait_for_selector("body[data-plotted]", timeout=TIMEOUT_MS)
    assert page.locator("#study-name").text_content() == MIXED


def test_pareto_plot_points_and_switching_metrics(page, site, studies_url):
    sid = study_id(studies_url, MIXED)
    report = load_report(open_catalog(studies_url), MIXED)
    open_study(page, site, sid)
    state = plot(page)
    counts = points_by_status(state)
    feasible = MIXED_KINDS.count("F")
    assert counts == {"front": len(report.pareto_front),
                      "dominated": feasible - len(report.pareto_front),
                      "violating": MIXED_KINDS.count("V"), "failed": MIXED_KINDS.count("X")}
    # Every trial but the running one is drawn, each as an SVG marker.
    assert state["svgPoints"] == len(MIXED_KINDS) - 1
    assert "output_throughput" in state["titles"][0] and "e2e_p95_ms" in state["titles"][1]
    page.shot("objectives")

    page.select_option("#pick-y", "ttft_p95_ms")
    page.wait_for_function("() => document.getElementById('pareto').layout.yaxis.title.text"
                           ".includes('ttft_p95_ms')")
    page.select_option("#pick-x", "request_goodput")
    page.wait_for_function("() => document.getElementById('pareto').layout.xaxis.title.text"
                           ".includes('request_goodput')")
    state = plot(page)
    picked = ["request_goodput", "ttft_p95_ms"]
    front = pareto_front(report.trials, picked, [natural_direction(m) for m in picked])
    counts = points_by_status(state)
    assert counts["front"] == len(front)
    assert counts["front"] + counts["dominated"] == feasible
    assert "lower is better" in state["titles"][1] and "higher is better" in state["titles"][0]
    page.shot("other-metrics")

    page.select_option("#pick-z", "tpot_p99_ms")
    page.wait_for_function("() => document.getElementById('pareto').data[0].type"
                           " === 'scatter3d'")
    state = plot(page)
    assert set(state["types"]) == {"scatter3d"}
    assert "tpot_p99_ms" in state["titles"][2]
    assert sum(state["points"].values()) == len(MIXED_KINDS) - 1
    page.shot("3d")


def test_click_a_point_then_download_its_yaml(page, site, studies_url):
    sid = study_id(studies_url, MIXED)
    report = load_report(open_catalog(studies_url), MIXED)
    open_study(page, site, sid)
    # The first trace is the Pareto front: click its first marker.
    box = page.locator("#pareto .scatterlayer .trace").first.locator("path.point").first \
        .bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#pareto .hoverlayer .hovertext")
    hover = page.locator("#pareto .hoverlayer .hovertext").text_content()
    assert "trial" in hover and "max_num_seqs" in hover
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(re.compile(rf".*/studies/{sid}/trials/\d+$"), timeout=TIMEOUT_MS)
    number = int(page.url.rsplit("/", 1)[1])
    assert number in report.pareto_front
    assert page.locator("h1").text_content().startswith(f"Trial {number}")
    assert page.locator("#trial-status").text_content() == "feasible"
    page.shot("trial")

    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == f"trial-{number}.yaml"
    assert Path(download.path()).read_text() == export_yaml(report, report.trial(number))


def test_trials_table_filters_sorts_and_compares(page, site, studies_url):
    sid = study_id(studies_url, MIXED)
    open_study(page, site, sid)
    rows = page.locator("#trials tbody tr")
    assert rows.count() == len(MIXED_KINDS)

    page.select_option("#filter-state", "failed")
    assert rows.count() == MIXED_KINDS.count("X")
    assert set(page.locator("#trials tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.state)")) == {"failed"}
    reasons = page.locator("#trials td.reason").all_text_contents()
    assert all(r and r != "—" for r in reasons)
    report = load_report(open_catalog(studies_url), MIXED)
    kind = next(t.failure_kind for t in report.trials if t.failure_kind)
    page.select_option("#filter-kind", kind)
    expected = [t.number for t in report.trials if t.failure_kind == kind]
    assert [int(n) for n in rows.evaluate_all("rows => rows.map(r => r.dataset.number)")] \
        == expected
    page.select_option("#filter-state", "")
    page.select_option("#filter-kind", "")

    page.locator("#trials th", has_text="output_throughput").click()
    values = [float(v) for v in page.locator("#trials tbody td.num:nth-child(5)")
              .all_text_contents() if v != "—"]
    assert values == sorted(values) and len(values) > 3
    page.locator("#trials th", has_text="output_throughput").click()
    values = [float(v) for v in page.locator("#trials tbody td.num:nth-child(5)")
              .all_text_contents() if v != "—"]
    assert values == sorted(values, reverse=True)
    page.shot("table")

    page.locator('#trials tr[data-number="1"] input[type=checkbox]').check()
    page.locator('#trials tr[data-number="2"] input[type=checkbox]').check()
    page.click("#compare")
    page.wait_for_url(re.compile(rf".*/studies/{sid}/compare\?trials=1,2$"))
    assert page.locator("#compare tr.differs").count() >= 1
    page.shot("compare")


def test_history_importance_and_parallel_coordinates(page, site, studies_url):
    open_study(page, site, study_id(studies_url, MIXED))
    page.wait_for_function("() => document.getElementById('importance').data"
                           " && document.getElementById('history').data", timeout=TIMEOUT_MS)
    history = page.evaluate("() => document.getElementById('history').data[0].x.length")
    assert history == len(MIXED_KINDS) - 1
    bars = page.evaluate("() => document.getElementById('importance').data[0].y")
    assert any(b.startswith("max_num_seqs") for b in bars)
    dims = page.evaluate("() => document.getElementById('parallel').data[0].dimensions"
                         ".map(d => d.label)")
    assert "max_num_seqs" in dims and any(d.startswith("output_throughput") for d in dims)
    page.shot("figures")


def test_hostile_strings_stay_text(page, site, studies_url):
    sid = study_id(studies_url, HOSTILE)
    open_study(page, site, sid)
    assert page.locator("#study-name").text_content() == HOSTILE
    assert f"note={HOSTILE_PARAM}" in page.locator("#trials td.params").nth(1).text_content()
    # Plotly's hover text parses pseudo-HTML: the note must show as text there too.
    hover = page.evaluate("() => document.getElementById('pareto').data"
                          ".flatMap(t => t.text).join(' ')")
    assert "&lt;img src=x" in hover and "<img" not in hover
    page.goto(f"{site}/studies/{sid}/trials/1")
    assert HOSTILE_PARAM in page.locator("#params").text_content()
    assert page.locator("img").count() == 0
    page.shot("hostile")


def test_new_trials_appear_without_reload(page, tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    study = write_study(url, "live", "FFVR", seed=9)
    with running_server(create_app(open_catalog(url))) as base:
        open_study(page, base, study_id(url, "live"))
        assert sum(plot(page)["points"].values()) == 3
        page.evaluate("() => { window.notReloaded = true; }")
        rng = random.Random(3)
        finish_trial(url, study, 3, "F", rng)
        write_trial(url, study, "X", rng)
        page.wait_for_function("() => document.querySelectorAll('#trials tbody tr').length"
                               " === 5", timeout=10_000)
        page.wait_for_function(
            "() => document.getElementById('pareto').data.reduce((n, t) => n + t.x.length, 0)"
            " === 5", timeout=10_000)
        assert page.evaluate("() => window.notReloaded") is True
        assert "5 trials" in page.locator("#counts").text_content()
        assert page.locator('#trials tr[data-number="4"]').get_attribute("data-state") \
            == "failed"
        page.shot("live")
