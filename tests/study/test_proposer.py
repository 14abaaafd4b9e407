"""The proposer alone: hand-made histories in, one decision out. No database, no engine."""

from __future__ import annotations

from typing import Any

from autotune.space.configuration import Configuration
from autotune.space.model import Space
from autotune.store.base import Origin, Suggestion, TrialSummary
from autotune.study.proposer import (
    Done,
    History,
    Proposer,
    Reuse,
    Run,
    Skip,
    Wait,
    WaitForTwin,
)
from autotune.testing.replay_grid import SPACE
from autotune.trial_state import FailureKind, TrialState

BASE = {"max_num_seqs": 16, "max_num_batched_tokens": 2048, "enable_chunked_prefill": True}


def space(**search: Any) -> Space:
    return Space.model_validate({**SPACE, "search": {"seed": 0, **search}})


def config(**changes: Any) -> Configuration:
    return Configuration({**BASE, **changes})


def done(number: int, cfg: Configuration, state: TrialState = TrialState.COMPLETE,
         values: tuple[float, ...] | None = (100.0, 50.0),
         kind: FailureKind | None = None) -> TrialSummary:
    constraints = {"e2e_p95_ms": -0.5, "error_rate": 0.0}
    if state is not TrialState.COMPLETE:
        constraints = {"e2e_p95_ms": 1.0, "error_rate": 1.0}
    return TrialSummary(number, cfg, running=False, state=state, failure_kind=kind,
                        values=values, constraints=constraints)


def running(number: int, cfg: Configuration) -> TrialSummary:
    return TrialSummary(number, cfg, running=True)


def suggest(number: int, cfg: Configuration, origin: Origin = Origin.SAMPLER) -> Suggestion:
    return Suggestion(number, cfg, origin)


def test_history_keeps_what_speaks_for_a_configuration() -> None:
    default = Configuration(BASE, is_default=True)
    history = History.of([
        done(0, default),
        done(1, config(max_num_seqs=8)),
        done(2, config(max_num_seqs=32), TrialState.FAILED, (0.0, 1e5),
             FailureKind.OUT_OF_MEMORY),
        done(3, config(max_num_seqs=64), TrialState.REUSED),
        done(4, config(max_num_seqs=40), TrialState.FAILED, None, FailureKind.HOST_FAULT),
        done(5, config(max_num_seqs=48), TrialState.INTERRUPTED, None, FailureKind.INTERRUPTED),
        running(6, config(max_num_seqs=24)),
    ])
    # The default passes no flags: it is not the twin of its nominal values.
    assert default.key() != Configuration(BASE).key()
    assert set(history.measured) == {default.key(), config(max_num_seqs=8).key(),
                                     config(max_num_seqs=32).key()}
    assert set(history.running) == {config(max_num_seqs=24).key()}
    assert [(o.started, o.launched) for o in history.observations] == [
        (True, True), (True, True), (False, True)]
    assert history.taken == 5  # 0, 1, 2, the host fault 4 (not retried) and the running 6


def test_budget_reached_is_done_alone_and_a_wait_when_others_still_run() -> None:
    proposer = Proposer(space())
    history = History.of([done(0, config()), running(1, config(max_num_seqs=8))])
    assert isinstance(proposer.before_asking(history, budget=2, running_here=[1], shared=True),
                      Done)
    assert isinstance(proposer.before_asking(history, budget=2, running_here=[], shared=True),
                      Wait)
    # One process owns a SQLite study: nobody else's trial can come back.
    assert isinstance(proposer.before_asking(history, budget=2, running_here=[], shared=False),
                      Done)
    # Budget left: a pick to queue (auto's model) or the sampler's turn, never a wait.
    assert not isinstance(
        proposer.before_asking(history, budget=3, running_here=[1], shared=True), Wait | Done)
    assert Proposer(space(sampler="tpe")).before_asking(
        history, budget=3, running_here=[1], shared=True) is None


def test_a_measured_suggestion_is_reused_and_a_neighbour_explored() -> None:
    proposer = Proposer(space(crash_learning=False))
    measured = done(3, config(max_num_seqs=8))
    history = History.of([measured])
    decision = proposer.judge(suggest(4, config(max_num_seqs=8)), history)
    assert isinstance(decision, Reuse) and decision.twin == measured
    assert decision.reason.startswith("the same configuration as trial 3: its result is reused")
    assert decision.neighbour is not None and decision.neighbour.key() not in history.known


