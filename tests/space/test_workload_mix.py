"""A weighted mix of workloads: the ``workloads:`` / ``aggregate:`` schema (valid files, each
error with its field and line, exit 2 and nothing written), the metric naming, the aggregation
arithmetic, the scoring of a mix, and one trial of a mix measured on the mock OpenAI server."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.bench.http_step import HttpMeasurement
from autotune.devices import CpuSlotPool
from autotune.errors import SpaceError
from autotune.scoring import constraint_names, objective_values, slos_hold, violations
from autotune.space.model import Space, load_space
from autotune.space.workload_mix import (
    ATTAINMENT_WEIGHTED,
    ATTAINMENT_WORST,
    AggregateSpec,
    NamedWorkload,
    aggregate,
    metric_direction,
    split_metric,
)
from autotune.store.db import repository
from autotune.store.synthetic import write_study
from autotune.testing.mock_engine import MockLauncher
from autotune.testing.mock_openai import Behaviour
from autotune.trial import TrialRunner

ROOT = Path(__file__).resolve().parents[2]
NO_ENGINE = ["{python}", "-c", "raise SystemExit(3)"]


def _workload(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "prompts": {"kind": "random", "input_tokens": input_tokens,
                    "output_tokens": output_tokens},
        "num_requests": 6, "warmup_requests": 1,
        "load": {"kind": "concurrency", "concurrency": 2}, "request_timeout_s": 10,
    }


MIX: dict[str, Any] = {
    "name": "mix",
    "model": {"path": "/nonexistent/mock-model", "max_model_len": 512},
    "engine": {"command": NO_ENGINE, "flags": {"dtype": "float16"}},
    "workloads": {
        "chat": {"weight": 7, "workload": _workload(8, 4), "slos": {"ttft_p95_ms": 500}},
        "rag": {"weight": 3, "workload": _workload(32, 2),
                "slos": {"ttft_p95_ms": 3000, "e2e_p95_ms": 9000}},
    },
    "aggregate": {"min_slo_attainment": 0.9},
    "objectives": [{"metric": "request_goodput"}, {"metric": "chat.ttft_p95_ms"}],
    "measurement": {"max_repeats": 0},
    "parameters": {"max_num_seqs": {"choices": [8, 16], "default": 16}},
}


def _mix(**update: Any) -> dict[str, Any]:
    data = copy.deepcopy(MIX)
    data.update(update)
    return data


def _problems(tmp_path: Path, data: dict[str, Any]) -> tuple[Path, list[tuple[str, str]]]:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    return path, info.value.problems


def _line(path: Path, text: str, after: int = 0) -> int:
    """The 1-based number of the first line from ``after`` on that contains ``text``."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if i > after and text in line)


# --- schema -------------------------------------------------------------------------------


def test_a_mix_loads_with_normalised_weights_and_named_slos(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(MIX, sort_keys=False))
    space = load_space(path)
    assert space.is_mix and space.workload is None
    assert [(e.name, e.weight) for e in space.mix] == [("chat", 0.7), ("rag", 0.3)]
    assert space.primary_workload.prompts.input_tokens == 8  # the first listed
    assert space.slo_limits == {"chat.ttft_p95_ms": 500, "rag.ttft_p95_ms": 3000,
                                "rag.e2e_p95_ms": 9000}
    assert constraint_names(space) == [
        "chat.ttft_p95_ms", "rag.ttft_p95_ms", "rag.e2e_p95_ms", "error_rate", ATTAINMENT_WORST]
    assert space.directions == ["maximize", "minimize"]
    assert space.aggregation.throughput == "weighted" and space.aggregation.latency == "worst"
    # What the study stores and a worker reads back is the same space.
    again = Space.model_validate(yaml.safe_load(yaml.safe_dump(space.model_dump(mode="json"))))
    assert again == space


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_single_workload_space_is_one_unnamed_workload(path: Path) -> None:
    space = load_space(path)
    assert not space.is_mix and space.workload is not None
    (entry,) = space.mix
    assert entry.name == "" and entry.weight == 1.0 and entry.prefix == ""
    assert entry.workload == space.workload == space.primary_workload
    assert entry.slos == space.slos == space.slo_limits
    assert ATTAINMENT_WORST not in constraint_names(space)


