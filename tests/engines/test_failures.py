"""Failure classification on real vLLM logs collected from the CPU build
(tests/fixtures/engine_logs/, made by running the server with the named bad flags)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.engines.failures import (
    EngineFailure,
    after_benchmark,
    classify,
    log_excerpt,
    stalled,
)
from autotune.trial_state import FailureKind

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "engine_logs"


@pytest.mark.parametrize(
    ("name", "kind", "needle"),
    [
        ("fp8_unsupported", FailureKind.UNSUPPORTED, "static_scaled_fp8_quant"),
        ("unknown_quant", FailureKind.UNSUPPORTED, "Unknown quantization method"),
        ("budget_below_model_len", FailureKind.INVALID_CONFIG, "is smaller than max_model_len"),
        ("budget_below_seqs", FailureKind.INVALID_CONFIG, "must be greater than or equal to"),
        (
            "kv_cache_too_small",
            FailureKind.OUT_OF_MEMORY,
            "No available memory for the cache blocks",
        ),
        ("unrecognized_flag", FailureKind.INVALID_CONFIG, "unrecognized arguments"),
    ],
)
def test_real_logs(name: str, kind: FailureKind, needle: str) -> None:
    text = (LOGS / f"{name}.log").read_text()
    failure = classify(text, 1)
    assert failure.kind == kind
    assert needle in failure.line
    assert needle in log_excerpt(text, failure.line)


def test_sigill_exit_is_a_host_fault() -> None:
    assert classify("", 128 + 4).kind == FailureKind.HOST_FAULT
    line = (
        "(EngineCore pid=1) ERROR 11-27 12:00:00 [multiproc_executor.py:1] Worker proc "
        "VllmWorker-0 died unexpectedly (exit code: -4)"
    )
    assert classify(line, None).kind == FailureKind.HOST_FAULT


def test_out_of_memory_signatures() -> None:
    for line in (
        "ValueError: No available memory for the cache blocks. Try increasing "
        "`gpu_memory_utilization` when initializing the engine.",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    ):
        assert classify(line, 1).kind == FailureKind.OUT_OF_MEMORY


def test_warnings_do_not_decide() -> None:
    text = (
        "(APIServer pid=1) WARNING 11-27 13:46:26 [system_utils.py:255] Found ulimit of "
        "20000 and failed to automatically increase with error current limit exceeds "
        "maximum limit.\n(APIServer pid=1) WARNING 11-27 13:46:26 [x.py:1] fp8 is not "
        "supported here, falling back\nRuntimeError: boom\n"
    )
    failure = classify(text, 1)
    assert failure.kind == FailureKind.CRASHED
    assert failure.line == "RuntimeError: boom"


def test_no_clue_at_all() -> None:
    assert classify("", 3).kind == FailureKind.CRASHED


@pytest.mark.parametrize(
    ("text", "returncode"),
    [
        ("OSError: [Errno 98] Address already in use", 1),
        ("ERROR: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): "
         "address already in use", 1),
        ("OSError: [Errno 28] No space left on device", 1),
        ("RuntimeError: Engine core initialization failed.", 128 + 9),  # the OOM killer
        ("", -9),
        ("(EngineCore pid=1) ERROR 11-27 12:00:00 [multiproc_executor.py:1] Worker proc "
         "VllmWorker-0 died unexpectedly (exit code: -9)", 1),
    ],
)
def test_faults_of_the_moment_are_transient(text: str, returncode: int) -> None:
    failure = classify(text, returncode)
    assert failure.kind == FailureKind.TRANSIENT, failure
    # Not the configuration's fault: an Optuna FAIL (not reused), not learned from.
    assert not failure.kind.blames_config and not failure.kind.caused_by_config
    assert not failure.kind.retried  # retried within the trial, then it counts


def test_lost_requests_of_a_healthy_server_are_transient() -> None:
    lost = EngineFailure(FailureKind.BENCHMARK_FAILED,
                         "no request succeeded: ClientConnectorError: Connection refused")
    assert after_benchmark(lost, healthy=True).kind == FailureKind.TRANSIENT
    assert after_benchmark(lost, healthy=False).kind == FailureKind.BENCHMARK_FAILED
    answered = EngineFailure(FailureKind.BENCHMARK_FAILED, "no request succeeded: HTTP 400: x")
    assert after_benchmark(answered, healthy=True) is answered


def test_a_stall_of_a_running_engine_is_transient() -> None:
    # Issue 13 item 2: "a timeout while the process is still alive" is of the moment.
    failure = stalled("engine stalled: no token from any of 4 requests in 15 s")
    assert failure.kind == FailureKind.TRANSIENT
    assert not failure.kind.blames_config and not failure.kind.caused_by_config


@pytest.mark.parametrize(
    ("returncode", "words"),
    [(128 + 11, "engine killed by SIGSEGV"), (-6, "engine killed by SIGABRT"),
     (1, "exit status 1")],
)
def test_a_crash_names_its_exit_and_the_logs_last_error(returncode: int, words: str) -> None:
    log = "INFO 12-01 10:00:00 [x.py:1] serving\nRuntimeError: the kernel tripped\n"
    failure = classify(log, returncode)
    assert failure.kind == FailureKind.CRASHED
    assert failure.reason == f"RuntimeError: the kernel tripped ({words})"


def test_a_foreign_kill_keeps_the_logs_last_error() -> None:
    failure = classify("RuntimeError: Engine core initialization failed.\n", 128 + 9)
    assert failure.kind == FailureKind.TRANSIENT
    assert "SIGKILL" in failure.reason and "Engine core initialization failed" in failure.reason
