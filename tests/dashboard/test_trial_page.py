"""The trial page: metrics grouped with units and readable numbers, the engine log's tail."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pytest

from autotune.bench.ladder import levels_of
from autotune.dashboard.logs import TAIL_BYTES, log_tail
from autotune.store.synthetic import SLOS, add_ladder, enrich_trial, point_log, write_study
from tests.support.dashboard import MIXED, MIXED_KINDS, ladder_study_url, study_id

RICH = 1  # measured (MIXED_KINDS[1] == "V")
LADDER_TRIAL = 2  # measured (MIXED_KINDS[2] == "F")
FAILED = MIXED_KINDS.index("X")


def log_lines(n: int) -> str:
    return "".join(f"INFO line {i}: <b>engine</b> & \x1b[32mgreen\x1b[0m\n" for i in range(n))


@pytest.fixture
def study(tmp_path: Path) -> tuple[str, int, Path]:
    url = f"sqlite:///{tmp_path / 'trial.db'}"
    write_study(url, MIXED, MIXED_KINDS, seed=3)
    logs = tmp_path / "logs" / MIXED
    logs.mkdir(parents=True)
    return url, study_id(url, MIXED), logs


def visible(page: str) -> str:
    """The page's text as shown: tags and their attributes (tooltips) dropped."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_metrics_are_grouped_with_units_and_readable_numbers(study, client_for):
    url, sid, logs = study
    enrich_trial(url, MIXED, RICH, None)
    page = client_for(url).get(f"/studies/{sid}/trials/{RICH}").text
    headings = re.findall(r'<h3 class="group" id="group-(\w+)">', page)
    assert headings == ["latency", "throughput", "engine", "resources", "quality", "cost",
                        "other"]
    text = visible(page)
    assert not re.search(r"\d\.\d+e[+-]\d\d", text), "a raw float on the page"
    for shown in ("2,097,152 tokens", "0.9%", "12.3 ms", "87.2%", "73.7 GiB", "$0.587",
                  "-1.2 pt", "96 requests", "2,097,152"):
        assert shown in text
    # The exact value stays one hover away.
    assert 'title="2.09715e+06"' in page
    # Within a group, known metrics in their order; unknown ones under "other".
    other = page[page.index('id="group-other"'):]
    assert "some_plugin_gauge" in other
    engine = page[page.index('id="group-engine"'):page.index('id="group-resources"')]
    assert engine.index("preemptions") < engine.index("kv_cache_tokens")


def test_the_log_tail_is_shown_escaped(study, client_for):
    url, sid, logs = study
    log = logs / f"trial-{RICH:04d}.log"
    log.write_text(log_lines(100))
    enrich_trial(url, MIXED, RICH, str(log))
    page = client_for(url, log_dir=logs.parent).get(f"/studies/{sid}/trials/{RICH}").text
    block = re.search(r'<pre id="log" class="log">(.*?)</pre>', page, re.S).group(1)
    lines = html.unescape(block).splitlines()
    assert len(lines) == 40
    assert lines[0].startswith("INFO line 60:") and lines[-1].startswith("INFO line 99:")
    assert "&lt;b&gt;engine&lt;/b&gt; &amp; green" in block and "\x1b" not in block
    assert "<b>engine" not in page
    assert "last 40 lines" in page and str(log) in page


def test_without_the_log_file_the_excerpt_is_shown(study, client_for):
    url, sid, logs = study
    point_log(url, MIXED, FAILED, str(logs / "gone.log"))
    page = client_for(url).get(f"/studies/{sid}/trials/{FAILED}").text
    assert '<pre id="log" class="log">INFO starting engine' in page
    assert "excerpt" in page


@pytest.mark.parametrize("how", ["symlink out", "dot-dot", "not a log"])
def test_nothing_outside_the_log_directory_is_read(study, client_for, tmp_path, how):
    url, sid, logs = study
    secret = tmp_path / "secret.log"
    secret.write_text("SECRET\n")
    (tmp_path / "secret.txt").write_text("SECRET\n")
    if how == "symlink out":
        (logs / "trial-0004.log").symlink_to(secret)
        path = str(logs / "trial-0004.log")
    elif how == "dot-dot":
        path = str(logs / ".." / ".." / "secret.log")
    else:
        path = str(tmp_path / "secret.txt")
    point_log(url, MIXED, FAILED, path)
    page = client_for(url, log_dir=logs.parent).get(f"/studies/{sid}/trials/{FAILED}").text
    assert "SECRET" not in page
    assert '<pre id="log" class="log">INFO starting engine' in page
    assert log_tail(path, logs.parent) is None and log_tail(path, tmp_path) is None


