"""How a trial is recorded: its outcome (or the decision not to launch it) as one
``TrialResult`` for the store — objective values, SLO constraints and the table's columns."""

from __future__ import annotations

from autotune.bench import finite_metrics
from autotune.scoring import (
    failed_values,
    failed_violations,
    is_feasible,
    objective_values,
    violations,
)
from autotune.space import Space
from autotune.store.base import TrialResult, TrialSummary
from autotune.trial import TrialOutcome
from autotune.trial_state import TrialState


def measured(space: Space, outcome: TrialOutcome) -> TrialResult:
    """A trial that ran (or was rejected before launch). A failed configuration is told as
    infeasible with the worst values, unless its failure says nothing about it (Optuna FAIL)."""
    state = TrialState(outcome.state)
    failure = outcome.failure
    if state is TrialState.COMPLETE:
        constraints = violations(space, outcome.metrics)
        values: list[float] | None = objective_values(space, outcome.metrics)
    else:
        constraints = failed_violations(space)
        values = failed_values(space)
    if failure is not None and not failure.kind.blames_config:
        values = None
    timings = outcome.timings
    reason = (
        "; ".join([failure.reason, *outcome.notes]) if failure
        else "; ".join(outcome.notes) or None
    )
    return TrialResult(
        state=state,
        values=values,
        constraints=constraints,
        feasible=state is TrialState.COMPLETE and is_feasible(constraints),
        failure_kind=failure.kind if failure else None,
        reason=reason,
        columns=dict(
            metrics=finite_metrics(outcome.metrics),
            violations=constraints,
            failure_kind=failure.kind.value if failure else None,
            failure_line=failure.line if failure else None,
            measurements=outcome.measurements or None,
            disturbed=outcome.disturbed,
            log_excerpt=outcome.log_excerpt or None,
            log_path=outcome.log_path or None,
            engine_command=outcome.argv,
            engine_flags=outcome.flags,
            model=outcome.model,
            engine_version=outcome.engine_version or None,
            devices=outcome.devices,
            startup_s=timings.get("startup_s"),
            warmup_s=timings.get("warmup_s"),
            benchmark_s=timings.get("benchmark_s"),
            teardown_s=timings.get("teardown_s"),
        ),
    )


def reused(twin: TrialSummary, reason: str) -> TrialResult:
    """The result of the trial that measured the same configuration, told again."""
    assert twin.values is not None
    return TrialResult(
        state=TrialState.REUSED, values=list(twin.values), constraints=dict(twin.constraints),
        failure_kind=twin.failure_kind, reason=reason, reused_from=twin.number,
    )


def skipped(space: Space, reason: str) -> TrialResult:
    """A suggestion the crash model rejects: told as a failure, without an engine."""
    return TrialResult(
        state=TrialState.SKIPPED, values=failed_values(space),
        constraints=failed_violations(space), reason=reason,
    )
