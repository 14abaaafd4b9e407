"""What a running study tells the person watching it."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from autotune.trial import TrialOutcome


class StudyReporter(Protocol):
    def study_started(self, name: str, done: int, total: int) -> None: ...

    def trial_started(
        self, index: int, total: int, number: int, params: dict[str, Any]
    ) -> None: ...

    def phase(self, phase: str) -> None: ...

    def trial_finished(self, number: int, outcome: TrialOutcome) -> None: ...

    def confirm_started(
        self, done: int, total: int, number: int, params: dict[str, Any], why: str
    ) -> None:
        """The confirm stage starts a fresh server for trial ``number``'s configuration
        (``why``: "best capacity_rps", "the defaults"...); ``done`` of ``total`` started so
        far. Each start counts in the study's budget."""
        ...

    def confirm_finished(self, number: int, outcome: TrialOutcome) -> None: ...

    def notice(self, text: str) -> None:
        """Something the user must know (e.g. the database is unreachable, retrying)."""
        ...


class SilentReporter:
    def study_started(self, name: str, done: int, total: int) -> None:
        pass

    def trial_started(self, index: int, total: int, number: int, params: dict[str, Any]) -> None:
        pass

    def phase(self, phase: str) -> None:
        pass

    def trial_finished(self, number: int, outcome: TrialOutcome) -> None:
        pass

    def confirm_started(self, done: int, total: int, number: int, params: dict[str, Any],
                        why: str) -> None:
        pass

    def confirm_finished(self, number: int, outcome: TrialOutcome) -> None:
        pass

    def notice(self, text: str) -> None:
        print(f"autotune: {text}", file=sys.stderr, flush=True)
