"""What became of a trial, in autotune's words: one name per state and one per failure, each with
its policy.

A leaf module: the store records these names, the engines classify their failures into
``FailureKind`` (engines/failures.py reads the logs), the study acts on both."""

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


class FailureKind(StrEnum):
    """Why a trial failed or was rejected (``autotune_trials.failure_kind``)."""

    INVALID_CONFIG = "invalid_config"  # the engine (or a rule before launch) refused the flags
    OUT_OF_MEMORY = "out_of_memory"  # weights or KV cache did not fit
    UNSUPPORTED = "unsupported"  # method/dtype not available on this hardware or build
    STARTUP_TIMEOUT = "startup_timeout"  # no /health within the timeout
    CRASHED = "crashed"  # the engine died for a reason we do not recognise
    BENCHMARK_FAILED = "benchmark_failed"  # started, but the load could not be served
    HOST_FAULT = "host_fault"  # the host, not the config (e.g. SIGILL from a bf16 kernel)
    # The moment, not the config: a port taken, a kill we did not send, a full disk, a start
    # that hangs, a healthy server's failed benchmark. Retried in the trial; never reused.
    TRANSIENT = "transient"
    INTERRUPTED = "interrupted"  # the user stopped the study during this trial
    WORKER_LOST = "worker_lost"  # its worker process died (no heartbeat); retried elsewhere

    @property
    def caused_by_config(self) -> bool:
        """Whether the crash model learns from it: the configuration itself failed."""
        return self in (
            FailureKind.INVALID_CONFIG,
            FailureKind.OUT_OF_MEMORY,
            FailureKind.UNSUPPORTED,
        )

    @property
    def blames_config(self) -> bool:
        """Whether Optuna is told the configuration is infeasible (samplers avoid its region).

        Otherwise the trial is an Optuna FAIL, which samplers ignore: a host fault or an
        interruption says nothing about the configuration."""
        return self not in (
            FailureKind.HOST_FAULT, FailureKind.INTERRUPTED, FailureKind.TRANSIENT
        )

    @property
    def retried(self) -> bool:
        """Whether the configuration is queued again instead of counting as measured."""
        return self in (FailureKind.INTERRUPTED, FailureKind.WORKER_LOST)