def test_both_workload_and_workloads_is_refused_on_its_line(tmp_path: Path) -> None:
    path, problems = _problems(tmp_path, _mix(workload=_workload(8, 4)))
    assert (f"workloads (line {_line(path, 'workloads:')})",
            "give either `workload` or `workloads`, not both") in problems


def test_neither_workload_nor_workloads_is_refused(tmp_path: Path) -> None:
    data = _mix()
    del data["workloads"]
    _, problems = _problems(tmp_path, data)
    assert any(loc == "workload" and "give `workload` (one workload) or `workloads`" in msg
               for loc, msg in problems)


def test_field_errors_inside_a_mix_name_the_field_and_its_line(tmp_path: Path) -> None:
    data = _mix()
    data["workloads"]["rag"]["weight"] = 0
    data["workloads"]["rag"]["slos"] = {"ttft_p97_ms": 10}
    data["workloads"]["chat"]["workload"]["load"]["concurency"] = 3
    data["workloads"]["chat"]["sloz"] = {}
    path, problems = _problems(tmp_path, data)
    rag = _line(path, "rag:")
    chat = _line(path, "chat:")
    found = dict(problems)
    assert found[f"workloads.rag.weight (line {_line(path, 'weight:', rag)})"] == (
        "Input should be greater than 0")
    assert "unknown SLO 'ttft_p97_ms'" in found[
        f"workloads.rag.slos (line {_line(path, 'slos:', rag)})"]
    assert found[f"workloads.chat.workload.load.concurency (line "
                 f"{_line(path, 'concurency:', chat)})"] == "unknown key"
    assert found[f"workloads.chat.sloz (line {_line(path, 'sloz:', chat)})"] == "unknown key"


def test_aggregate_errors_name_their_line(tmp_path: Path) -> None:
    path, problems = _problems(tmp_path, _mix(aggregate={"throughput": "median",
                                                         "min_slo_attainment": 1.5}))
    found = dict(problems)
    assert "'weighted' or 'worst'" in found[
        f"aggregate.throughput (line {_line(path, 'throughput:')})"]
    assert "less than or equal to 1" in found[
        f"aggregate.min_slo_attainment (line {_line(path, 'min_slo_attainment:')})"]


def test_mix_cross_checks(tmp_path: Path) -> None:
    data = _mix(slos={"ttft_p95_ms": 500})
    data["workloads"]["long context"] = data["workloads"].pop("rag")
    data["objectives"] = [{"metric": "rag.output_throughput"}]
    path, problems = _problems(tmp_path, data)
    found = dict(problems)
    assert found["slos"].startswith("with `workloads`, SLOs go under each workload")
    assert "a workload's name is a letter" in found[
        f"workloads.long context (line {_line(path, 'long context:')})"]
    objectives = _line(path, "objectives:")
    assert found[f"objectives[0].metric (line {_line(path, 'metric:', objectives)})"] == (
        "'rag.output_throughput' names no workload here (workloads: chat, long context)")


def test_empty_mix_is_refused(tmp_path: Path) -> None:
    _, problems = _problems(tmp_path, _mix(workloads={}))
    assert any(loc.startswith("workloads") and "at least one workload" in msg
               for loc, msg in problems)


def test_metrics_that_cannot_exist_are_refused(tmp_path: Path) -> None:
    # A per-workload quality or capacity figure: those belong to the trial.
    _, problems = _problems(tmp_path, _mix(objectives=[{"metric": "chat.quality_accuracy"}]))
    assert any(loc == "objectives[0].metric" and "not a per-workload metric" in msg
               for loc, msg in problems)
    _, problems = _problems(tmp_path, _mix(objectives=[{"metric": "chat.bogus_ms"}]))
    assert any(loc == "objectives[0].metric" for loc, _ in problems)
    # A mix's names in a single-workload space.
    single = _mix(workload=_workload(8, 4), objectives=[{"metric": ATTAINMENT_WORST},
                                                        {"metric": "chat.ttft_p95_ms"}])
    del single["workloads"]
    path, problems = _problems(tmp_path, single)
    found = dict(problems)
    first = _line(path, "metric:", _line(path, "objectives:"))
    assert "goodput_fraction" in found[f"objectives[0].metric (line {first})"]
    assert "exists only in a mix" in found[
        f"objectives[1].metric (line {_line(path, 'metric:', first)})"]
    assert found[f"aggregate (line {_line(path, 'aggregate:')})"] == (
        "only with `workloads` (a mix of workloads)")


