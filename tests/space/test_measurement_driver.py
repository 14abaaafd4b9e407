"""``measurement.driver``: the built-in driver by default; ``vllm_bench`` only with a workload
``vllm bench serve`` can run, refused at load otherwise with the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.errors import SpaceError
from autotune.space.model import load_space
from autotune.testing.spaces import small_space, write_space


def _space(tmp_path: Path, driver: str | None, **workload: object) -> Path:
    data = small_space(tmp_path, tmp_path / "model")
    if driver is not None:
        data["measurement"]["driver"] = driver
    data["workload"].update(workload)
    return write_space(tmp_path, data)


def test_the_builtin_driver_is_the_default(tmp_path: Path) -> None:
    assert load_space(_space(tmp_path, None)).measurement.driver == "builtin"


@pytest.mark.parametrize("workload", [
    {},
    {"load": {"kind": "poisson", "rate": 4.0, "max_concurrency": 8}},
    {"prompts": {"kind": "shared_prefix", "num_prefixes": 2, "prefix_tokens": 32,
                 "suffix_tokens": 8, "output_tokens": 8}},
    {"prompts": {"kind": "sharegpt", "path": "data.json", "output_tokens": 16}},
    {"prompts": {"kind": "jsonl", "path": "data.jsonl", "field": "text", "output_tokens": 8}},
    {"prompts": {"kind": "sharegpt", "path": "data.json", "too_long": "truncate",
                 "output_tokens": 8}},
])
def test_vllm_bench_takes_what_it_can_run(tmp_path: Path, workload: dict) -> None:
    assert load_space(_space(tmp_path, "vllm_bench", **workload)).measurement.driver \
        == "vllm_bench"


@pytest.mark.parametrize(("workload", "why"), [
    ({"prompts": {"kind": "trace", "path": "t.csv", "format": "azure"},
      "load": {"kind": "trace"}}, "cannot replay a trace"),
    ({"prompts": {"kind": "chat", "path": "c.jsonl"}}, "no chat JSONL dataset"),
    ({"prompts": {"kind": "sharegpt", "path": "s.json", "multi_turn": {}}}, "first turn only"),
    ({"prompts": {"kind": "sharegpt", "path": "s.json"}}, "give output_tokens a number"),
    ({"prompts": {"kind": "jsonl", "path": "d.jsonl",
                  "output_tokens": {"kind": "uniform", "low": 4, "high": 8}}},
     "one output length for every prompt"),
    ({"prompts": {"kind": "shared_prefix", "num_prefixes": 2, "prefix_tokens": 32,
                  "suffix_tokens": 8, "output_tokens": 8, "api": "chat"}}, "api chat"),
])
def test_vllm_bench_refuses_what_it_cannot_run(tmp_path: Path, workload: dict, why: str) -> None:
    with pytest.raises(SpaceError) as refused:
        load_space(_space(tmp_path, "vllm_bench", **workload))
    assert "measurement.driver" in str(refused.value)
    assert why in str(refused.value)


def test_vllm_bench_refuses_a_mix(tmp_path: Path) -> None:
    data = small_space(tmp_path, tmp_path / "model")
    data["measurement"]["driver"] = "vllm_bench"
    workload = data.pop("workload")
    data["workloads"] = {"a": {"weight": 1, "workload": workload, "slos": data.pop("slos")}}
    with pytest.raises(SpaceError, match=r"measurement\.driver.*a mix of workloads"):
        load_space(write_space(tmp_path, data))


def test_an_unknown_driver_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"measurement\.driver"):
        load_space(_space(tmp_path, "guidellm"))
