"""Classify an engine failure from its exit status and log into a small set of kinds.

Signatures come from vLLM's source and from real logs collected on the CPU build
(tests/fixtures/engine_logs/). Root causes are searched before their consequences:
"Engine core initialization failed" follows almost every startup error, so it only decides the
kind when nothing more specific is in the log. The kinds are ``autotune.trial_state.FailureKind``
(a leaf, so that the store records them without importing the engines).
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field

from autotune.trial_state import FailureKind


class TeardownError(RuntimeError):
    """Processes of an engine survived its teardown (``RunningEngine.stop``)."""

    def __init__(self, survivors: list[int]) -> None:
        super().__init__(f"engine processes {survivors} survived teardown")
        self.survivors = survivors


@dataclass
class EngineFailure(Exception):
    """An engine could not start or serve. ``line`` is the log line that decided the kind;
    ``survivors``: processes of the engine that then survived its teardown."""

    kind: FailureKind
    reason: str
    line: str = ""
    survivors: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}"


_SIGNATURES: list[tuple[FailureKind, re.Pattern[str]]] = [
    (
        FailureKind.HOST_FAULT,
        re.compile(r"exit ?code:? -4\b|Illegal instruction|SIGILL|signal 4\b"),
    ),
    (
        # Another process holds the port (it is picked free, then released before vLLM binds
        # it); the disk filled up; a worker was SIGKILLed (the kernel's OOM killer).
        FailureKind.TRANSIENT,
        re.compile(
            r"Address already in use|EADDRINUSE|\[Errno 98\]|No space left on device|"
            r"\[Errno 28\]|died unexpectedly \(exit code: -9\)"
        ),
    ),
    (
        FailureKind.OUT_OF_MEMORY,
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|No available memory for the cache blocks|"
            r"larger than the available KV cache memory|Cannot allocate memory|"
            r"not enough (?:KV cache|memory)|insufficient memory",
            re.I,
        ),
    ),
    (
        FailureKind.UNSUPPORTED,
        re.compile(
            r"Unknown quantization method|Cannot find the config file for|"
            r"is not supported for the current GPU|not supported on (?:the )?CPU|"
            r"static_scaled_fp8_quant|NotImplementedError|is not supported|"
            r"expected at most \d+ argument"
        ),
    ),
    (
        FailureKind.INVALID_CONFIG,
        re.compile(
            r"is smaller than max_model_len|must be divisible by|"
            r"error: argument|unrecognized arguments|invalid choice|"
            r"must be (?:greater|less) than|should be (?:greater|less) than|Value error,"
        ),
    ),
    (FailureKind.INVALID_CONFIG, re.compile(r"ValidationError|ValueError:")),
    (
        FailureKind.STARTUP_TIMEOUT,
        re.compile(r"Timed out waiting for engine core processes to start"),
    ),
]
# Signals autotune never sends to a running engine on its own: when the engine dies of one, some
# other process (the kernel's OOM killer, an operator) killed it; the config is not to blame.
_FOREIGN_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_GENERIC = re.compile(r"Error|Exception|Traceback|died unexpectedly|failed", re.I)
# vLLM's own INFO/WARNING/DEBUG lines never decide a failure ("... is not supported, falling
# back" or "failed to increase ulimit" are routine).
_BENIGN = re.compile(r"\b(?:INFO|WARNING|DEBUG)\b \d\d-\d\d |^\s*warnings\.warn|Warning:")


def classify(log_text: str, returncode: int | None) -> EngineFailure:
    """Kind, reason and deciding line for an engine that exited or stopped serving on its own
    (not stopped by autotune: ``returncode`` is then the status of its own death)."""
    lines = [line for line in log_text.splitlines() if not _BENIGN.search(line)]
    if returncode is not None and returncode in (-signal.SIGILL, 128 + signal.SIGILL):
        return EngineFailure(FailureKind.HOST_FAULT, "engine killed by SIGILL (host CPU fault)")
    killer = _signal_of(returncode)
    last_error = next((line for line in reversed(lines) if _GENERIC.search(line)), "")
    if killer in _FOREIGN_SIGNALS:
        return EngineFailure(
            FailureKind.TRANSIENT,
            f"engine killed by {killer.name}, which autotune did not send (the kernel's "
            "out-of-memory killer, or an operator)"
            + (f"; the log's last error: {_short(last_error)}" if last_error else ""),
            last_error.strip(),
        )
    for kind, pattern in _SIGNATURES:
        for line in lines:
            if pattern.search(line):
                return EngineFailure(kind, _short(line), line.strip())
    how = exit_words(returncode)
    if last_error:
        return EngineFailure(
            FailureKind.CRASHED,
            f"{_short(last_error)} ({how})" if how else _short(last_error),
            last_error.strip(),
        )
    return EngineFailure(
        FailureKind.CRASHED, f"engine stopped ({how or 'still running'}) with no error in its log"
    )


def exit_words(returncode: int | None) -> str:
    """An engine's exit status in words (``-N`` from Popen and ``128 + N`` from the guard are
    signal N); "" while it runs."""
    if returncode is None:
        return ""
    killer = _signal_of(returncode)
    if killer is not None and (returncode < 0 or returncode > 128):
        return f"engine killed by {killer.name}"
    return f"exit status {returncode}"


# The guard's line on the engine's own exit (autotune/engines/guard.py, ``describe_exit``):
# groups the whole report, the signal, the status.
_GUARD_EXIT = re.compile(
    r"\[autotune-guard\] (engine (?:killed by signal (\d+)|exited with status (-?\d+)).*)")


def reported_exit(log_text: str) -> int | None:
    """The engine's exit as its guard reported it in the log, in Popen's form (``-N``: killed by
    signal N), or None. The guard writes it as soon as the engine exits, before it tears down
    what is left of the tree and exits itself (seconds later, when the engine left children):
    until then the guarded process still runs."""
    found = _GUARD_EXIT.findall(log_text)
    if not found:
        return None
    _, signum, status = found[-1]
    return -int(signum) if signum else int(status)


def reported_exit_text(log_text: str) -> str | None:
    """The guard's last report of the engine's exit, as written ("engine killed by signal 9
    (SIGKILL)"), or None."""
    found = _GUARD_EXIT.findall(log_text)
    return found[-1][0].strip() if found else None


# Requests lost on the way (refused or dropped connections, timeouts, streams with no token),
# as the load driver and the workload builder word them: no answer from the server about them.
_LOST_REQUESTS = re.compile(
    r"Connect\w*Error|Connection (?:refused|reset)|Disconnected|ClientPayloadError|"
    r"ClientOSError|Timeout|timed out|no token received"
)


def after_benchmark(
    failure: EngineFailure, healthy: bool, death: EngineFailure | None = None
) -> EngineFailure:
    """A failed benchmark whose requests were lost on the way (not answered with an error)
    while the server stayed healthy is transient; one whose engine has since exited (``death``:
    its exit and log classified) fails as that death, named, whatever request it broke (killed
    by a signal autotune did not send: transient); any other benchmark failure stands."""
    if failure.kind != FailureKind.BENCHMARK_FAILED:
        return failure
    if death is not None:
        return EngineFailure(
            death.kind, f"{death.reason} (the engine exited; the benchmark had failed: "
            f"{_short(failure.reason, 200)})", death.line or failure.line,
        )
    if healthy and _LOST_REQUESTS.search(failure.reason):
        return EngineFailure(
            FailureKind.TRANSIENT, f"{failure.reason} (the server stayed healthy)", failure.line
        )
    return failure


def stalled(reason: str) -> EngineFailure:
    """An engine that is still running but made no progress for the stall timeout (no token
    from any request, or no /health answer): "a timeout while the process is still alive",
    transient. A stop of the moment (SIGSTOP, a host paging out) is not the configuration's
    doing: the trial starts it again, and if it stalls again it is recorded transient (not
    reused, not learned by the crash model)."""
    return EngineFailure(FailureKind.TRANSIENT, reason)


def _signal_of(returncode: int | None) -> signal.Signals | None:
    """The signal that killed the engine: ``-N`` from Popen, ``128 + N`` from the guard."""
    if returncode is None or returncode == 0:
        return None
    number = -returncode if returncode < 0 else returncode - 128
    try:
        return signal.Signals(number)
    except ValueError:
        return None


def _short(line: str, limit: int = 300) -> str:
    line = re.sub(r"^\S*\(?\w*\)?\s*(?:ERROR|WARNING|INFO)\s+\S+\s+\S+\s+\[[^\]]*\]\s*", "", line)
    line = line.strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def log_excerpt(log_text: str, line: str, context: int = 20, limit: int = 8000) -> str:
    """Lines around ``line`` (or the log's tail) for storing with the trial."""
    lines = log_text.splitlines()
    index = next((i for i, candidate in enumerate(lines) if line and line in candidate), None)
    if index is None:
        chosen = lines[-2 * context :]
    else:
        chosen = lines[max(0, index - context) : index + context]
    text = "\n".join(chosen)
    return text[-limit:]
