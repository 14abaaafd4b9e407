"""The trial page: metrics grouped with units and readable numbers, the engine log's tail."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import pytest

from autotune.dashboard.logs import TAIL_BYTES, log_tail
from autotune.db import repository
from tests.support.dashboard import MIXED, MIXED_KINDS, study_id
from tests.support.dashboard_studies import enrich_trial, write_study

RICH = 1  # measured (MIXED_KINDS[1] == "V")
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
    page = client_for(url).get(f"/studies/{sid}/trials/{RICH}").text
    block = re.search(r'<pre id="log" class="log">(.*?)</pre>', page, re.S).group(1)
    lines = html.unescape(block).splitlines()
    assert len(lines) == 40
    assert lines[0].startswith("INFO line 60:") and lines[-1].startswith("INFO line 99:")
    assert "&lt;b&gt;engine&lt;/b&gt; &amp; green" in block and "\x1b" not in block
    assert "<b>engine" not in page
    assert "last 40 lines" in page and str(log) in page


def test_without_the_log_file_the_excerpt_is_shown(study, client_for):
    url, sid, logs = study
    repository.update_trial(url=url, study_name=MIXED, number=FAILED,
                            log_path=str(logs / "gone.log"))
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
    repository.update_trial(url=url, study_name=MIXED, number=FAILED, log_path=path)
    page = client_for(url).get(f"/studies/{sid}/trials/{FAILED}").text
    assert "SECRET" not in page
    assert '<pre id="log" class="log">INFO starting engine' in page
    assert log_tail(path) is None


def test_a_large_log_is_read_from_its_end(tmp_path):
    log = tmp_path / "big.log"
    log.write_text(log_lines(20_000))
    assert os.path.getsize(log) > 10 * TAIL_BYTES
    tail = log_tail(str(log)).splitlines()
    assert len(tail) == 40 and tail[-1] == "INFO line 19999: <b>engine</b> & green"
    assert log_tail(str(tmp_path / "none.log")) is None and log_tail(None) is None


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
