"""The study storage boundary: what the study loop, reports and the dashboard may ask of a
database. The docstrings here are the contract; implementations live in private modules of
this package and say little more. What a reader gets back are frozen values (``StudyView``,
``TrialView``, ``TrialSummary``, ``FreshRun``), never rows of the database: autotune's tables
(``autotune.store.db``) are private to this package.

A study lives in two places: Optuna's tables (what samplers need: parameters, objective values,
constraints) and autotune's tables (what people need: every metric, the failure and its log
line, the engine command, timings). A ``StudyStore`` is the only code that writes either, and it
keeps them in step: a trial's state is written once per transition (started, then finished with
one ``TrialResult``), Optuna first, and ``reconcile`` repairs what a crash between the two
writes left behind.

Thread safety: one ``StudyStore`` may be shared by the threads of one process. Several
processes share a study only on a server database (``shared`` is True): claims are then
serialised by ``claim_lock`` and dead workers are found through heartbeats.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from autotune.space import Configuration
from autotune.store.values import StudyView, TrialView
from autotune.trial_state import FailureKind, TrialState

if TYPE_CHECKING:
    import optuna

    from autotune.quality import Reference
    from autotune.space import Space

__all__ = [
    "Catalog",
    "FreshRun",
    "Origin",
    "StaleTrial",
    "StudyFacts",
    "StudyStore",
    "Suggestion",
    "TrialResult",
    "TrialSummary",
]


class Origin(StrEnum):
    """Who put a configuration in front of the study."""

    DEFAULT = "default"  # vLLM's defaults: the first trial of every study
    WARM_START = "warm_start"  # an earlier study's Pareto set
    QUEUED = "queued"  # queued again (an interrupted or lost trial), runs as it is
    STUDY = "study"  # the study's own pick: a front neighbour or an unmeasured configuration
    SAMPLER = "sampler"  # Optuna's sampler


@dataclass(frozen=True)
class Suggestion:
    """A started Optuna trial and the configuration it asks to run."""

    number: int
    configuration: Configuration
    origin: Origin
    retry_of: int | None = None  # the trial whose worker died, when this is its retry

    @property
    def runs_as_queued(self) -> bool:
        """Queued by the user or the study's bookkeeping: never skipped by the crash model."""
        return self.origin in (Origin.DEFAULT, Origin.WARM_START, Origin.QUEUED)


@dataclass(frozen=True)
class TrialSummary:
    """What the study loop knows of one trial: no metrics, no database handle."""

    number: int
    configuration: Configuration | None  # None: the trial never reached autotune
    running: bool  # Optuna says RUNNING
    state: TrialState | None = None  # autotune's verdict, once it has one
    failure_kind: FailureKind | None = None
    values: tuple[float, ...] | None = None  # told to Optuna (None: FAIL or not finished)
    constraints: Mapping[str, float] = field(default_factory=dict)

    @property
    def counts_toward_budget(self) -> bool:
        """Finished by autotune and not to be re-run, or running now. Interrupted trials and
        trials whose worker died are retried, and the retry counts instead."""
        if self.running:
            return True
        return (
            self.state is not None
            and self.state.counts_toward_budget
            and not (self.failure_kind is not None and self.failure_kind.retried)
        )


@dataclass
class TrialResult:
    """How a trial ended, written by ``StudyStore.finish`` in one go.

    ``values`` None tells Optuna FAIL (samplers ignore it); otherwise the values and
    ``constraints`` are told (a failed configuration gets the worst values and violated
    constraints, so samplers learn to avoid it). ``columns`` are further columns of autotune's
    trial table (metrics, timings, the engine command, ...)."""

    state: TrialState
    values: list[float] | None
    constraints: dict[str, float] = field(default_factory=dict)
    feasible: bool = False
    failure_kind: FailureKind | None = None
    reason: str | None = None  # the failure's reason, or why the trial did not launch
    reused_from: int | None = None
    columns: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyFacts:
    """The study's own record: what it tunes and how (kept beside Optuna's study)."""

    space_yaml: str
    space_path: str
    model: str
    hardware: str
    objectives: list[dict[str, Any]]
    slos: dict[str, float]
    trial_budget: int | None = None


@dataclass(frozen=True)
class FreshRun:
    """One configuration measured on a freshly started server outside the study's trials
    (e.g. a ``confirm`` run): evidence for the study's noise model
    (``autotune.results.noise_model``).

    ``key`` is the configuration's ``Configuration.key()``; ``metrics`` its headline figures;
    ``source`` says where it came from (``"confirm of trial 3"``)."""

    key: str
    metrics: Mapping[str, float]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "metrics": dict(self.metrics), "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FreshRun:
        return cls(str(data["key"]), {k: float(v) for k, v in data["metrics"].items()},
                   str(data.get("source", "")))


class StaleTrial(Exception):
    """The trial was already finished by someone else (e.g. failed as stale by another
    worker's watchdog): nothing was overwritten."""


