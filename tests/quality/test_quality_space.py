"""The `quality:` section: validation, metric names, constraints, table formatting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from autotune.errors import SpaceError
from autotune.metrics import known_metric_names, natural_direction
from autotune.scoring import constraint_names, is_feasible, violations
from autotune.space.model import Space, load_space
from autotune.space.quality import QUALITY_METRICS, format_quality

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "search_spaces" / "quickstart-cpu.yaml"
# A space without a load ladder: its SLOs are constraints of their own, beside quality's.
FIXED_LOAD = ROOT / "search_spaces" / "cpu-fixed-load.yaml"


def _space(**quality) -> dict:
    data = yaml.safe_load(FIXED_LOAD.read_text())
    data["quality"] = {"prompts": "evals/demo-tasks.jsonl", **quality}
    return data


def _problems(tmp_path: Path, data: dict) -> list[tuple[str, str]]:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    return info.value.problems


def test_quality_metrics_are_known_with_directions() -> None:
    for name, direction in QUALITY_METRICS.items():
        assert name in known_metric_names()
        assert natural_direction(name) == direction
    assert natural_direction("quality_accuracy") == "maximize"
    assert natural_direction("quality_logprob_drift") == "minimize"


def test_quickstart_measures_quality() -> None:
    space = load_space(QUICKSTART)
    assert space.quality is not None
    assert space.quality.reference == "default"


def test_quality_as_an_objective(tmp_path: Path) -> None:
    data = _space()
    data["objectives"].append({"metric": "quality_accuracy"})
    space = Space.model_validate(data)
    assert space.directions[-1] == "maximize"


def test_quality_objective_needs_the_section(tmp_path: Path) -> None:
    data = _space()
    del data["quality"]
    data["objectives"].append({"metric": "quality_top1_agreement"})
    problems = _problems(tmp_path, data)
    assert (
        "objectives",
        "quality_top1_agreement needs a `quality:` section (docs/quality.md)",
    ) in problems


def test_agreement_needs_a_reference(tmp_path: Path) -> None:
    data = _space(reference="none", min={"quality_top1_agreement": 0.98})
    problems = _problems(tmp_path, data)
    assert any(loc == "quality" and "compare with the reference" in msg for loc, msg in problems)
    data = _space(reference="none")
    data["objectives"].append({"metric": "quality_seq_match"})
    assert any("quality.reference is none" in msg for _, msg in _problems(tmp_path, data))


def test_bounds_must_be_quality_metrics(tmp_path: Path) -> None:
    problems = _problems(tmp_path, _space(min={"output_throughput": 10}))
    assert problems[0][0] == "quality.min"
    assert "'output_throughput' is not a quality metric" in problems[0][1]
    problems = _problems(
        tmp_path, _space(min={"quality_accuracy": 0.9}, max={"quality_accuracy": 1})
    )
    assert any("give min or max, not both" in msg for _, msg in problems)
    problems = _problems(tmp_path, _space(num_prompts=0, scorin="exact"))
    assert {loc for loc, _ in problems} == {"quality.num_prompts", "quality.scorin"}


def test_quality_constraints() -> None:
    space = Space.model_validate(
        _space(
            min={"quality_top1_agreement": 0.98, "quality_accuracy_delta": -0.01},
            max={"quality_logprob_drift": 0.05},
        )
    )
    names = constraint_names(space)
    assert {"quality_top1_agreement", "quality_accuracy_delta", "quality_logprob_drift"} <= set(
        names
    )
    good = {
        "error_rate": 0.0,
        "ttft_p95_ms": 1.0,
        "e2e_p95_ms": 1.0,
        "quality_top1_agreement": 0.99,
        "quality_accuracy_delta": -0.005,
        "quality_logprob_drift": 0.01,
    }
    v = violations(space, good)
    assert v["quality_top1_agreement"] == pytest.approx(-0.01)
    assert v["quality_accuracy_delta"] == pytest.approx(-0.005)
    assert v["quality_logprob_drift"] == pytest.approx(-0.04)
    assert is_feasible(v)
    # One point and a half below the reference: infeasible by half a point.
    bad = {**good, "quality_accuracy_delta": -0.015}
    assert violations(space, bad)["quality_accuracy_delta"] == pytest.approx(0.005)
    assert not is_feasible(violations(space, bad))
    # Not measured (no reference, probe failed): violated.
    missing = {k: v for k, v in good.items() if k != "quality_top1_agreement"}
    assert violations(space, missing)["quality_top1_agreement"] == 1.0
    assert (
        violations(space, {**good, "quality_logprob_drift": math.nan})["quality_logprob_drift"]
        == 1.0
    )


@pytest.mark.parametrize(
    ("metric", "value", "text"),
    [
        ("quality_accuracy", 0.9733, "97.3%"),
        ("quality_accuracy_delta", -0.0125, "-1.2 pt"),
        ("quality_accuracy_delta", 0.0, "+0.0 pt"),
        ("quality_top1_agreement", 1.0, "100.0%"),
        ("quality_logprob_drift", 0.001234, "0.00123"),
        ("quality_seq_match", None, "—"),
        ("quality_seq_match", math.nan, "—"),
    ],
)
def test_format_quality(metric: str, value: float | None, text: str) -> None:
    assert format_quality(metric, value) == text
