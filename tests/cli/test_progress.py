"""The live progress of a study run: the ETA from measured trial times, the running trials'
phases, plain lines (no ANSI) when stdout is not a terminal or in CI."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from rich.console import Console

from autotune.cli.progress import (
    LiveReporter,
    PlainReporter,
    StudyProgress,
    outcome_text,
    plain_output,
    reporter_for,
)
from autotune.engines.failures import EngineFailure
from autotune.trial import TrialOutcome
from autotune.trial_state import FailureKind

DEFAULTS = {"max_num_seqs": 128, "enable_chunked_prefill": True}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def complete(tput: float = 950.0) -> TrialOutcome:
    outcome = TrialOutcome(state="complete")
    outcome.metrics = {"output_throughput": tput, "ttft_p95_ms": 800.0, "e2e_p95_ms": 2400.0,
                       "error_rate": 0.0}
    outcome.timings = {"startup_s": 40.0, "benchmark_s": 10.0, "teardown_s": 2.0}
    return outcome


def test_phase_lines_and_eta_from_measured_trial_times() -> None:
    clock, out = FakeClock(), io.StringIO()
    reporter = PlainReporter(StudyProgress(slots=2, defaults=DEFAULTS, clock=clock), out)
    reporter.study_started("s", 0, 5)
    reporter.trial_started(1, 5, 0, dict(DEFAULTS))
    for phase, seconds in (("waiting for devices", 0), ("starting engine", 40),
                           ("benchmarking", 10), ("tearing down", 2)):
        reporter.phase(phase)
        clock.advance(seconds)
    reporter.trial_finished(0, complete())
    reporter.trial_started(2, 5, 1, {"max_num_seqs": 8, "enable_chunked_prefill": False})
    rejected = TrialOutcome(state="rejected", failure=EngineFailure(
        FailureKind.INVALID_CONFIG, "rejected before launch: max_num_batched_tokens too small"))
    reporter.trial_finished(1, rejected)
    lines = out.getvalue().splitlines()
    assert lines[:6] == [
        "study s: 0 of 5 trials done, 2 at once",
        "trial 1 of 5 (#0): vLLM defaults",
        "trial #0 at 0s: waiting for devices",
        "trial #0 at 0s: starting engine",
        "trial #0 at 40s: benchmarking",
        "trial #0 at 50s: tearing down",
    ]
    assert lines[6].startswith("trial #0 complete in 52s: 950 tok/s, TTFT p95 800 ms")
    # median 52 s × 4 trials left ÷ 2 slots = 104 s
    assert lines[7] == "1 of 5 trials done, ETA 1m 44s (median trial 52s × 4 left ÷ 2 slots)"
    assert lines[8] == "trial 2 of 5 (#1): seqs=8 chunked=off"
    assert lines[9] == ("trial #1 rejected in 0s: [invalid_config] rejected before launch: "
                        "max_num_batched_tokens too small")
    # median of 52 s and 0 s = 26 s, × 3 left ÷ 2 slots = 39 s
    assert lines[10] == "2 of 5 trials done, ETA 39s (median trial 26s × 3 left ÷ 2 slots)"
    assert "\x1b" not in out.getvalue()


def test_no_eta_before_a_trial_finished_and_done_at_the_end() -> None:
    state = StudyProgress(slots=1, clock=FakeClock())
    state.total = 2
    assert state.eta() == "ETA after the first trial"
    state.done = 2
    assert state.eta() == "done"


def test_live_view_moves_while_an_engine_starts() -> None:
    clock = FakeClock()
    console = Console(width=120, record=True, force_terminal=True)
    reporter = LiveReporter(StudyProgress(slots=1, defaults=DEFAULTS, clock=clock), console)
    reporter.study_started("s", 1, 8)
    reporter.trial_started(2, 8, 1, {"max_num_seqs": 16, "enable_chunked_prefill": True})
    clock.advance(3)
    reporter.phase("starting engine")
    clock.advance(12)
    console.print(reporter)  # what the live display draws now
    clock.advance(1)
    console.print(reporter)
    text = console.export_text()
    assert "1 of 8 trials" in text and "ETA after the first trial" in text
    assert "trial 2 of 8 (#1) starting engine 12s · 15s in all · seqs=16" in text
    assert "starting engine 13s · 16s in all" in text


def test_parallel_trials_report_their_own_phases() -> None:
    out = io.StringIO()
    reporter = PlainReporter(StudyProgress(slots=2, clock=FakeClock()), out)
    reporter.study_started("s", 0, 2)
    go = threading.Barrier(2)

    def slot(number: int) -> None:
        reporter.trial_started(number + 1, 2, number, {"max_num_seqs": number})
        go.wait()
        reporter.phase(f"phase of {number}")

    threads = [threading.Thread(target=slot, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert "trial #0 at 0s: phase of 0" in lines and "trial #1 at 0s: phase of 1" in lines


def test_plain_when_not_a_terminal_or_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    terminal = Console(force_terminal=True)
    assert not plain_output(terminal)
    assert isinstance(reporter_for(terminal, slots=1), LiveReporter)
    assert plain_output(Console(file=io.StringIO()))
    monkeypatch.setenv("CI", "true")
    assert plain_output(terminal)
    assert not isinstance(reporter_for(terminal, slots=1), LiveReporter)


def test_a_replayed_study_prints_plain_lines(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's own run (``run_with_progress``) over the replay engine, stdout a file."""
    from autotune.cli.launch import run_with_progress
    from autotune.replay import Grid, ReplayTrialRunner
    from autotune.testing.replay_grid import write_grid

    monkeypatch.delenv("CI", raising=False)
    grid = Grid.load(write_grid(tmp_path / "grid.jsonl"))
    space = grid.search_space(grid.space())
    trials = ReplayTrialRunner(space, grid)
    out = io.StringIO()
    result = run_with_progress(space, f"sqlite:///{tmp_path / 's.db'}", name="s",
                               pool=trials.pool, wanted=1, log_dir=tmp_path / "logs",
                               trials=3, trial_runner=trials, out=Console(file=out))
    assert result.run.trials_run == 3
    text = out.getvalue()
    lines = text.splitlines()
    assert "\x1b" not in text
    assert lines[:2] == ["study s: 0 of 3 trials done, 1 at once",
                         "trial 1 of 3 (#0): vLLM defaults"]
    for phase in ("waiting for devices", "starting engine", "replaying", "tearing down"):
        assert any(line.startswith("trial #0 at ") and line.endswith(f": {phase}")
                   for line in lines), phase
    assert any(line.startswith("trial #0 complete in ") for line in lines)
    assert any(line.startswith("1 of 3 trials done, ETA ") and "× 2 left ÷ 1 slot)" in line
               for line in lines)
    assert lines[-1] == "3 of 3 trials done"


def test_a_ladder_trial_line_leads_with_its_capacity() -> None:
    outcome = complete()
    outcome.metrics |= {"capacity_rps": 9.52, "interactivity_at_capacity": 48.3,
                        "capacity_is_lower_bound": 0.0}
    assert outcome_text(outcome).startswith(
        "capacity 9.52 req/s at the SLOs, 48 tok/s per user there; main load 950 tok/s")
    outcome.metrics["capacity_is_lower_bound"] = 1.0
    assert outcome_text(outcome).startswith("capacity ≥ 9.52 req/s")
    outcome.metrics |= {"capacity_rps": 0.0, "interactivity_at_capacity": float("nan")}
    assert outcome_text(outcome).startswith("no load level held the SLOs; main load 950")
    assert outcome_text(complete()).startswith("950 tok/s")  # no ladder: as before