class StudyStore(Protocol):
    """One study's storage."""

    name: str
    url: str
    host: str  # the machine this process runs on, recorded with each trial it starts
    shared: bool  # several processes may share the study (heartbeats, waiting for others)
    notice: Callable[[str], None]  # tells the user what the store noticed (a lost worker)

    def open(self, space: Space, sampler: optuna.samplers.BaseSampler) -> bool:
        """Create the study, or open it if it exists; True when it was created.

        Raises ValueError when it exists with other objectives."""
        ...

    def save_facts(self, facts: StudyFacts) -> None:
        """Create or refresh the study's record (a ``trial_budget`` of None keeps the old)."""
        ...

    def facts(self) -> StudyView | None:
        """The study's record as it is now, None before ``save_facts``."""
        ...

    def enqueue(self, configuration: Configuration, origin: Origin) -> None:
        """Queue a configuration; the next ``ask`` returns queued ones first, in order."""
        ...

    def ask(self, space: Space) -> Suggestion:
        """Start an Optuna trial (queued configuration first, else the sampler's pick); where
        heartbeats are used, its first heartbeat is recorded at once."""
        ...

    def start(self, suggestion: Suggestion) -> None:
        """Record that this process runs the suggestion now (autotune's row: running)."""
        ...

    def finish(self, number: int, result: TrialResult) -> None:
        """Tell Optuna and write autotune's row, once. A trial Optuna already holds as
        finished (a database retry after a lost reply) is not told again; one failed as stale
        by another worker (before or during this call, whatever the verdict, whatever was
        written of it before a lost connection) raises ``StaleTrial`` and keeps that
        verdict."""
        ...

    def withdraw(self, number: int, reason: str) -> None:
        """End a suggestion that will not run (the study stops): Optuna FAIL, not counted."""
        ...

    def interrupt(self, number: int, reason: str) -> None:
        """End a started trial the user stopped, and queue its configuration again."""
        ...

    def trials(self) -> list[TrialSummary]:
        """Every trial of the study, in number order (fresh from the database)."""
        ...

    def trial(self, number: int) -> TrialSummary:
        """One trial, fresh from the database."""
        ...

    def reconcile(self) -> None:
        """On resume: close what a dead controller left running (a single-process database),
        repair rows whose Optuna trial finished without them, and queue interrupted
        configurations again (once each)."""
        ...

    def claim_lock(self) -> AbstractContextManager[None]:
        """Serialise "is the budget reached? then ask" across processes."""
        ...

    def heartbeat(self, number: int) -> AbstractContextManager[None]:
        """Keep the trial alive while its body runs, recording included (no-op where nothing
        is shared). A heartbeat that cannot be written is tried again at the next interval
        and reported once through ``notice``; it never raises and never stops early."""
        ...

    def fail_stale(self) -> list[int]:
        """Fail trials whose worker stopped sending heartbeats (or never sent one: a claim
        cut off right after ``ask``) and queue their configurations again, once, up to the
        retry limit; returns their numbers. Silence is judged only after a grace period of
        unbroken contact with the database (a database error here breaks it): an outage the
        workers rode out is not blamed on them. One trial's bookkeeping failing does not keep
        the others from being queued."""
        ...

    def quality_reference(self) -> tuple[Reference | None, bool]:
        """(The study's quality reference or None, whether a default trial is running now)."""
        ...

    def set_quality_reference(self, reference: Reference) -> None: ...

    def optuna_study(self) -> optuna.Study:
        """The Optuna study, for Optuna's own read-only tools (figures, importance)."""
        ...

    def add_fresh_runs(self, runs: list[FreshRun]) -> None:
        """Keep fresh-server runs with the study (appended to those kept before; never
        replaced). Works on a study that exists without ``open``; KeyError when none does."""
        ...

    def fresh_runs(self) -> list[FreshRun]:
        """Every fresh-server run kept with the study, oldest first ([] when none)."""
        ...


class Catalog(Protocol):
    """Read access to every study of one database (reports, export, dashboard)."""

    url: str

    def has_schema(self) -> bool:
        """Whether autotune's tables exist (a new database has none)."""
        ...

    def list_studies(self) -> list[StudyView]:
        """Every study autotune recorded, oldest first."""
        ...

    def get_study(self, name: str) -> StudyView | None:
        """Study ``name``'s record, None when autotune recorded no such study."""
        ...

    def list_trials(self, name: str, *, after: int | None = None) -> list[TrialView]:
        """A study's trials as autotune recorded them, in number order; ``after`` keeps only
        later numbers."""
        ...

    def optuna_study(self, name: str) -> optuna.Study:
        """Optuna's view of the study, for Optuna's own read-only tools (figures, importance).

        Raises KeyError when Optuna holds no such study."""
        ...

    def fresh_runs(self, name: str) -> list[FreshRun]:
        """``StudyStore.fresh_runs`` of study ``name`` ([] when Optuna holds no such study)."""
        ...

    def schema_behind(self) -> bool:
        """Whether autotune's tables are older than this autotune (``autotune db upgrade``)."""
        ...