def test_a_running_twin_is_waited_for_then_reused_or_rerun() -> None:
    proposer = Proposer(space(crash_learning=False))
    history = History.of([running(2, config())])
    suggestion = suggest(3, config())
    decision = proposer.judge(suggestion, history)
    assert isinstance(decision, WaitForTwin) and decision.twin.number == 2
    assert isinstance(proposer.after_twin(suggestion, done(2, config())), Reuse)
    lost = TrialSummary(2, config(), running=False)  # its worker died: no verdict
    assert isinstance(proposer.after_twin(suggestion, lost), Run)


def test_the_default_and_remeasure_always_run() -> None:
    default = Configuration(BASE, is_default=True)
    history = History.of([done(0, default), done(1, config())])
    assert isinstance(Proposer(space()).judge(suggest(2, default, Origin.DEFAULT), history), Run)
    assert isinstance(Proposer(space(remeasure=True)).judge(suggest(2, config()), history), Run)


def test_the_crash_model_skips_the_sampler_but_never_a_queued_configuration() -> None:
    trials = [done(i, config(max_num_seqs=s, enable_chunked_prefill=c))
              for i, (s, c) in enumerate([(8, True), (8, False), (10, True), (12, False)])]
    trials += [done(4 + i, config(max_num_seqs=s), TrialState.FAILED, (0.0, 1e5),
                    FailureKind.OUT_OF_MEMORY) for i, s in enumerate([48, 56, 64, 60])]
    history = History.of(trials)
    proposer = Proposer(space())
    risky = config(max_num_seqs=62)
    decision = proposer.judge(suggest(9, risky), history)
    assert isinstance(decision, Skip)
    assert decision.reason.startswith("predicted to fail: P(engine starts)")
    for origin in (Origin.QUEUED, Origin.WARM_START):
        assert isinstance(proposer.judge(suggest(9, risky, origin), history), Run)
    assert isinstance(Proposer(space(crash_learning=False)).judge(suggest(9, risky), history),
                      Run)


def test_local_search_queues_an_unmeasured_neighbour_of_the_front() -> None:
    proposer = Proposer(space(sampler="tpe"))
    trials = [done(i, config(max_num_seqs=8 + i), values=(100.0 + i, 50.0 + i))
              for i in range(9)]
    history = History.of(trials)
    pick = proposer.before_asking(history, budget=20, running_here=[], shared=False)
    assert isinstance(pick, Configuration) and pick.key() not in history.known
    front = [dict(p) for p in history.front(space())]
    assert any(sum(pick.params[k] != f[k] for k in f) == 1 for f in front)
    # Every fourth trial is the sampler's own.
    assert proposer.before_asking(History.of(trials[:8]), budget=20, running_here=[],
                                  shared=False) is None


def test_an_unmeasured_pick_is_neither_measured_nor_running() -> None:
    history = History.of([done(0, config()), running(1, config(max_num_seqs=8))])
    pick = Proposer(space()).unmeasured(history)
    assert pick is not None and pick.key() not in history.known


def test_the_screen_moves_each_parameter_one_step_then_measures_its_centre() -> None:
    """At any budget: after the default trial, each parameter (in the space file's order)
    moved one step from the defaults, then the defaults' nominal values as explicit flags (the
    screen's centre), up to half the budget; then the sampler."""
    from autotune.study.search import screen_size

    study = space(sampler="tpe")
    proposer = Proposer(study)
    defaults = Configuration(study.default_params(), True)
    names = list(study.default_params())
    assert screen_size(study, 9) == 4  # 3 parameters and the centre
    assert screen_size(study, 7) == 3 and screen_size(study, 100) == 4  # not off at >= 16
    assert screen_size(space(sampler="random"), 7) == 0
    assert screen_size(space(sampler="tpe", screen=False), 7) == 0
    trials = [done(0, defaults)]
    moved = []
    for number in range(1, 4):
        pick = proposer.before_asking(History.of(trials), budget=9, running_here=[],
                                      shared=False)
        assert isinstance(pick, Configuration) and not pick.is_default
        changed = [k for k in names if pick.params.get(k) != defaults.params[k]]
        assert len(changed) == 1, pick.params
        moved += changed
        trials.append(running(number, pick))  # a running screen step counts as known
    assert moved == [n for n in names if n in moved][:3] and len(set(moved)) == 3
    assert moved[0] == names[0]
    centre = proposer.before_asking(History.of(trials), budget=9, running_here=[],
                                    shared=False)
    assert isinstance(centre, Configuration) and not centre.is_default
    assert centre.params == defaults.params and centre.key() != defaults.key()
    trials.append(running(4, centre))
    # Half the budget screened: the sampler's turn.
    assert proposer.before_asking(History.of(trials), budget=9, running_here=[],
                                  shared=False) is None