def test_a_bad_mix_exits_2_before_anything_is_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    data = _mix()
    data["workloads"]["rag"]["weight"] = -1
    space = work / "mix.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "COLUMNS": "200"}
    env.pop("AUTOTUNE_STORAGE", None)
    run = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "study", "start", "--space", str(space),
         "--storage", f"sqlite:///{work / 'study.db'}", "--trials", "1"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    line = _line(space, "weight:", _line(space, "rag:"))
    assert f"{space}: invalid search space" in run.stderr
    assert f"workloads.rag.weight (line {line}): Input should be greater than 0" in run.stderr
    assert sorted(p.name for p in work.iterdir()) == ["mix.yaml"]  # nothing written


# --- naming and arithmetic ----------------------------------------------------------------


def test_metric_names_and_directions() -> None:
    assert split_metric("chat.ttft_p95_ms") == ("chat", "ttft_p95_ms")
    assert split_metric("long-ctx.output_throughput") == ("long-ctx", "output_throughput")
    assert split_metric("ttft_p95_ms") == (None, "ttft_p95_ms")
    assert metric_direction("chat.ttft_p95_ms") == "minimize"
    assert metric_direction("rag.request_goodput") == "maximize"
    assert metric_direction(ATTAINMENT_WORST) == metric_direction(ATTAINMENT_WEIGHTED) == (
        "maximize")


def _two() -> list[NamedWorkload]:
    space = Space.model_validate(MIX)
    return space.mix


CHAT = {"output_throughput": 100.0, "request_goodput": 4.0, "goodput_fraction": 0.9,
        "request_throughput": 5.0, "ttft_p95_ms": 200.0, "e2e_p95_ms": 900.0,
        "error_rate": 0.0, "completed": 50.0, "duration_s": 10.0,
        "cpu_util_peak_pct": 180.0, "cpu_util_mean_pct": 150.0, "output_throughput_cv": 0.05}
RAG = {"output_throughput": 40.0, "request_goodput": 1.0, "goodput_fraction": 0.5,
       "request_throughput": 2.0, "ttft_p95_ms": 2500.0, "e2e_p95_ms": 4000.0,
       "error_rate": 0.1, "completed": 18.0, "duration_s": 9.0,
       "cpu_util_peak_pct": 195.0, "cpu_util_mean_pct": 170.0, "output_throughput_cv": 0.2}


def test_aggregates_by_default() -> None:
    out = aggregate(_two(), AggregateSpec(), {"chat": CHAT, "rag": RAG})
    for name, figures in (("chat", CHAT), ("rag", RAG)):
        assert all(out[f"{name}.{k}"] == v for k, v in figures.items())
    assert out["request_goodput"] == pytest.approx(0.7 * 4.0 + 0.3 * 1.0)  # weighted goodput
    assert out["output_throughput"] == pytest.approx(0.7 * 100 + 0.3 * 40)
    assert out["request_throughput"] == pytest.approx(0.7 * 5 + 0.3 * 2)
    assert out[ATTAINMENT_WORST] == 0.5
    assert out[ATTAINMENT_WEIGHTED] == pytest.approx(0.7 * 0.9 + 0.3 * 0.5)
    assert out["goodput_fraction"] == out[ATTAINMENT_WEIGHTED]
    assert out["ttft_p95_ms"] == 2500.0 and out["e2e_p95_ms"] == 4000.0  # worst
    assert out["error_rate"] == 0.1  # the worst workload's
    assert out["completed"] == 68.0 and out["duration_s"] == 19.0
    assert out["cpu_util_peak_pct"] == 195.0
    assert out["cpu_util_mean_pct"] == pytest.approx(0.7 * 150 + 0.3 * 170)
    assert "output_throughput_cv" not in out  # a measurement's own figure: per workload only


