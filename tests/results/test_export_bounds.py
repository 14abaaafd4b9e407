"""The export's header says "≥"/"≤" where the chosen trial's figure is a bound (every load
level held the SLOs: autotune.metrics.bound_mark), and "=" where it is exact."""

from __future__ import annotations

from pathlib import Path

import yaml

from autotune.results.export import export_yaml
from autotune.results.report import load_report
from autotune.store import open_catalog
from tests.support.bounds import NAME, bound_study_url


def test_the_header_marks_bounds_and_bounded_gains(tmp_path: Path) -> None:
    report = load_report(open_catalog(bound_study_url(tmp_path)), NAME)
    bound = export_yaml(report, report.trial(0))
    curve = next(line for line in bound.splitlines() if line.startswith("# load curve:"))
    assert "capacity_rps≥36" in curve and "throughput_per_device_at_capacity≥2304" in curve
    assert "interactivity_at_capacity≤72" in curve and "=" not in curve
    assert "#   ≥/≤: bounds, not exact figures" in bound
    exact = export_yaml(report, report.trial(1))
    curve = next(line for line in exact.splitlines() if line.startswith("# load curve:"))
    assert "capacity_rps=9" in curve and "≥" not in curve and "≤" not in curve
    assert "bounds, not exact figures" not in exact
    # Gains over a default that is a bound are bounds themselves.
    gains = next(line for line in exact.splitlines() if line.startswith("# vs vLLM defaults"))
    assert "capacity_rps ≤0.25x" in gains and "interactivity_at_capacity ≥1.00x" in gains
    # The marks are comments: the YAML is the same.
    assert yaml.safe_load(bound)["model"] == report.trial(0).model
