"""Numbers of a space file must be finite (issue 24, item 10): an SLO of ``.nan`` used to pass
(``nan <= 0`` is false) and then every trial "met" it; a rate, timeout or time scale of ``.inf``
(or the string ``"inf"``, which pydantic reads as infinity) would stall a study. Each is refused
by ``load_space`` naming the field and its line."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.errors import SpaceError
from autotune.space.model import load_space
from autotune.space.reading import line_of, parse
from autotune.space.workload_mix import check_slos

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = yaml.safe_load((ROOT / "search_spaces" / "quickstart-cpu.yaml").read_text())
NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_check_slos_refuses_numbers_that_are_not_finite(value: float) -> None:
    with pytest.raises(ValueError, match="SLO ttft_p95_ms must be a finite number > 0"):
        check_slos({"ttft_p95_ms": value})


def _set(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def _problems(tmp_path: Path, data: dict[str, Any]) -> tuple[Path, list[tuple[str, str]]]:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(SpaceError) as raised:
        load_space(path)
    return path, raised.value.problems


def _mix() -> dict[str, Any]:
    data = copy.deepcopy(QUICKSTART)
    workload = data.pop("workload")
    del data["slos"]
    data["workloads"] = {"chat": {"weight": 1, "workload": workload,
                                  "slos": {"ttft_p95_ms": 1000}}}
    return data


@pytest.mark.parametrize("keys,value", [
    (("slos", "ttft_p95_ms"), NAN),                       # the SLO of the report: `.nan`
    (("slos", "e2e_p95_ms"), INF),
    (("workload", "load"), {"kind": "poisson", "rate": INF}),
    (("workload", "request_timeout_s"), "inf"),           # a string pydantic reads as inf
    (("workload", "stall_timeout_s"), INF),
    (("workload", "steady_state", "min_duration_s"), INF),
    (("engine", "startup_timeout_s"), INF),
    (("engine", "flags", "swap_space"), NAN),
    (("parameters", "max_num_seqs", "high"), INF),
    (("quality", "min", "quality_accuracy_delta"), NAN),
    (("search", "seed"), NAN),
])
def test_numbers_that_are_not_finite_are_refused_with_field_and_line(
    tmp_path: Path, keys: tuple[str, ...], value: Any
) -> None:
    data = copy.deepcopy(QUICKSTART)
    _set(data, keys, value)
    path, problems = _problems(tmp_path, data)
    field = ".".join(keys) + (".rate" if isinstance(value, dict) else "")
    node = parse(str(path), path.read_text())[1]
    line = line_of(node, tuple(field.split(".")))
    assert line is not None
    assert any(loc == f"{field} (line {line})" and "finite" in msg for loc, msg in problems), \
        problems


def test_a_mix_slo_that_is_not_finite_is_refused_with_field_and_line(tmp_path: Path) -> None:
    data = _mix()
    data["workloads"]["chat"]["slos"]["ttft_p95_ms"] = NAN
    path, problems = _problems(tmp_path, data)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if ".nan" in text)
    assert any(loc == f"workloads.chat.slos.ttft_p95_ms (line {line})" and "finite" in msg
               for loc, msg in problems), problems


def test_the_shipped_spaces_have_finite_numbers() -> None:
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        load_space(path)
