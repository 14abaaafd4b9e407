"""An engine's death as the guard reports it, and a failed benchmark whose engine had died:
the death decides, named by its signal or status (issue 24, item 1). No engine: the guard's
lines and the classifier's inputs as a real start leaves them."""

from __future__ import annotations

from autotune.engines.failures import (
    EngineFailure,
    after_benchmark,
    classify,
    reported_exit,
)
from autotune.trial_state import FailureKind

GUARD = "[autotune-guard] engine pid 4242 in process group 4241\n"


def test_the_guards_report_gives_the_exit_before_the_guard_exits() -> None:
    assert reported_exit(GUARD + "INFO serving\n") is None
    assert reported_exit(GUARD + "[autotune-guard] engine killed by signal 9 (SIGKILL)\n") == -9
    assert reported_exit(GUARD + "[autotune-guard] engine exited with status 1\n") == 1


def test_a_benchmark_failed_by_a_dead_engine_fails_as_its_death() -> None:
    refused = EngineFailure(
        FailureKind.BENCHMARK_FAILED,
        "cannot tokenize with the engine's /tokenize: [Errno 111] Connection refused")
    killed = classify(GUARD + "[autotune-guard] engine killed by signal 9 (SIGKILL)\n", 137)
    judged = after_benchmark(refused, healthy=False, death=killed)
    assert judged.kind == FailureKind.TRANSIENT
    assert judged.reason.startswith("engine killed by SIGKILL, which autotune did not send")
    assert "Connection refused" in judged.reason
    crashed = classify(GUARD + "RuntimeError: CUDA error: an illegal memory access\n", 1)
    judged = after_benchmark(refused, healthy=False, death=crashed)
    assert judged.kind == FailureKind.CRASHED and "exit status 1" in judged.reason
    # Without a death the old rules stand: lost on a healthy server transient, else a verdict.
    assert after_benchmark(refused, healthy=True).kind == FailureKind.TRANSIENT
    assert after_benchmark(refused, healthy=False) is refused
