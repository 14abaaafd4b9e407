"""What became of a trial, in autotune's words: one name per state, with its policy."""

from __future__ import annotations

from enum import StrEnum


class TrialState(StrEnum):
    """A trial's state in autotune's table (``autotune_trials.state``).

    Optuna knows less: a reused, skipped or rejected trial is COMPLETE (infeasible) there, an
    interrupted one FAIL. These names are what people, reports and the dashboard see."""

    RUNNING = "running"  # claimed by a worker; its engine may be starting or measuring
    COMPLETE = "complete"  # measured
    FAILED = "failed"  # launched, and the engine or the benchmark failed (see its FailureKind)
    REJECTED = "rejected"  # known to be invalid or not to fit: refused before launch
    INTERRUPTED = "interrupted"  # stopped by the user or its controller died; queued again
    REUSED = "reused"  # a repeated suggestion answered with an earlier trial's result
    SKIPPED = "skipped"  # the crash model predicted a failure: told infeasible, not launched

    @property
    def counts_toward_budget(self) -> bool:
        """Finished by autotune and not to be re-run (running trials count too: they will)."""
        return self in _BUDGET

    @property
    def launched(self) -> bool:
        """Whether an engine was started for it."""
        return self in (TrialState.COMPLETE, TrialState.FAILED)

    @property
    def finished(self) -> bool:
        return self is not TrialState.RUNNING

    @property
    def measured(self) -> bool:
        """Whether its result speaks for its configuration (so a repeat may reuse it)."""
        return self in (TrialState.COMPLETE, TrialState.FAILED, TrialState.REJECTED)


_BUDGET = frozenset(
    {TrialState.RUNNING, TrialState.COMPLETE, TrialState.FAILED, TrialState.REJECTED}
)
