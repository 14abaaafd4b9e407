"""What the study does next, decided from its history alone (no database, no engine).

The runner asks Optuna for a suggestion and hands it here with the study's history; the answer
is one small decision: run it, reuse the result of the trial that measured it, skip it (the
crash model predicts a failure), wait for its running twin, wait for other workers, or stop.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from autotune.scoring import is_feasible, pareto_indices
from autotune.space import Configuration, Space, rules, suggest_params
from autotune.store.base import Suggestion, TrialSummary
from autotune.study.feasibility import FeasibilityModel, Observation
from autotune.study.search import (
    LOCAL_SEARCH_AFTER,
    LOCAL_SEARCH_CYCLE,
    SAMPLED_CANDIDATES,
    Point,
    Surrogate,
    all_configurations,
    front_moves,
    front_neighbours,
    random_configurations,
    screen_size,
    screen_step,
    uses_local_search,
    uses_model,
)
from autotune.trial_state import TrialState

# Reused or skipped suggestions in a row before the next trial is an unmeasured configuration
# picked at random (the sampler keeps proposing what it already knows).
MAX_ASKS_PER_CLAIM = 24
ALL_MEASURED = (
    "every configuration of the space is measured (or predicted to fail): the study stops here"
)


@dataclass(frozen=True)
class Run:
    suggestion: Suggestion


@dataclass(frozen=True)
class Reuse:
    """Answer the suggestion with ``twin``'s result; then explore ``neighbour`` (if any)."""

    suggestion: Suggestion
    twin: TrialSummary
    neighbour: Configuration | None = None

    @property
    def reason(self) -> str:
        return (f"the same configuration as trial {self.twin.number}: its result is reused "
                "(search.remeasure: true measures it again)")


@dataclass(frozen=True)
class Skip:
    suggestion: Suggestion
    reason: str


@dataclass(frozen=True)
class WaitForTwin:
    """The same configuration is running now: wait for its result."""

    suggestion: Suggestion
    twin: TrialSummary


@dataclass(frozen=True)
class Wait:
    """The budget is taken, partly by other workers' running trials: if one of them dies, its
    retry must still be run by someone."""


@dataclass(frozen=True)
class Done:
    notice: str | None = None


Decision = Run | Reuse | Skip | WaitForTwin | Wait | Done


@dataclass
class History:
    """What a study knows before its next suggestion."""

    trials: Sequence[TrialSummary]
    measured: dict[str, TrialSummary] = field(default_factory=dict)  # key → a reusable trial
    running: dict[str, TrialSummary] = field(default_factory=dict)  # key → a trial running now
    observations: list[Observation] = field(default_factory=list)  # for the crash model

    @classmethod
    def of(cls, trials: Iterable[TrialSummary]) -> History:
        history = cls(list(trials))
        for t in history.trials:
            if t.configuration is None:
                continue
            key = t.configuration.key()
            if t.running:
                history.running[key] = t
                continue
            if t.state is None or not t.state.measured or t.values is None:
                continue  # reused, skipped, interrupted, host fault, lost worker
            history.measured.setdefault(key, t)
            params = t.configuration.params
            if t.state is TrialState.COMPLETE:
                history.observations.append(Observation(params, started=True))
            elif t.failure_kind is not None and t.failure_kind.caused_by_config:
                history.observations.append(
                    Observation(params, started=False, launched=t.state.launched))
        return history

    @property
    def taken(self) -> int:
        """Trials that count toward the budget."""
        return sum(1 for t in self.trials if t.counts_toward_budget)

    @property
    def known(self) -> set[str]:
        return self.measured.keys() | self.running.keys()

    def front(self, space: Space) -> list[Mapping[str, Any]]:
        """The configurations on the feasible Pareto front of the measured trials."""
        feasible = [t for t in self.measured.values()
                    if t.state is TrialState.COMPLETE and is_feasible(t.constraints)]
        points = [list(t.values or ()) for t in feasible]
        return [feasible[i].configuration.params  # type: ignore[union-attr]
                for i in pareto_indices(points, space.directions)]