def test_a_large_log_is_read_from_its_end(tmp_path):
    log = tmp_path / "big.log"
    log.write_text(log_lines(20_000))
    assert os.path.getsize(log) > 10 * TAIL_BYTES
    tail = log_tail(str(log), tmp_path).splitlines()
    assert len(tail) == 40 and tail[-1] == "INFO line 19999: <b>engine</b> & green"
    assert log_tail(str(tmp_path / "none.log"), tmp_path) is None
    assert log_tail(None, tmp_path) is None


def test_compare_groups_metrics_with_units(study, client_for):
    url, sid, _ = study
    enrich_trial(url, MIXED, RICH, None)
    page = client_for(url).get(f"/studies/{sid}/compare?trials=0,{RICH}").text
    sections = re.findall(r'<tr class="section"><th colspan="3">(\w+)</th>', page)
    assert sections == ["parameters", "latency", "throughput", "engine", "resources",
                        "quality", "cost", "other", "failure"]
    text = visible(page)
    assert "2,097,152 tokens" in text and " tok/s" in text
    assert not re.search(r"\d\.\d+e[+-]\d\d", text)


def test_the_load_curve_is_served_for_a_trial_with_levels_only(study, client_for):
    url, sid, _ = study
    curve_metrics = add_ladder(url, MIXED, LADDER_TRIAL, [1, 2, 4, 8])
    client = client_for(url)
    served = client.get(f"/api/studies/{sid}/trials/{LADDER_TRIAL}").json()
    levels = levels_of(served["measurements"])
    curve = served["load_curve"]
    # The ladder stopped at the first level over an SLO: 2 held, 1 missed, reason recorded.
    assert [lv["holds"] for lv in levels] == [True, True, False]
    assert [row["holds"] for row in curve["levels"]] == [True, True, False]
    assert curve["stop_reason"] == levels[-1]["stop_reason"]
    assert curve["stop_reason"].startswith("level 3 (concurrency 4) missed the SLOs")
    traces = {t["name"]: t for t in curve["figure"]["data"]}
    assert [round(x, 4) for x in traces["load curve"]["x"]] == [
        round(lv["metrics"]["request_throughput"], 4) for lv in levels]
    assert [round(y, 3) for y in traces["load curve"]["y"]] == [
        round(1000 / lv["metrics"]["tpot_mean_ms"], 3) for lv in levels]
    assert len(traces["level held the SLOs"]["x"]) == 2
    assert len(traces["level missed an SLO"]["x"]) == 1
    capacity = traces["capacity at SLO"]
    assert capacity["x"] == [pytest.approx(curve_metrics["capacity_rps"], rel=1e-5)]
    assert capacity["y"] == [pytest.approx(curve_metrics["interactivity_at_capacity"], rel=1e-5)]
    # Capacity lies between the last level that held and the one that missed.
    assert traces["level held the SLOs"]["x"][-1] < capacity["x"][0] \
        < traces["level missed an SLO"]["x"][0]
    assert set(traces) >= {f"{m} (from arrival)" for m in SLOS}
    layout = curve["figure"]["layout"]
    assert "req/s" in layout["xaxis"]["title"]["text"]
    assert "tok/s" in layout["yaxis"]["title"]["text"]
    assert "ms" in layout["yaxis2"]["title"]["text"]

    page = client.get(f"/studies/{sid}/trials/{LADDER_TRIAL}").text
    data = re.search(r'<script type="application/json" id="curve-data">(.*?)</script>',
                     page, re.S).group(1)
    assert json.loads(data) == curve["figure"]
    assert "/static/trial.js" in page and 'id="load-curve"' in page
    assert "stopped early: level 3 (concurrency 4)" in visible(page)
    # The curve metrics are one group, with units.
    block = page[page.index('id="group-capacity"'):]
    block = block[:block.index("</table>")]
    assert re.findall(r"<tr><th>(\w+)</th>", block)[:3] == [
        "capacity_rps", "capacity_is_lower_bound", "throughput_per_device_at_capacity"]
    assert "0.982 req/s" in visible(block) and "tok/s" in visible(block)

    # A trial without levels: no curve in the API, nothing on its page.
    assert client.get(f"/api/studies/{sid}/trials/{RICH}").json()["load_curve"] is None
    plain = client.get(f"/studies/{sid}/trials/{RICH}").text
    assert "curve-data" not in plain and "load-curve" not in plain
    assert "trial.js" not in plain and "plotly" not in plain


