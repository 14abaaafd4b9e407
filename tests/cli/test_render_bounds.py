"""`study show`, the front and the trial view say "≥"/"≤" beside a figure that is a bound
(every load level held the SLOs: autotune.metrics.bound_mark), at 80 columns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console

from autotune.cli.render import pareto_table
from autotune.results.report import load_report
from autotune.store import open_catalog
from tests.cli.test_render import show
from tests.support.bounds import NAME, bound_study_url

NOTE = "≥/≤: a bound, not an exact figure"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return bound_study_url(tmp_path_factory.mktemp("bounds"))


def row(text: str, number: int) -> str:
    return next(line for line in text.splitlines() if re.match(rf"^\s*{number}\*?\s", line))


def test_study_show_marks_the_bound_and_says_why(url: str) -> None:
    text = show(url, NAME, columns=80)
    assert max(map(len, text.splitlines())) <= 80
    # The defaults held every level: capacity ≥ 36 req/s, per-user tok/s at it ≤ 72.
    assert "≥36" in row(text, 0) and "≤72" in row(text, 0)
    # Trial 1 was bracketed (exact 9 req/s) but compared with a bound: its gains are bounds,
    # on capacity at most ×0.25 (the defaults could do more), per user at least ×1.00.
    lines = text.splitlines()
    i = lines.index(row(text, 1))
    one = " ".join(lines[i:i + 2])
    assert re.search(r"\s9\s", one) and "≥9" not in one
    assert "≤×0.25" in one and "≥×1.00" in one
    assert NOTE in " ".join(text.split())


def test_a_study_without_bounds_prints_no_mark(tmp_path: Path) -> None:
    from tests.support.dashboard import QUICKSTART, ladder_study_url

    text = show(ladder_study_url(tmp_path), QUICKSTART, columns=80)
    assert "≥" not in text and "≤" not in text and NOTE not in " ".join(text.split())


def test_the_front_and_wide_table_mark_it(url: str) -> None:
    report = load_report(open_catalog(url), NAME)
    assert 0 in report.pareto_front
    console = Console(width=80, record=True)
    console.print(pareto_table(report))
    front = console.export_text()
    assert "≥36" in row(front, 0) and "≤72" in row(front, 0)
    wide = show(url, NAME, "--wide", columns=200)
    assert "≥36" in row(wide.replace("│", " "), 0) and NOTE in " ".join(wide.split())
    chosen = show(url, NAME, "--columns", "trial,capacity_rps", columns=80)
    assert "≥36" in row(chosen, 0) and NOTE in " ".join(chosen.split())


def test_the_trial_view_marks_objectives_curve_and_constraints(url: str) -> None:
    text = show(url, NAME, "--trial", "0", columns=80)
    flat = " ".join(text.split())
    assert "capacity_rps ≥36" in flat and "interactivity_at_capacity ≤72" in flat
    assert "throughput_per_device_at_capacity ≥2304" in flat
    assert "capacity_is_lower_bound 1" in flat  # the flag itself is no bound
    assert NOTE in flat
    exact = " ".join(show(url, NAME, "--trial", "1", columns=80).split())
    assert "capacity_rps 9 ≤×0.25 vs the defaults" in exact and NOTE not in exact