class Proposer:
    """The search policy on top of Optuna's sampler: reuse, crash-model skips, local search."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self._model: tuple[History, FeasibilityModel] | None = None
        self._all: tuple[list[dict[str, Any]] | None] | None = None  # the space, enumerated

    def before_asking(
        self, history: History, *, budget: int, running_here: Iterable[int], shared: bool,
    ) -> Wait | Done | Configuration | None:
        """Whether to ask at all; a configuration to queue first (a front neighbour) or None."""
        taken = history.taken
        if taken >= budget:
            mine = set(running_here)
            elsewhere = [t for t in history.trials if t.running and t.number not in mine]
            return Wait() if elsewhere and shared else Done()
        if 1 <= taken <= screen_size(self.space, budget):
            step = screen_step(self.space, history.known, self.space.search.seed)
            if step is not None:
                return Configuration(step)
        if uses_model(self.space) and taken >= 1:
            return self.proposal(history, taken)
        if uses_local_search(self.space) and taken >= LOCAL_SEARCH_AFTER and (
            taken % LOCAL_SEARCH_CYCLE
        ):
            return self.neighbour(history.front(self.space), history, f"front:{taken}")
        return None

    def proposal(self, history: History, taken: int) -> Configuration | Done | None:
        """The model's next configuration, never one measured or running: every other trial a
        front-local move (one or two parameters from a front configuration), the others from
        the whole space; each the candidate with the largest expected hypervolume improvement
        (:class:`Surrogate`), among those the crash model would not skip. Done when the space
        is enumerable and every configuration is measured or predicted to fail; None (the
        sampler's turn) when a sampled set of candidates holds nothing startable."""
        known = history.known
        seed = self.space.search.seed
        rng = random.Random(f"{seed}:model:{taken}")
        universe = self._universe()
        if universe is not None:
            everywhere = [c for c in universe if Configuration(c).key() not in known]
            if not everywhere:
                return Done(ALL_MEASURED)
        else:
            everywhere = [c for c in random_configurations(self.space, SAMPLED_CANDIDATES, rng)
                          if Configuration(c).key() not in known]
        front = history.front(self.space)
        local = front_moves(self.space, front, known) if front else []
        if universe is None:
            everywhere += local
        turn_local = uses_local_search(self.space) and taken % 2 == 1
        candidates = self._startable(local, history) if turn_local else []
        candidates = candidates or self._startable(everywhere, history)
        if not candidates:  # every configuration left is predicted to fail
            return Done(ALL_MEASURED) if universe is not None else None
        rng.shuffle(candidates)  # ties go to a seeded pick, not to the enumeration order
        points = [Point(t.configuration.params, t.values if t.state is TrialState.COMPLETE
                        else None, t.state is TrialState.COMPLETE and is_feasible(t.constraints),
                        t.configuration.is_default)
                  for t in history.measured.values() if t.configuration is not None]
        surrogate = Surrogate(self.space, points, seed)
        if not surrogate.ready:
            return Configuration(candidates[0])
        scores = surrogate.scores(candidates)
        return Configuration(candidates[int(scores.argmax())])

    def _startable(
        self, candidates: list[dict[str, Any]], history: History
    ) -> list[dict[str, Any]]:
        """``candidates`` less those the space's rules reject before launch (known invalid:
        a proposal is never spent on them) and those the crash model would skip."""
        fixed = {k.replace("-", "_"): v for k, v in self.space.engine.flags.items()}
        limit = self.space.model.max_model_len
        candidates = [c for c in candidates
                      if rules.known_before_devices({**fixed, **c}, limit) is None]
        if not self.space.search.crash_learning:
            return candidates
        model = self._crash_model(history)
        if not model.active:
            return candidates
        return [c for c in candidates if not (v := model.judge(c)) or not v.skip]

    def _universe(self) -> list[dict[str, Any]] | None:
        if self._all is None:
            self._all = (all_configurations(self.space),)
        return self._all[0]

    def judge(self, suggestion: Suggestion, history: History) -> Run | Reuse | Skip | WaitForTwin:
        config = suggestion.configuration
        search = self.space.search
        if not config.is_default and not search.remeasure:
            key = config.key()
            if key in history.measured:
                # The sampler returns to what it knows: reuse the result, and explore one
                # step away from it instead (the next ask takes the neighbour).
                return Reuse(suggestion, history.measured[key], self.neighbour(
                    [config.params], history, str(suggestion.number)))
            if key in history.running:
                return WaitForTwin(suggestion, history.running[key])
        if search.crash_learning and not suggestion.runs_as_queued:
            verdict = self._crash_model(history).judge(config.params)
            if verdict is not None and verdict.skip:
                return Skip(suggestion, verdict.reason())
        return Run(suggestion)

    def after_twin(self, suggestion: Suggestion, twin: TrialSummary) -> Run | Reuse:
        """The twin finished: reuse its result if it has a reusable one, else run here."""
        if suggestion.configuration.key() in History.of([twin]).measured:
            return Reuse(suggestion, twin)
        return Run(suggestion)

    def neighbour(
        self, around: Sequence[Mapping[str, Any]], history: History, salt: str
    ) -> Configuration | None:
        """An unmeasured configuration one step from one of ``around``, if there is one."""
        fresh = front_neighbours(self.space, around, history.known)
        if not fresh:
            return None
        return Configuration(random.Random(f"{self.space.search.seed}:{salt}").choice(fresh))

    def unmeasured(self, history: History) -> Configuration | None:
        """A configuration picked at random among those neither measured nor running."""
        seed = (self.space.search.seed or 0) * 1_000_003 + len(history.observations)
        picker = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        known = history.known
        for _ in range(256):
            config = Configuration(suggest_params(self.space, picker.ask()))
            if config.key() not in known:
                return config
        return None

    def _crash_model(self, history: History) -> FeasibilityModel:
        # One fit per history (a claim may judge many suggestions against the same one).
        if self._model is None or self._model[0] is not history:
            self._model = (history, FeasibilityModel(
                self.space, history.observations, self.space.search.seed))
        return self._model[1]
