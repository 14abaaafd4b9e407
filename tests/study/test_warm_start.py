"""Warm start: an earlier study's Pareto set, re-scored and mapped, seeds a new study.

The earlier study is written straight into autotune's tables (no engine); the new one is made
by ``autotune study start --no-run --warm-start`` and its queue is read back from Optuna.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from autotune import cli
from autotune.space.model import Space, suggest_params
from autotune.store import open_catalog
from autotune.store.attrs import DEFAULT_ATTR, WARM_START_ATTR
from autotune.store.db import repository
from autotune.store.db.session import ensure_schema
from autotune.study.warm_start import (
    WarmStartError,
    fixed_flags,
    hardware_class,
    map_params,
    model_family,
    plan,
    same_family,
    same_hardware,
)

CPU = "CPU, 2 core(s), 1 engine slot"
H100 = "1x GPU (NVIDIA H100 80GB HBM3)"


def _model_dir(root: Path, name: str, model_type: str, arch: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": model_type,
                                                  "architectures": [arch]}))
    return path


def _space_dict(model: Path | str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "new",
        "model": {"path": str(model), "max_model_len": 512,
                  "speculative_variants": {"ngram": {"prompt_lookup_max": 4}}},
        "engine": {"command": ["vllm", "serve"], "devices": "cpu"},
        "workload": {
            "prompts": {"kind": "random", "input_tokens": 16, "output_tokens": 8},
            "num_requests": 4,
            "load": {"kind": "concurrency", "concurrency": 2},
        },
        "slos": {"e2e_p95_ms": 1000},
        "objectives": [
            {"metric": "output_throughput", "direction": "maximize"},
            {"metric": "e2e_p95_ms", "direction": "minimize"},
        ],
        "parameters": {
            "max_num_seqs": {"low": 8, "high": 64, "log": True, "default": 64},
            "enable_chunked_prefill": {"choices": [True, False]},
            "speculative_method": {"choices": ["none", "ngram"]},
            "num_speculative_tokens": {"low": 1, "high": 4,
                                       "when": {"speculative_method": "ngram"}},
        },
        "search": {"trials": 10},
    }
    data.update(overrides)
    return data


# The earlier study swept max_num_batched_tokens (the new space does not) and had a looser SLO
# (2000 ms): its trial 5 was feasible there, not here.
# number: (is_default, state, params, throughput, e2e_p95_ms)
EARLIER = {
    0: (True, "complete", {"max_num_seqs": 64, "max_num_batched_tokens": 2048,
                           "enable_chunked_prefill": True}, 1000.0, 600.0),
    1: (False, "complete", {"max_num_seqs": 32, "max_num_batched_tokens": 256,
                            "enable_chunked_prefill": False}, 1500.0, 900.0),
    2: (False, "complete", {"max_num_seqs": 16, "max_num_batched_tokens": 2048,
                            "enable_chunked_prefill": True, "speculative_method": "ngram",
                            "num_speculative_tokens": 2}, 900.0, 500.0),
    3: (False, "complete", {"max_num_seqs": 128, "max_num_batched_tokens": 2048,
                            "enable_chunked_prefill": True}, 2000.0, 950.0),
    4: (False, "complete", {"max_num_seqs": 32, "max_num_batched_tokens": 2048,
                            "enable_chunked_prefill": False}, 1400.0, 700.0),
    5: (False, "complete", {"max_num_seqs": 64, "max_num_batched_tokens": 4096,
                            "enable_chunked_prefill": True}, 3000.0, 1200.0),
    6: (False, "failed", {"max_num_seqs": 8, "max_num_batched_tokens": 4096,
                          "enable_chunked_prefill": False}, 0.0, 0.0),
    7: (False, "complete", {"max_num_seqs": 16, "max_num_batched_tokens": 256,
                            "enable_chunked_prefill": True}, 800.0, 950.0),
    8: (False, "complete", {"max_num_seqs": 8, "max_num_batched_tokens": 256}, 500.0, 400.0),
}

# On the re-scored front, best throughput first: 3 (out of range), 1, 4 (same as 1 once
# max_num_batched_tokens is dropped), 0 (the defaults), 2, 8.
EXPECTED_SEEDS = [
    {"max_num_seqs": 32, "enable_chunked_prefill": False, "speculative_method": "none"},
    {"max_num_seqs": 16, "enable_chunked_prefill": True, "speculative_method": "ngram",
     "num_speculative_tokens": 2},
    {"max_num_seqs": 8, "enable_chunked_prefill": True, "speculative_method": "none"},
]


def _record_earlier(url: str, *, name: str = "earlier", model: str, hardware: str = CPU,
                    space_yaml: str = "") -> None:
    ensure_schema(url)
    repository.save_study(
        url=url, name=name, space_yaml=space_yaml, space_path="", model=model,
        hardware=hardware,
        objectives=[{"metric": "output_throughput", "direction": "maximize"},
                    {"metric": "e2e_p95_ms", "direction": "minimize"}],
        slos={"e2e_p95_ms": 2000},
    )
    for number, (is_default, state, params, tput, e2e) in EARLIER.items():
        repository.start_trial(url=url, study_name=name, number=number,
                               optuna_trial_id=number, params=params,
                               is_default=is_default, host="h")
        metrics = ({"output_throughput": tput, "e2e_p95_ms": e2e, "error_rate": 0.0}
                   if state == "complete" else {})
        repository.update_trial(url=url, study_name=name, number=number, state=state,
                                metrics=metrics, feasible=state == "complete", finished=True)


# --------------------------------------------------------------------------- pure parts


def test_hardware_classes() -> None:
    assert hardware_class(CPU).kind == "cpu"
    assert hardware_class("CPU cores 0-1, 2 engine slot(s) of 1 core(s)").kind == "cpu"
    two = hardware_class("2x GPU (NVIDIA H100 80GB HBM3)")
    assert two.kind == "gpu" and two.gpus == ("NVIDIA H100 80GB HBM3",)
    assert same_hardware(two, hardware_class(H100))  # the count does not matter
    assert same_hardware(hardware_class(CPU), hardware_class("CPU cores 0-3, 1 engine slot(s)"))
    assert not same_hardware(two, hardware_class("1x GPU (NVIDIA A100-SXM4-80GB)"))
    assert not same_hardware(two, hardware_class(CPU))
    assert not same_hardware(hardware_class(""), hardware_class(CPU))


def test_model_families_from_config_then_names(tmp_path: Path) -> None:
    llama_a = model_family(str(_model_dir(tmp_path, "a", "llama", "LlamaForCausalLM")))
    llama_b = model_family(str(_model_dir(tmp_path, "b", "llama", "LlamaForCausalLM")))
    qwen = model_family(str(_model_dir(tmp_path, "c", "qwen2", "Qwen2ForCausalLM")))
    assert llama_a.model_type == "llama" and llama_a.architectures == ("LlamaForCausalLM",)
    assert same_family(llama_a, llama_b)
    assert not same_family(llama_a, qwen)
    # No readable config.json: the checkpoint's name decides (hub id vs local copy).
    hub = model_family("example-org/Some-Model-8B")
    assert not hub.known
    assert same_family(hub, model_family("/nonexistent/models/some-model-8b/"))
    assert not same_family(hub, model_family("/nonexistent/models/Other-Model-8B"))


def test_map_params_drops_fills_and_respects_when(tmp_path: Path) -> None:
    space = Space.model_validate(_space_dict(tmp_path))
    mapped, problem = map_params(space, {"max_num_seqs": 16, "max_num_batched_tokens": 256,
                                         "num_speculative_tokens": 3})
    assert problem is None
    # max_num_batched_tokens dropped, defaults filled, the draft length inactive without ngram.
    assert mapped == {"max_num_seqs": 16, "enable_chunked_prefill": True,
                      "speculative_method": "none"}
    mapped, _ = map_params(space, {"speculative_method": "ngram"})
    assert mapped == {"max_num_seqs": 64, "enable_chunked_prefill": True,
                      "speculative_method": "ngram", "num_speculative_tokens": 3}
    # A value the earlier study fixed in engine.flags is what its trials really ran with.
    mapped, _ = map_params(space, {"max_num_seqs": 16}, {"enable_chunked_prefill": False})
    assert mapped is not None and mapped["enable_chunked_prefill"] is False


def test_fixed_flags_of_the_earlier_space() -> None:
    text = yaml.safe_dump({"engine": {"flags": {"enable-chunked-prefill": False,
                                                 "kv_cache_memory_bytes": "1G"}}})
    assert fixed_flags(text) == {"enable_chunked_prefill": False}  # only sweepable parameters
    assert fixed_flags("") == {} and fixed_flags("engine: [1, 2]") == {}


@pytest.mark.parametrize(("params", "needle"), [
    ({"max_num_seqs": 128}, "max_num_seqs=128 is outside its range 8..64"),
    ({"max_num_seqs": 12.5}, "max_num_seqs=12.5 is not an integer"),
    ({"enable_chunked_prefill": 1}, "enable_chunked_prefill=1 is not one of its choices"),
    ({"speculative_method": "eagle"}, "speculative_method='eagle' is not one of"),
    ({"speculative_method": "ngram", "num_speculative_tokens": 5}, "outside its range 1..4"),
])
def test_values_outside_the_new_space_are_refused(tmp_path: Path, params: dict[str, Any],
                                                  needle: str) -> None:
    space = Space.model_validate(_space_dict(tmp_path))
    mapped, problem = map_params(space, params)
    assert mapped is None and problem is not None and needle in problem


def test_stepped_ranges_need_values_on_the_step(tmp_path: Path) -> None:
    data = _space_dict(tmp_path)
    data["parameters"]["gpu_memory_utilization"] = {"low": 0.8, "high": 0.95, "step": 0.05}
    space = Space.model_validate(data)
    mapped, problem = map_params(space, {"gpu_memory_utilization": 0.85})
    assert problem is None and mapped is not None
    assert mapped["gpu_memory_utilization"] == pytest.approx(0.85)
    _, problem = map_params(space, {"gpu_memory_utilization": 0.87})
    assert problem is not None and "not on its step" in problem


def test_plan_rescores_under_the_new_space(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    model = _model_dir(tmp_path, "llama", "llama", "LlamaForCausalLM")
    _record_earlier(url, model=str(model))
    space = Space.model_validate(_space_dict(model))
    result = plan(space, source="earlier", catalog=open_catalog(url), model=str(model),
                  hardware=CPU)
    assert result.complete == 8 and result.pareto == 6
    assert result.feasible == 7  # trial 5 misses the new, tighter SLO
    assert result.configurations == EXPECTED_SEEDS
    assert [s.source_trial for s in result.seeds] == [1, 2, 8]
    assert [(s.source_trial, s.reason.split(" is ")[0]) for s in result.skipped] == [
        (3, "max_num_seqs=128"), (4, "in this space it")]
    assert any("vLLM defaults" in note for note in result.notes)


def test_plan_reports_metrics_the_earlier_study_never_measured(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    model = _model_dir(tmp_path, "llama", "llama", "LlamaForCausalLM")
    _record_earlier(url, model=str(model))
    data = _space_dict(model, slos={"e2e_p95_ms": 1000, "ttft_p95_ms": 300})
    data["objectives"].append({"metric": "tpot_p99_ms"})
    result = plan(Space.model_validate(data), source="earlier", catalog=open_catalog(url),
                  model=str(model), hardware=CPU)
    assert not result.seeds  # no trial can be placed without the tpot objective
    assert any("objective tpot_p99_ms was not measured in 8" in n for n in result.notes)
    assert any("constraint ttft_p95_ms was not measured in 8" in n for n in result.notes)


def test_plan_refuses_other_hardware_unless_forced(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    model = _model_dir(tmp_path, "llama", "llama", "LlamaForCausalLM")
    _record_earlier(url, model=str(model), hardware=H100)
    space = Space.model_validate(_space_dict(model))
    with pytest.raises(WarmStartError) as err:
        plan(space, source="earlier", catalog=open_catalog(url), model=str(model), hardware=CPU)
    assert "NVIDIA H100 80GB HBM3" in str(err.value) and "runs on CPU" in str(err.value)
    assert err.value.exit_code == 2
    forced = plan(space, source="earlier", catalog=open_catalog(url), model=str(model),
                  hardware=CPU, force=True)
    assert forced.warnings and forced.configurations == EXPECTED_SEEDS


# --------------------------------------------------------------------------- the command


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.console, "width", 250)
    monkeypatch.setattr(cli.err_console, "width", 250)

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli.app, list(args))

    return run


def _write_space(tmp_path: Path, model: Path) -> Path:
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump(_space_dict(model)))
    return path


def _queue(url: str, name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    study = optuna.load_study(study_name=name, storage=url)
    waiting = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.WAITING])
    return [(t.system_attrs["fixed_params"], t.user_attrs)
            for t in sorted(waiting, key=lambda t: t.number)]


def _nothing_created(url: str, name: str) -> bool:
    names = optuna.get_all_study_names(storage=url)
    return name not in names and open_catalog(url).get_study(name) is None


def test_start_enqueues_defaults_then_the_mapped_front(tmp_path: Path, invoke) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    model = _model_dir(tmp_path, "llama", "llama", "LlamaForCausalLM")
    _record_earlier(url, model=str(model))
    space = _write_space(tmp_path, model)
    result = invoke("study", "start", "--space", str(space), "--storage", url, "--no-run",
                    "--warm-start", "earlier")
    assert result.exit_code == 0, result.output
    assert "warm start from study earlier" in result.output
    assert "skipped trial 3" in result.output and "outside its range 8..64" in result.output
    queue = _queue(url, "new")
    assert queue[0] == (Space.model_validate(_space_dict(model)).default_params(),
                        {DEFAULT_ATTR: True})
    assert [params for params, _ in queue[1:]] == EXPECTED_SEEDS
    assert all(attrs == {WARM_START_ATTR: True} for _, attrs in queue[1:])

    # Started again (a resume): the warm start is not applied twice.
    again = invoke("study", "start", "--space", str(space), "--storage", url, "--no-run",
                   "--warm-start", "earlier")
    assert again.exit_code == 0, again.output
    assert "already exists" in again.output and "ignored" in again.output
    assert _queue(url, "new") == queue

    # Each queued configuration is what the study's trials will really be given.
    study = optuna.load_study(study_name="new", storage=url)
    spec = Space.model_validate(_space_dict(model))
    assert [suggest_params(spec, study.ask()) for _ in queue] == [p for p, _ in queue]


def test_start_from_another_storage(tmp_path: Path, invoke) -> None:
    earlier = f"sqlite:///{tmp_path / 'earlier.db'}"
    url = f"sqlite:///{tmp_path / 'new.db'}"
    model = _model_dir(tmp_path, "llama", "llama", "LlamaForCausalLM")
    _record_earlier(earlier, model=str(model))
    result = invoke("study", "start", "--space", str(_write_space(tmp_path, model)),
                    "--storage", url, "--no-run", "--warm-start", "earlier",
                    "--warm-start-storage", earlier)
    assert result.exit_code == 0, result.output
    assert [params for params, _ in _queue(url, "new")[1:]] == EXPECTED_SEEDS


def test_unknown_study_lists_the_studies_and_creates_nothing(tmp_path: Path, invoke) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    model = _model_dir(tmp_path, "llama", "llama", "LlamaForCausalLM")
    _record_earlier(url, model=str(model))
    _record_earlier(url, name="older", model=str(model))
    space = str(_write_space(tmp_path, model))
    result = invoke("study", "start", "--space", space, "--storage", url, "--no-run",
                    "--warm-start", "nope")
    assert result.exit_code == 2
    assert "no study named 'nope'" in result.output and "earlier, older" in result.output
    assert _nothing_created(url, "new")

    # A storage that does not exist is neither created nor is the new study's.
    missing, new = tmp_path / "missing.db", tmp_path / "new.db"
    result = invoke("study", "start", "--space", space, "--storage", f"sqlite:///{new}",
                    "--no-run", "--warm-start", "earlier", "--warm-start-storage",
                    f"sqlite:///{missing}")
    assert result.exit_code == 2 and "holds no autotune study" in result.output
    assert not missing.exists() and not new.exists()


def test_other_model_family_is_refused_and_nothing_created(tmp_path: Path, invoke) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    qwen = _model_dir(tmp_path, "qwen", "qwen2", "Qwen2ForCausalLM")
    llama = _model_dir(tmp_path, "llama", "llama", "LlamaForCausalLM")
    _record_earlier(url, model=str(qwen))
    result = invoke("study", "start", "--space", str(_write_space(tmp_path, llama)),
                    "--storage", url, "--no-run", "--warm-start", "earlier")
    assert result.exit_code == 2
    assert "model_type qwen2" in result.output and "model_type llama" in result.output
    assert "--warm-start-any" in result.output
    assert _nothing_created(url, "new")


def test_other_hardware_is_refused_unless_forced(tmp_path: Path, invoke) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    model = _model_dir(tmp_path, "llama", "llama", "LlamaForCausalLM")
    _record_earlier(url, model=str(model), hardware=H100)
    space = str(_write_space(tmp_path, model))
    args = ["study", "start", "--space", space, "--storage", url, "--no-run",
            "--warm-start", "earlier"]
    refused = invoke(*args)
    assert refused.exit_code == 2
    assert "GPU (NVIDIA H100 80GB HBM3)" in refused.output and "runs on CPU" in refused.output
    assert _nothing_created(url, "new")
    forced = invoke(*args, "--warm-start-any")
    assert forced.exit_code == 0, forced.output
    assert "warning:" in forced.output
    assert [params for params, _ in _queue(url, "new")[1:]] == EXPECTED_SEEDS


def test_warm_start_options_need_warm_start(tmp_path: Path, invoke) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    model = _model_dir(tmp_path, "llama", "llama", "LlamaForCausalLM")
    result = invoke("study", "start", "--space", str(_write_space(tmp_path, model)),
                    "--storage", url, "--no-run", "--warm-start-any")
    assert result.exit_code == 2 and "need --warm-start STUDY" in result.output
    assert not (tmp_path / "a.db").exists()


# --------------------------------------------------------------------------- end to end


def test_replayed_studies_warm_start_end_to_end(tmp_path: Path) -> None:
    """An earlier study run on the replay engine seeds a new one with a tighter SLO; the seeds
    are run as the new study's trials 1.. and give back the earlier measurements."""
    from autotune.devices import CpuSlotPool
    from autotune.replay import Grid, ReplayTrialRunner
    from autotune.study import StudyRunner

    grid = Grid.load(Path(__file__).resolve().parents[2] / "benchmarks" / "grids"
                     / "quickstart-cpu.jsonl")
    data = grid.space().model_dump(mode="json", exclude_none=True)
    data["model"]["path"] = str(_model_dir(tmp_path, "demo", "llama", "LlamaForCausalLM"))
    data["search"] = {"sampler": "random", "trials": 13}
    earlier_space = Space.model_validate(data)
    new_space = Space.model_validate({**data, "slos": {**data["slos"], "e2e_p95_ms": 2300}})
    url = f"sqlite:///{tmp_path / 'replay.db'}"
    pool = CpuSlotPool(slots=1)

    def study(space: Space, name: str, warm: list[dict[str, Any]]) -> StudyRunner:
        runner = ReplayTrialRunner(space, grid, pool=pool)
        return StudyRunner.create(space, name=name, storage=url, launcher=runner.launcher,
                                  pool=pool, log_dir=tmp_path / "logs", warm_start=warm,
                                  runner=runner)

    complete = sorted((r for r in grid.points if r.state == "complete"),
                      key=lambda r: r.metrics["e2e_p95_ms"])
    failed = [r for r in grid.points if r.state != "complete"]
    chosen = [r.params for r in [*complete[:16:2], *failed[:2], *complete[-2:]]]
    earlier = study(earlier_space, "earlier", chosen)
    earlier.run(n_trials=1 + len(chosen))
    result = plan(new_space, source="earlier", catalog=open_catalog(url),
                  model=new_space.model.path, hardware=pool.describe())
    assert result.seeds, result.notes + [s.reason for s in result.skipped]
    recorded = {t.number: t for t in open_catalog(url).list_trials("earlier")}
    # The tighter SLO matters: some trials feasible in the earlier study are not any more.
    assert any(t.feasible and t.metrics["e2e_p95_ms"] > 2300 for t in recorded.values())
    assert result.feasible < sum(t.feasible for t in recorded.values())
    for seed in result.seeds:
        assert recorded[seed.source_trial].metrics["e2e_p95_ms"] <= 2300
    new = study(new_space, "new", result.configurations)
    new.run(n_trials=1 + len(result.seeds))
    ran = open_catalog(url).list_trials("new")
    assert ran[0].is_default
    assert [t.params for t in ran[1:]] == result.configurations
    for seed, trial in zip(result.seeds, ran[1:], strict=True):
        assert trial.metrics == recorded[seed.source_trial].metrics