def test_aggregates_by_the_other_rules() -> None:
    spec = AggregateSpec(throughput="worst", latency="weighted")
    out = aggregate(_two(), spec, {"chat": CHAT, "rag": RAG})
    assert out["request_goodput"] == 1.0 and out["output_throughput"] == 40.0
    assert out["goodput_fraction"] == out[ATTAINMENT_WORST] == 0.5
    assert out[ATTAINMENT_WEIGHTED] == pytest.approx(0.7 * 0.9 + 0.3 * 0.5)  # either rule
    assert out["ttft_p95_ms"] == pytest.approx(0.7 * 200 + 0.3 * 2500)


def test_unknown_and_missing_figures() -> None:
    rag = {**RAG, "ttft_p95_ms": math.nan}
    rag.pop("e2e_p95_ms")
    out = aggregate(_two(), AggregateSpec(), {"chat": CHAT, "rag": rag})
    assert math.isnan(out["ttft_p95_ms"])  # not measurable in one workload: unknown
    assert "e2e_p95_ms" not in out and out["chat.e2e_p95_ms"] == 900.0
    # A trial that stopped after its first workload: aggregates over what was measured.
    only = aggregate(_two(), AggregateSpec(), {"chat": CHAT})
    assert only["output_throughput"] == pytest.approx(100.0) and "rag.completed" not in only


# --- scoring --------------------------------------------------------------------------------


def test_a_mix_is_scored_by_its_named_slos_and_worst_attainment() -> None:
    space = Space.model_validate(MIX)
    metrics = aggregate(space.mix, space.aggregation, {"chat": CHAT, "rag": RAG})
    found = violations(space, metrics)
    assert found["chat.ttft_p95_ms"] == pytest.approx((200 - 500) / 500)
    assert found["rag.ttft_p95_ms"] == pytest.approx((2500 - 3000) / 3000)
    assert found["rag.e2e_p95_ms"] == pytest.approx((4000 - 9000) / 9000)
    assert found[ATTAINMENT_WORST] == pytest.approx(0.9 - 0.5)  # infeasible
    assert found["error_rate"] == pytest.approx(0.1)
    assert objective_values(space, metrics) == [pytest.approx(0.7 * 4 + 0.3 * 1), 200.0]
    unmeasured = violations(space, {})
    assert unmeasured[ATTAINMENT_WORST] == 1.0 and unmeasured["chat.ttft_p95_ms"] == 1.0
    # The capacity search judges its load points by the primary workload's SLOs alone.
    assert slos_hold(space, {"ttft_p95_ms": 499, "error_rate": 0.0})
    assert not slos_hold(space, {"ttft_p95_ms": 501, "error_rate": 0.0})


# --- one trial of a mix, through TrialRunner, on the mock OpenAI server ---------------------


