"""Claiming the next trial: ask the store for suggestions and let the proposer judge them,
answering reuses and crash-model skips on the spot (no engine, no budget), until one is worth
running here or the proposer says wait or stop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from autotune.space import Space
from autotune.store import Origin, StudyStore
from autotune.study import recording
from autotune.study.executor import Executor
from autotune.study.proposer import (
    ALL_MEASURED,
    MAX_ASKS_PER_CLAIM,
    Decision,
    Done,
    History,
    Proposer,
    Reuse,
    Run,
    Skip,
    Wait,
    WaitForTwin,
)


class Claims:
    """The claims of one process's slots, one at a time (``lock``) and across processes
    (the store's ``claim_lock``)."""

    def __init__(
        self, space: Space, store: StudyStore, proposer: Proposer, executor: Executor,
        stop: threading.Event, notice: Callable[[str], None],
    ) -> None:
        self.space = space
        self.store = store
        self.proposer = proposer
        self.executor = executor
        self.stop = stop
        self.notice = notice
        self.lock = threading.RLock()
        self.claimed_here = 0

    def next(
        self, budget: int, running_here: Collection[int], max_here: int | None
    ) -> tuple[Decision, int]:
        """The next thing this slot does, and its trial's index in the study. Suggestions
        already measured are answered with their result, those the crash model rejects are
        told as failures, all without an engine and without counting toward the budget."""
        with self.lock, self.store.claim_lock():
            if self.stop.is_set() or (max_here is not None and self.claimed_here >= max_here):
                return Done(), 0
            history = History.of(self.store.trials())
            first = self.proposer.before_asking(
                history, budget=budget, running_here=running_here, shared=self.store.shared)
            if isinstance(first, (Wait, Done)):
                return first, 0
            if first is not None:
                self.store.enqueue(first, Origin.STUDY)
            for ask in range(MAX_ASKS_PER_CLAIM + 1):
                if ask == MAX_ASKS_PER_CLAIM:
                    pick = self.proposer.unmeasured(history)
                    if pick is None:
                        return Done(ALL_MEASURED), 0
                    self.store.enqueue(pick, Origin.STUDY)
                decision = self.proposer.judge(self.store.ask(self.space), history)
                if isinstance(decision, Reuse):
                    self._reuse(decision)
                    if decision.neighbour is not None:
                        self.store.enqueue(decision.neighbour, Origin.STUDY)
                    continue
                if isinstance(decision, Skip):
                    self.store.finish(decision.suggestion.number,
                                      recording.skipped(self.space, decision.reason))
                    continue
                self.claimed_here += 1
                if isinstance(decision, Run):
                    self.store.start(decision.suggestion)
                return decision, history.taken + 1
        # Even the unmeasured pick was predicted to fail: nothing worth an engine is left.
        return Done(), 0

    def _reuse(self, decision: Reuse) -> None:
        self.store.finish(decision.suggestion.number,
                          recording.reused(decision.twin, decision.reason))

    def wait_for_twin(self, claim: WaitForTwin) -> Run | None:
        """Wait for the running trial with the same configuration, then reuse its result (or,
        if it did not finish with one, run the configuration here)."""
        number, retry = claim.suggestion.number, self.executor.with_db_retry
        self.notice(f"trial {number}: the same configuration as trial {claim.twin.number}, "
                    "which is running; waiting for its result")
        with self.store.heartbeat(number):
            while (twin := retry("waiting for a trial",
                                 lambda: self.store.trial(claim.twin.number))).running:
                if self.stop.wait(1.0):
                    retry("withdrawing a suggestion", lambda: self.store.withdraw(
                        number, f"stopped while waiting for trial {claim.twin.number} "
                                "(the same configuration)"))
                    return None
        with self.lock:
            decision = self.proposer.after_twin(claim.suggestion, twin)
            if isinstance(decision, Reuse):
                retry("reusing a result", lambda: self._reuse(decision))
                return None
            self.store.start(decision.suggestion)
            return decision
