"""The live progress of ``study start`` and ``worker``: trials done of the budget with an ETA,
and per running trial its phase and elapsed time; at the end, the confirm stage's fresh servers
("confirm stage: 2/4 fresh servers"), which the budget counts.

Two StudyReporters over one state: ``LiveReporter`` redraws a rich display a few times a second
(so the elapsed seconds move while an engine starts); ``PlainReporter`` writes one plain line
per event, no ANSI, for logs (stdout not a terminal, or ``CI`` set). ``reporter_for`` picks.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.text import Text

from autotune import short_names
from autotune.metrics import CAPACITY_METRIC

Clock = Callable[[], float]


def duration(seconds: float) -> str:
    """``42s``, ``4m 10s``, ``1h 05m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


@dataclass
class Running:
    number: int
    label: str
    params: str
    started: float
    phase: str = "starting"
    phase_since: float = 0.0


class StudyProgress:
    """What both reporters show, on an injectable clock: done of the budget, the ETA (median
    trial wall time here × trials left ÷ parallel slots) and the running trials' phases."""

    def __init__(self, *, slots: int = 1, defaults: Mapping[str, Any] | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.slots = max(1, slots)
        self.defaults = dict(defaults or {})
        self.clock = clock
        self.name = ""
        self.done = self.total = 0
        self.started = clock()
        self.durations: list[float] = []
        self.running: dict[int, Running] = {}  # by the thread that runs the trial
        self.stage_done = self.stage_total = 0  # the confirm stage's fresh servers
        self._lock = threading.Lock()

    def eta(self) -> str:
        left = max(self.total - self.done, 0)
        if not left:
            return "done"
        if not self.durations:
            return "ETA after the first trial"
        median = statistics.median(self.durations)
        slots = "slot" if self.slots == 1 else "slots"
        return (f"ETA {duration(median * left / self.slots)} (median trial {duration(median)}"
                f" × {left} left ÷ {self.slots} {slots})")

    def changed(self, params: Mapping[str, Any]) -> str:
        items = [short_names.assignment(k, v) for k, v in params.items()
                 if k not in self.defaults or self.defaults[k] != v]
        return " ".join(items) or "vLLM defaults"

    def start(self, index: int, total: int, number: int, params: Mapping[str, Any],
              label: str | None = None) -> Running:
        now = self.clock()
        trial = Running(number, label or f"trial {index} of {total} (#{number})",
                        self.changed(params), now, phase_since=now)
        with self._lock:
            self.running[threading.get_ident()] = trial
        return trial

    def enter(self, phase: str) -> Running | None:
        """The calling thread's trial, now in ``phase``."""
        with self._lock:
            trial = self.running.get(threading.get_ident())
            if trial is None and len(self.running) == 1:
                trial = next(iter(self.running.values()))
        if trial is not None:
            trial.phase, trial.phase_since = phase, self.clock()
        return trial

    def now_running(self) -> list[Running]:
        """The running trials by number (read by the display's refresh thread)."""
        with self._lock:
            return sorted(self.running.values(), key=lambda t: t.number)

    def confirm_start(self, done: int, total: int, number: int, params: Mapping[str, Any],
                      why: str) -> Running:
        self.stage_done, self.stage_total = done, total
        return self.start(0, 0, number, params,
                          f"confirm stage: fresh server {done + 1}/{total}, trial #{number} "
                          f"({why})")

    def confirm_finish(self, number: int) -> float:
        self.stage_done += 1
        return self.finish(number)

    @property
    def stage(self) -> str:
        """``confirm stage: 2/4 fresh servers`` once the stage runs, else ""."""
        if not self.stage_total:
            return ""
        return f"confirm stage: {self.stage_done}/{self.stage_total} fresh servers"

    def finish(self, number: int) -> float:
        """Wall seconds of trial ``number``, now counted as done."""
        now = self.clock()
        with self._lock:
            key = next((k for k, t in self.running.items() if t.number == number), None)
            trial = self.running.pop(key) if key is not None else None
        wall = now - trial.started if trial is not None else 0.0
        self.durations.append(wall)
        self.done += 1
        return wall


def outcome_text(outcome: Any) -> str:
    """A finished trial in one line: its figures and timings, or its failure."""
    t = outcome.timings
    if outcome.state == "complete":
        m = outcome.metrics
        text = _curve_text(m) + (
            f"{m.get('output_throughput', 0):.0f} tok/s, "
            f"TTFT p95 {m.get('ttft_p95_ms', 0):.0f} ms, "
            f"E2E p95 {m.get('e2e_p95_ms', 0):.0f} ms, errors {m.get('error_rate', 0):.1%}"
            f" (startup {t.get('startup_s', 0):.1f}s, benchmark "
            f"{t.get('benchmark_s', 0):.1f}s, teardown {t.get('teardown_s', 0):.1f}s)"
        )
    else:
        kind = outcome.failure.kind.value if outcome.failure else "?"
        reason = outcome.failure.reason if outcome.failure else ""
        text = f"[{kind}] {reason}"
    return text


def _curve_text(m: dict[str, float]) -> str:
    """Capacity at SLO first, when the space has a ladder (or a ``capacity:`` search)."""
    if CAPACITY_METRIC not in m:
        return ""
    capacity = m[CAPACITY_METRIC]
    if not capacity > 0:
        return "no load level held the SLOs; main load "
    at_least = "≥ " if m.get("capacity_is_lower_bound") else ""
    per_user = m.get("interactivity_at_capacity", math.nan)
    shown = f", {per_user:.0f} tok/s per user there" if math.isfinite(per_user) else ""
    return f"capacity {at_least}{capacity:.3g} req/s at the SLOs{shown}; main load "


class PlainReporter:
    """Implements StudyReporter as plain lines, one per event and phase change."""

    def __init__(self, state: StudyProgress, out: IO[str]) -> None:
        self.state = state
        self.out = out

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def study_started(self, name: str, done: int, total: int) -> None:
        s = self.state
        s.name, s.done, s.total = name, done, total
        self._line(f"study {name}: {done} of {total} trials done, {s.slots} at once")

    def trial_started(self, index: int, total: int, number: int, params: dict[str, Any]) -> None:
        trial = self.state.start(index, total, number, params)
        self._line(f"{trial.label}: {trial.params}")

    def phase(self, phase: str) -> None:
        trial = self.state.enter(phase)
        if trial is not None:
            at = duration(trial.phase_since - trial.started)
            self._line(f"trial #{trial.number} at {at}: {phase}")

    def notice(self, text: str) -> None:
        self._line(f"note: {text}")

    def trial_finished(self, number: int, outcome: Any) -> None:
        wall = self.state.finish(number)
        self._line(f"trial #{number} {outcome.state} in {duration(wall)}: "
                   f"{outcome_text(outcome)}")
        for note in outcome.notes:
            self._line(f"  note: {note}")
        s = self.state
        self._line(f"{s.done} of {s.total} trials done"
                   + (f", {s.eta()}" if s.done < s.total else ""))

    def confirm_started(self, done: int, total: int, number: int, params: dict[str, Any],
                        why: str) -> None:
        trial = self.state.confirm_start(done, total, number, params, why)
        self._line(f"{trial.label}: {trial.params}")

    def confirm_finished(self, number: int, outcome: Any) -> None:
        wall = self.state.confirm_finish(number)
        self._line(f"fresh server for trial #{number} {outcome.state} in {duration(wall)}: "
                   f"{outcome_text(outcome)}")
        s = self.state
        self._line(f"{s.stage}; {s.done} of {s.total} engine starts of the budget done")

    def __enter__(self) -> PlainReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class LiveReporter(PlainReporter):
    """Implements StudyReporter as a live display: a bar of trials done with the ETA, and one
    line per running trial (phase, seconds in it, seconds since the trial started), redrawn
    four times a second; finished trials print above it."""

    def __init__(self, state: StudyProgress, console: Console) -> None:
        super().__init__(state, console.file)
        self.console = console
        self.live = Live(self, console=console, refresh_per_second=4, transient=True)

    def __rich__(self) -> Group:
        s = self.state
        now = s.clock()
        stage = f"{s.stage} · " if s.stage else ""
        head = Text.assemble((f"study {s.name} ", "bold"), f"{s.done} of {s.total} trials · "
                             f"{stage}{duration(now - s.started)} · {s.eta()}")
        lines: list[Any] = [ProgressBar(total=max(s.total, 1), completed=s.done, width=40),
                            head]
        for t in s.now_running():
            lines.append(Text.assemble(
                f"  {t.label} ", (f"{t.phase} {duration(now - t.phase_since)}", "cyan"),
                f" · {duration(now - t.started)} in all · {t.params}"))
        return Group(*lines)

    def _line(self, text: str) -> None:
        self.console.print(escape(text), highlight=False)

    def phase(self, phase: str) -> None:
        self.state.enter(phase)  # drawn by the next refresh, not printed

    def trial_started(self, index: int, total: int, number: int, params: dict[str, Any]) -> None:
        trial = self.state.start(index, total, number, params)
        self.console.print(f"[bold]{escape(trial.label)}[/] {escape(trial.params)}",
                           highlight=False)

    def trial_finished(self, number: int, outcome: Any) -> None:
        self._finished(outcome, self.state.finish(number))
        for note in outcome.notes:
            self.console.print(f"  [yellow]note:[/] {escape(note)}", highlight=False)

    def confirm_started(self, done: int, total: int, number: int, params: dict[str, Any],
                        why: str) -> None:
        trial = self.state.confirm_start(done, total, number, params, why)
        self.console.print(f"[bold]{escape(trial.label)}[/] {escape(trial.params)}",
                           highlight=False)

    def confirm_finished(self, number: int, outcome: Any) -> None:
        self._finished(outcome, self.state.confirm_finish(number), f" ({self.state.stage})")

    def _finished(self, outcome: Any, wall: float, after: str = "") -> None:
        """The line that says how a trial (or a fresh-server run) ended."""
        colour = "green" if outcome.state == "complete" else "red"
        self.console.print(f"  [{colour}]{outcome.state}[/] in {duration(wall)}: "
                           f"{escape(outcome_text(outcome) + after)}", highlight=False)

    def notice(self, text: str) -> None:
        self.console.print(f"[yellow]{escape(text)}[/]")

    def __enter__(self) -> LiveReporter:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()


def plain_output(console: Console) -> bool:
    """Plain lines when stdout is not a terminal or in CI logs (``CI`` set, as CI services
    do), where a redrawn display would write thousands of frames."""
    ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    return ci or not console.is_terminal


def reporter_for(console: Console, *, slots: int, defaults: Mapping[str, Any] | None = None,
                 clock: Clock = time.monotonic) -> PlainReporter:
    state = StudyProgress(slots=slots, defaults=defaults, clock=clock)
    if plain_output(console):
        return PlainReporter(state, console.file)
    return LiveReporter(state, console)