def test_a_trial_measures_each_workload_on_one_server(tmp_path: Path) -> None:
    data = _mix(engine={"command": ["vllm", "serve"]})
    for entry in data["workloads"].values():  # one wave each: the totals count every request
        entry["workload"]["steady_state"] = None
    space = Space.model_validate(data)
    launcher = MockLauncher(Behaviour(token_delay_s=0.002))
    runner = TrialRunner(space, launcher, CpuSlotPool(slots=1), tmp_path / "logs")
    assert isinstance(runner.measuring, HttpMeasurement)
    phases: list[str] = []
    outcome = runner.run(1, {"max_num_seqs": 8}, is_default=False, on_phase=phases.append)
    assert outcome.state == "complete", outcome.failure
    assert phases == ["waiting for devices", "starting engine", "benchmarking chat",
                      "benchmarking rag", "tearing down"]
    (engine,) = launcher.started  # one server for both workloads
    m = outcome.metrics
    assert m["chat.total_output_tokens"] == 6 * 4 and m["rag.total_output_tokens"] == 6 * 2
    assert m["chat.total_input_tokens"] == 6 * 8 and m["rag.total_input_tokens"] == 6 * 32
    assert m["total_output_tokens"] == 36
    assert m["request_goodput"] == pytest.approx(
        0.7 * m["chat.request_goodput"] + 0.3 * m["rag.request_goodput"])
    assert m[ATTAINMENT_WORST] == min(m["chat.goodput_fraction"], m["rag.goodput_fraction"])
    assert m["ttft_p95_ms"] == max(m["chat.ttft_p95_ms"], m["rag.ttft_p95_ms"])
    assert [x.get("workload") for x in outcome.measurements] == ["chat", "rag"]
    assert outcome.timings["benchmark_s"] == pytest.approx(
        sum(x["metrics"]["duration_s"] for x in outcome.measurements), rel=0.01)
    sent = [s for s in engine.server.requests if s.path == "/v1/completions"]
    assert len(sent) == 2 * (1 + 6)  # each workload's warm-up and measured requests
    assert sorted(s.body["max_tokens"] for s in sent) == [2] * 7 + [4] * 7
    result = json.loads((tmp_path / "logs" / "trial-0001.result.json").read_text())
    assert result["chat.completed"] == 6 and result["rag.completed"] == 6


def test_the_documented_example_is_a_valid_mix() -> None:
    doc = (ROOT / "docs" / "search-space.md").read_text()
    section = doc[doc.index("## Several workloads"):]
    example = section[section.index("```yaml\n") + 8:section.index("```\n", section.index(
        "```yaml\n") + 8)]
    data = {**copy.deepcopy(MIX), **yaml.safe_load(example)}
    space = Space.model_validate(data)
    assert [(e.name, e.weight) for e in space.mix] == [("chat", 0.7), ("rag", 0.3)]
    assert space.aggregation.min_slo_attainment == 0.95
    assert constraint_names(space)[:3] == ["chat.ttft_p95_ms", "chat.tpot_p95_ms",
                                           "rag.ttft_p95_ms"]


def test_study_show_lists_each_workloads_figures_in_a_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mix.db'}"
    write_study(url, "mix", "F")
    record = repository.get_trial(url=url, study_name="mix", number=0)
    assert record is not None
    per_workload = {"chat.ttft_p95_ms": 123.4, "rag.ttft_p95_ms": 2345.6,
                    "chat.output_throughput": 111.5, "rag.output_throughput": 42.25,
                    "rag.prefix_cache_hit_rate": 0.0125}
    repository.update_trial(url=url, study_name="mix", number=0, metrics={
        **record.metrics, **per_workload, ATTAINMENT_WORST: 0.625})
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "autotune.cli", "study", "show", "mix",
                          "--storage", url, "--trial", "0"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    text = run.stdout
    table = text[text.index("per workload"):text.index("timings, s")]
    header = next(line for line in table.splitlines() if "chat" in line)
    assert header.split() == ["metric", "chat", "rag"]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:] if line.strip()}
    assert rows["output_throughput"] == ["111.5", "42.25"]
    assert rows["ttft_p95_ms"] == ["123.4", "2345.6"]
    assert rows["prefix_cache_hit_rate"] == ["—", "0.0125"]
    assert ATTAINMENT_WORST in text[:text.index("per workload")]  # with the aggregates
    assert "chat." not in text and "rag." not in text  # not repeated elsewhere, prefixed


def test_a_missing_dataset_of_a_mix_is_named_by_its_workload(tmp_path: Path) -> None:
    from autotune.space.model import check_data_files

    data = copy.deepcopy(MIX)
    (tmp_path / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    data["workloads"]["chat"]["workload"]["prompts"] = {"kind": "chat",
                                                        "path": str(tmp_path / "chat.jsonl")}
    data["workloads"]["rag"]["workload"]["prompts"] = {"kind": "trace", "format": "azure",
                                                       "path": str(tmp_path)}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpaceError) as info:
        check_data_files(load_space(path), path)
    line = _line(path, "path:", after=_line(path, "rag:"))
    assert info.value.problems == [(f"workloads.rag.workload.prompts.path (line {line})",
                                    f"{str(tmp_path)!r} is a folder, not a file")]