@pytest.mark.parametrize("levels", [[1, 2], [4, 8]], ids=["all held", "first missed"])
def test_the_curve_says_a_lower_bound_or_no_capacity(study, client_for, levels):
    url, sid, _ = study
    curve_metrics = add_ladder(url, MIXED, LADDER_TRIAL, levels)
    client = client_for(url)
    curve = client.get(f"/api/studies/{sid}/trials/{LADDER_TRIAL}").json()["load_curve"]
    names = {t["name"]: len(t["x"]) for t in curve["figure"]["data"]}
    text = visible(client.get(f"/studies/{sid}/trials/{LADDER_TRIAL}").text)
    if curve_metrics["capacity_is_lower_bound"]:  # every level held: the star on the top one
        assert names["level held the SLOs"] == 2 and "level missed an SLO" not in names
        assert names["capacity at SLO"] == 1 and curve["stop_reason"] is None
        assert "a lower bound: every level held" in text and "stopped early" not in text
    else:  # the first level missed: capacity 0, no star, the ladder stopped there
        assert curve_metrics["capacity_rps"] == 0
        assert names == {"load curve": 1, "level missed an SLO": 1,
                         **{f"{m} (from arrival)": 1 for m in SLOS}}
        assert "no level held the SLOs" in text
        assert "stopped early: level 1 (concurrency 4) missed the SLOs: no level can hold" in text


def test_a_complete_trials_reason_is_a_note_not_a_failure(study, client_for, tmp_path):
    ladder_url = ladder_study_url(tmp_path)
    sid = study_id(ladder_url, "quickstart-cpu")
    # Trial 6 is on the front; its ladder stopped early (a note, not a failure).
    page = client_for(ladder_url).get(f"/studies/{sid}/trials/6").text
    note = page[page.index('id="trial-note"'):]
    assert "<h2>Note</h2>" in note and "load ladder stopped early" in note
    assert 'id="failure"' not in page and "Failure" not in visible(page)
    url, mixed, _ = study
    failed = client_for(url).get(f"/studies/{mixed}/trials/{FAILED}").text
    assert 'id="failure"' in failed and "Failure:" in visible(failed)
    assert 'id="trial-note"' not in failed


def test_the_fresh_server_interval_is_shown_as_the_cli_reports_it(client_for, tmp_path):
    from autotune.results.noise_model import study_noise_model
    from autotune.results.report import load_report
    from autotune.store import open_catalog

    url = ladder_study_url(tmp_path)
    catalog = open_catalog(url)
    sid = study_id(url, "quickstart-cpu")
    for number, basis in ((1, "prior and 1 configuration(s) measured on several fresh servers, "
                              "5 df"), (2, "prior and 1 configuration(s)")):
        trial = next(t for t in catalog.list_trials("quickstart-cpu") if t.number == number)
        intervals = study_noise_model(catalog, "quickstart-cpu").intervals(trial)
        assert set(intervals) == {"capacity_rps", "interactivity_at_capacity"}
        text = visible(client_for(url).get(f"/studies/{sid}/trials/{number}").text)
        shown = " ".join(text[text.index("What a fresh server will measure (95% interval)"):
                              text.index("SLOs")].split())
        # Trial 1 was confirmed on 5 fresh servers (its interval narrowed, centred on them);
        # trial 2 was not, but the spread they measured applies to it too.
        low, high = intervals["capacity_rps"].low, intervals["capacity_rps"].high
        # the page shows the report's figure: the mean over the trial's fresh servers
        shown_figure = load_report(catalog, "quickstart-cpu").trial(number).metrics
        assert f"capacity_rps {shown_figure['capacity_rps']:.3g} req/s {low:.3g} req/s – " \
               f"{high:.3g} req/s ±{intervals['capacity_rps'].spread.sigma:.0%}" in shown
        assert basis in shown
