"""auto's model-based proposer (issue 22): the enumerated space, front-local moves of one and
two parameters, the Gaussian-process surrogate and its expected hypervolume improvement, and
proposals that never repeat a measured configuration. No engine: hand-made histories and the
tiny replay grid."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from autotune.replay import Grid, ReplayTrialRunner
from autotune.space.configuration import Configuration
from autotune.space.model import Space
from autotune.space.sections import ConfirmStageSpec
from autotune.store.attrs import STATE_ATTR
from autotune.store.base import TrialSummary
from autotune.study import SilentReporter, StudyRunner
from autotune.study.proposer import ALL_MEASURED, Done, History, Proposer
from autotune.study.search import (
    Point,
    Surrogate,
    _hv,
    _hv_improvement,
    all_configurations,
    front_moves,
    screen_size,
    uses_model,
)
from autotune.testing.replay_grid import SPACE, write_grid
from autotune.trial_state import TrialState

PARAMS = {
    "max_num_seqs": {"choices": [4, 8, 16, 32, 64, 128, 256]},
    "kv_cache_dtype": {"choices": ["auto", "fp8"]},
    "speculative_method": {"choices": ["none", "ngram"]},
    "num_speculative_tokens": {"choices": [2, 4], "when": {"speculative_method": "ngram"}},
}


def space(parameters: dict[str, Any] | None = None, **search: Any) -> Space:
    model = {**SPACE["model"], "speculative_variants": {"ngram": {"prompt_lookup_max": 4}}}
    return Space.model_validate({**SPACE, "model": model, "parameters": parameters or PARAMS,
                                 "search": {"seed": 0, **search}})


def test_auto_uses_the_model_and_a_named_sampler_is_used_as_named() -> None:
    assert uses_model(space())
    assert not uses_model(space(sampler="tpe")) and not uses_model(space(sampler="random"))
    assert not uses_model(space(trials=500))  # a population method for big budgets


def test_the_space_is_enumerated_with_its_conditions() -> None:
    found = all_configurations(space())
    assert found is not None and len(found) == 7 * 2 * (1 + 2)
    assert {"max_num_seqs": 4, "kv_cache_dtype": "auto", "speculative_method": "none"} in found
    assert all(("num_speculative_tokens" in c) == (c["speculative_method"] == "ngram")
               for c in found)
    assert all_configurations(space(), limit=20) is None  # too many: sampled instead
    continuous = {"gpu_memory_utilization": {"low": 0.5, "high": 0.9}}
    assert all_configurations(space(continuous)) is None


def test_front_moves_are_one_or_two_parameters_away_and_unmeasured() -> None:
    study = space({k: v for k, v in PARAMS.items() if k in ("max_num_seqs", "kv_cache_dtype")})
    front = {"max_num_seqs": 16, "kv_cache_dtype": "auto"}
    known = {Configuration({"max_num_seqs": 32, "kv_cache_dtype": "auto"}).key()}
    moves = front_moves(study, [front], known)
    keys = [Configuration(m).key() for m in moves]
    assert len(keys) == len(set(keys)) and Configuration(front).key() not in keys
    assert not set(keys) & known
    # one step, two steps of one parameter, one step of each of two parameters
    assert {"max_num_seqs": 8, "kv_cache_dtype": "auto"} in moves
    assert {"max_num_seqs": 64, "kv_cache_dtype": "auto"} in moves  # past the measured 32
    assert {"max_num_seqs": 4, "kv_cache_dtype": "auto"} in moves
    assert {"max_num_seqs": 32, "kv_cache_dtype": "fp8"} in moves
    assert {"max_num_seqs": 128, "kv_cache_dtype": "auto"} not in moves  # three steps


def _hv_brute(points: list[list[float]], ref: list[float], cells: int = 60) -> float:
    """Hypervolume by counting grid cells (a cross-check for the exact one)."""
    top = [max(p[j] for p in points) for j in range(len(ref))]
    axes = [np.linspace(r, t, cells + 1) for r, t in zip(ref, top, strict=True)]
    mids = [(a[1:] + a[:-1]) / 2 for a in axes]
    volume = float(np.prod([(t - r) / cells for r, t in zip(ref, top, strict=True)]))
    count = sum(1 for cell in itertools.product(*mids)
                if any(all(c <= v for c, v in zip(cell, p, strict=True)) for p in points))
    return count * volume


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_hypervolume_improvement_is_the_hypervolume_gained(dims: int) -> None:
    rng = random.Random(dims)
    front = np.array([[rng.uniform(1, 10) for _ in range(dims)] for _ in range(4)])
    points = np.array([[rng.uniform(0, 12) for _ in range(dims)] for _ in range(6)])
    ref = np.zeros(dims)
    base = _hv(front.tolist(), ref.tolist())
    gained = _hv_improvement(points, front, ref)
    for point, gain in zip(points, gained, strict=True):
        exact = _hv([*front.tolist(), point.tolist()], ref.tolist()) - base
        assert gain == pytest.approx(exact, abs=1e-9)
    assert _hv(front.tolist(), ref.tolist()) == pytest.approx(
        _hv_brute(front.tolist(), ref.tolist()), rel=0.1)
    assert list(_hv_improvement(points, front[:0], ref)) == pytest.approx(
        [float(np.prod(np.maximum(p, 0))) for p in points])


def _landscape(params: dict[str, Any]) -> list[float]:
    """Throughput rises with max_num_seqs (twice as much with fp8 KV cache); latency too."""
    seqs = params["max_num_seqs"]
    return [seqs * (2.0 if params["kv_cache_dtype"] == "fp8" else 1.0), 100.0 + seqs]


def test_the_surrogate_ranks_by_expected_improvement_of_the_front() -> None:
    study = space({k: v for k, v in PARAMS.items() if k in ("max_num_seqs", "kv_cache_dtype")})
    measured = [{"max_num_seqs": s, "kv_cache_dtype": "auto"} for s in (4, 16, 64)]
    measured.append({"max_num_seqs": 16, "kv_cache_dtype": "fp8"})
    surrogate = Surrogate(study, [Point(p, _landscape(p), True) for p in measured], 0)
    assert surrogate.ready
    candidates = all_configurations(study)
    assert candidates is not None
    scores = dict(zip([Configuration(c).key() for c in candidates], surrogate.scores(candidates),
                      strict=True))
    best = max(scores, key=scores.__getitem__)
    # the trend: more sequences, more throughput (the latency stays within its SLO)
    assert best in {Configuration({"max_num_seqs": s, "kv_cache_dtype": k}).key()
                    for s in (128, 256) for k in ("auto", "fp8")}
    fp8 = Configuration({"max_num_seqs": 64, "kv_cache_dtype": "fp8"}).key()
    assert scores[fp8] > scores[Configuration({"max_num_seqs": 8, "kv_cache_dtype": "auto"}).key()]
    # nothing expected from a configuration the model has seen dominated
    assert scores[Configuration(measured[0]).key()] < 0.01 * scores[best]


def test_the_default_trial_is_on_the_front_but_no_evidence_for_its_twin() -> None:
    study = space({k: v for k, v in PARAMS.items() if k in ("max_num_seqs", "kv_cache_dtype")})
    twin = {"max_num_seqs": 16, "kv_cache_dtype": "auto"}
    others = [{"max_num_seqs": s, "kv_cache_dtype": "auto"} for s in (4, 64)]
    points = [Point(p, _landscape(p), True) for p in others]
    bad = Surrogate(study, [*points, Point(twin, [1.0, 500.0], True, default=True)], 0)
    assert bad.scores([twin])[0] > 0  # a poor default says nothing of its nominal twin
    great = Surrogate(study, [*points, Point(twin, [1e4, 1.0], True, default=True)], 0)
    assert great.scores([twin])[0] < bad.scores([twin])[0]  # it has to beat the default


def test_one_missed_slo_dents_its_region_and_several_close_it() -> None:
    study = space({k: v for k, v in PARAMS.items() if k in ("max_num_seqs", "kv_cache_dtype")})
    met = [Point({"max_num_seqs": s, "kv_cache_dtype": "auto"},
                 _landscape({"max_num_seqs": s, "kv_cache_dtype": "auto"}), True)
           for s in (4, 16, 64, 256)]
    lone = {"max_num_seqs": 32, "kv_cache_dtype": "fp8"}
    once = Surrogate(study, [*met, Point(lone, [500.0, 90.0], False)], 0)
    assert once.feasibility is not None
    chance = once.feasibility.predict(once._scaled(np.array([once.encoder.row(lone)])))[0]
    assert 0.3 < chance < 0.8  # a single miss may be a noisy run: dented, not ruled out
    misses = [Point({"max_num_seqs": s, "kv_cache_dtype": "fp8"}, [500.0, 90.0], False)
              for s in (16, 32, 64, 128)]
    many = Surrogate(study, [*met, *misses], 0)
    assert many.feasibility is not None
    near = {"max_num_seqs": 8, "kv_cache_dtype": "fp8"}
    away = {"max_num_seqs": 8, "kv_cache_dtype": "auto"}
    closed, open_ = many.feasibility.predict(
        many._scaled(np.array([many.encoder.row(near), many.encoder.row(away)])))
    assert closed < 0.35 < 0.7 < open_  # a region of misses is avoided, its twin side is not


def _done(number: int, params: dict[str, Any], values: list[float]) -> TrialSummary:
    return TrialSummary(number, Configuration(params), running=False,
                        state=TrialState.COMPLETE, values=tuple(values),
                        constraints={"e2e_p95_ms": -0.5, "error_rate": 0.0})


def test_the_proposer_never_proposes_a_known_configuration_and_ends_when_all_are() -> None:
    study = space()
    proposer = Proposer(study)
    default = Configuration(study.default_params(), True)
    trials = [TrialSummary(0, default, running=False, state=TrialState.COMPLETE,
                           values=(50.0, 200.0), constraints={"e2e_p95_ms": -0.5})]
    universe = all_configurations(study)
    assert universe is not None
    seen: set[str] = set()
    for number in range(1, len(universe) + 1):
        history = History.of(trials)
        pick = proposer.before_asking(history, budget=100, running_here=[], shared=False)
        assert isinstance(pick, Configuration), (number, pick)
        assert pick.key() not in history.known and pick.key() not in seen
        seen.add(pick.key())
        # half the picks stay running (parallel slots): still known, never proposed again
        trials.append(TrialSummary(number, pick, running=True) if number % 2 else
                      _done(number, dict(pick.params), _landscape(dict(pick.params))))
    assert seen == {Configuration(c).key() for c in universe}
    last = proposer.before_asking(History.of(trials), budget=100, running_here=[],
                                  shared=False)
    assert isinstance(last, Done) and last.notice == ALL_MEASURED
    assert screen_size(study, 100) == 1 + 3  # the centre, then three parameters


def test_the_proposer_never_spends_a_proposal_on_a_configuration_the_rules_reject() -> None:
    # Chunked prefill off with 256 batched tokens < max_model_len 512, or fewer batched
    # tokens than sequences: vLLM refuses to start, known before any engine (space.rules).
    study = space({"max_num_batched_tokens": {"choices": [256, 2048]},
                   "max_num_seqs": {"choices": [128, 512]},
                   "enable_chunked_prefill": {"choices": [True, False]}})
    proposer = Proposer(study)
    trials = [TrialSummary(0, Configuration(study.default_params(), True), running=False,
                           state=TrialState.COMPLETE, values=(50.0, 200.0),
                           constraints={"e2e_p95_ms": -0.5})]
    proposed = []
    for number in range(1, 9):
        pick = proposer.before_asking(History.of(trials), budget=100, running_here=[],
                                      shared=False)
        if isinstance(pick, Done):
            break
        assert isinstance(pick, Configuration), pick
        proposed.append(dict(pick.params))
        seqs = pick.params["max_num_seqs"]
        trials.append(_done(number, dict(pick.params), [float(seqs), 100.0 + seqs]))
    assert proposed, "nothing was proposed"
    for params in proposed:
        assert not (params["enable_chunked_prefill"] is False
                    and params["max_num_batched_tokens"] < 512), params
        assert params["max_num_batched_tokens"] >= params["max_num_seqs"], params


class _Quiet(SilentReporter):
    def notice(self, text: str) -> None:
        pass


def test_an_auto_study_on_a_grid_measures_each_configuration_once(tmp_path: Path) -> None:
    grid = Grid.load(write_grid(tmp_path / "grid.jsonl"))
    base = grid.search_space(grid.space())
    study_space = base.model_copy(update={"search": base.search.model_copy(update={
        "sampler": "auto", "seed": 0, "trials": 40,
        "confirm_stage": ConfirmStageSpec(enabled=False)})})
    runner = ReplayTrialRunner(study_space, grid)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    StudyRunner.create(study_space, name="s", storage=storage, launcher=runner.launcher,
                       pool=runner.pool, log_dir=tmp_path / "logs", reporter=_Quiet(),
                       runner=runner).run(n_trials=40)
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    states = [t.user_attrs.get(STATE_ATTR) for t in trials]
    # every proposal was something new: no suggestion answered by reuse, none skipped
    assert set(states) <= {"complete", "failed", "rejected"}, states
    keys = [(repr(sorted(t.params.items())), bool(t.user_attrs.get("autotune:default")))
            for t in trials]
    assert len(keys) == len(set(keys))  # the default trial and its nominal twin are two
    assert len(trials) < len(grid.rows)  # what the crash model predicts to fail is left
