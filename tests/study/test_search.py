"""Sampler choice, ordered choices, neighbours and the crash model's threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from autotune.space.model import Space, load_space, suggest_params
from autotune.study.feasibility import (
    THRESHOLD_MAX,
    THRESHOLD_MIN,
    FeasibilityModel,
    Observation,
    adaptive_threshold,
)
from autotune.study.search import (
    choose_sampler,
    complete_params,
    front_neighbours,
    grid_values,
    make_sampler,
    neighbours,
    uses_local_search,
)

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "search_spaces" / "cpu-fixed-load.yaml"


def _space(parameters: dict[str, Any] | None = None, **search: Any) -> Space:
    data = yaml.safe_load(QUICKSTART.read_text())
    data["model"]["build_demo"] = False
    data.pop("quality")
    if parameters is not None:
        data["parameters"] = parameters
    data["search"] = {**data["search"], **search}
    return Space.model_validate(data)


NUMERIC = {
    "max_num_seqs": {"low": 4, "high": 128, "log": True},
    "max_num_batched_tokens": {"choices": [256, 512, 1024, 2048]},
    "enable_chunked_prefill": {"choices": [True, False]},
}


def test_auto_picks_tpe_for_conditional_and_categorical_spaces() -> None:
    choice = choose_sampler(load_space(QUICKSTART))
    assert choice.kind == "tpe"
    assert "num_speculative_tokens" in choice.reason


def test_auto_picks_gp_for_mostly_numeric_spaces_and_nsga2_for_big_budgets() -> None:
    assert choose_sampler(_space(NUMERIC)).kind == "gp"  # 2 of 3 numeric, none conditional
    assert choose_sampler(_space(NUMERIC, trials=500)).kind == "nsga2"
    assert choose_sampler(_space(NUMERIC, sampler="random")).reason == "set in the space file"


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("auto", optuna.samplers.TPESampler),
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("nsga2", optuna.samplers.NSGAIISampler),
        ("gp", optuna.samplers.GPSampler),
    ],
)
def test_make_sampler(kind: str, cls: type) -> None:
    assert isinstance(make_sampler(_space(sampler=kind)), cls)


def test_grid_sampler_enumerates_choices_and_powers_of_two() -> None:
    values = grid_values(_space(NUMERIC, sampler="grid"))
    assert values["max_num_seqs"] == [4, 8, 16, 32, 64, 128]
    assert values["max_num_batched_tokens"] == [256, 512, 1024, 2048]
    assert isinstance(make_sampler(_space(NUMERIC, sampler="grid")), optuna.samplers.GridSampler)
    continuous = {"gpu_memory_utilization": {"low": 0.5, "high": 0.9}}
    with pytest.raises(ValueError, match="gpu_memory_utilization is a continuous range"):
        grid_values(_space(continuous, sampler="grid"))


def test_numeric_choices_are_an_ordered_log_scale() -> None:
    space = _space(NUMERIC)
    spec = space.parameters["max_num_batched_tokens"]
    assert spec.is_ordered and spec.choices_log_scale
    assert not space.parameters["enable_chunked_prefill"].is_ordered
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        params = suggest_params(space, trial)
        seen.add(params["max_num_batched_tokens"])
        # The sampler sees an integer range; the configuration gets the nearest choice.
        dist = trial.distributions["max_num_batched_tokens"]
        assert isinstance(dist, optuna.distributions.IntDistribution) and dist.log
        study.tell(trial, 0.0)
    assert seen == {256, 512, 1024, 2048}
    labels = _space({"max_num_batched_tokens": {"choices": [256, 2048], "ordered": False}})
    assert not labels.parameters["max_num_batched_tokens"].is_ordered


def test_an_enqueued_ordered_choice_comes_back_as_itself() -> None:
    space = _space(NUMERIC)
    study = optuna.create_study()
    study.enqueue_trial({"max_num_batched_tokens": 1024, "max_num_seqs": 16,
                         "enable_chunked_prefill": False})
    params = suggest_params(space, study.ask())
    assert params == {"max_num_seqs": 16, "max_num_batched_tokens": 1024,
                      "enable_chunked_prefill": False}


def test_neighbours_are_one_step_away_and_respect_conditions() -> None:
    space = load_space(QUICKSTART)
    base = {"quantization": "none", "max_num_batched_tokens": 512, "max_num_seqs": 32,
            "enable_chunked_prefill": True, "speculative_method": "none"}
    found = neighbours(space, base)
    changed = [{k for k in set(n) | set(base) if n.get(k) != base.get(k)} for n in found]
    assert {"max_num_batched_tokens": 1024} | {k: v for k, v in base.items()
                                              if k != "max_num_batched_tokens"} in found
    assert {**base, "max_num_seqs": 16} in found and {**base, "max_num_seqs": 64} in found
    assert {**base, "quantization": "fp8"} in found
    # Turning speculative decoding on brings its draft length in, at its default.
    assert {**base, "speculative_method": "ngram", "num_speculative_tokens": 3} in found
    assert all(len(c) == 1 or c == {"speculative_method", "num_speculative_tokens"}
               for c in changed)
    assert base not in found
    assert complete_params(space, {**base, "num_speculative_tokens": 2}) == base


def test_front_neighbours_leave_out_what_is_known() -> None:
    space = _space({"max_num_seqs": {"choices": [8, 16, 32]}})
    from autotune.space.configuration import Configuration

    known = {Configuration({"max_num_seqs": 8}).key()}
    assert front_neighbours(space, [{"max_num_seqs": 16}], known) == [{"max_num_seqs": 32}]
    assert uses_local_search(space)
    assert not uses_local_search(_space(sampler="random"))


def _obs(seq: str) -> list[Observation]:
    return [Observation({"max_num_seqs": 8}, started=c == "s") for c in seq]


def test_threshold_follows_scoot() -> None:
    assert adaptive_threshold([]) == 0.5
    assert adaptive_threshold(_obs("f")) == 0.55
    assert adaptive_threshold(_obs("ffffffff")) == THRESHOLD_MAX
    assert adaptive_threshold(_obs("ssss")) == 0.5
    assert adaptive_threshold(_obs("sssss")) == 0.45
    assert adaptive_threshold(_obs("ssssfsssss")) == 0.5  # a failure resets the streak
    assert adaptive_threshold(_obs("s" * 60)) == THRESHOLD_MIN
    rejected = [Observation({}, started=False, launched=False)]
    assert adaptive_threshold(rejected * 3) == 0.5  # rejected before launch: no launch wasted


def test_model_learns_a_failure_region_and_only_votes_with_both_outcomes() -> None:
    space = _space(NUMERIC)
    ok = [
        Observation({"max_num_seqs": s, "max_num_batched_tokens": b,
                     "enable_chunked_prefill": True}, started=True)
        for s in (4, 8, 16) for b in (256, 512, 1024, 2048)
    ]
    assert FeasibilityModel(space, ok).judge(ok[0].params) is None  # nothing failed yet
    bad = [
        Observation({"max_num_seqs": s, "max_num_batched_tokens": b,
                     "enable_chunked_prefill": True}, started=False)
        for s in (64, 128) for b in (256, 512, 1024, 2048)
    ]
    model = FeasibilityModel(space, ok + bad, seed=0)
    assert model.active and model.threshold == 0.75  # eight failures in a row
    doomed = model.judge({"max_num_seqs": 128, "max_num_batched_tokens": 1024,
                          "enable_chunked_prefill": False})
    fine = model.judge({"max_num_seqs": 8, "max_num_batched_tokens": 1024,
                        "enable_chunked_prefill": False})
    assert doomed is not None and doomed.skip
    assert "P(engine starts) 0.0" in doomed.reason() and "8 of them failed" in doomed.reason()
    assert fine is not None and not fine.skip
