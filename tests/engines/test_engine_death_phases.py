"""An engine killed (``kill -9``, as the kernel's OOM killer or an operator does) after it
answered /health, in whatever phase the trial is in, is a transient fault of that start: the
trial starts it again, the failure names the engine's signal, it is neither reused as a verdict
nor learned by the crash model (issue 24, item 1). One trial on a real vLLM CPU engine, three
starts: killed as its workload is tokenized (the case found by running it: the first /tokenize
after the kill is refused while the engine's guard still tears down its engine core), during a
load-ladder level, and as the quality probe begins."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from autotune import trial as trial_module
from autotune.bench.engine_tokenizer import EngineTokenizer
from autotune.devices import CpuSlotPool
from autotune.engines import create
from autotune.space.model import Space
from autotune.study import recording
from autotune.testing.processes import engine_processes
from autotune.testing.spaces import small_space
from autotune.trial import TrialRunner
from autotune.trial_state import FailureKind

pytestmark = pytest.mark.engine

ENGINE_PID = re.compile(r"\[autotune-guard\] engine pid (\d+)")
# Start n of the trial is killed as the phase starting with this text begins (start 1: at its
# first /tokenize request, just before it is sent).
KILLED_AT = {1: "/tokenize", 2: "load ladder", 3: "measuring quality"}


def test_an_engine_killed_in_any_phase_is_a_transient_fault_of_its_start(
    tmp_path: Path, demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = small_space(tmp_path, demo_model)
    data["workload"].update({"num_requests": 8, "warmup_requests": 2})
    # Two levels and no more: an extended ladder would climb to concurrency 4096 on this fast
    # model (minutes of steady-state levels that this test does not need).
    data["ladder"] = {"kind": "concurrency", "levels": [1, 2], "requests_per_level": 4,
                      "extend": False}
    data["quality"] = {"prompts": "evals/demo-tasks.jsonl", "num_prompts": 4, "max_tokens": 4}
    # The API server runs the engine core in a process of its own (with either executor): when
    # the API server is killed, its guard reports the death at once but exits only once the
    # engine core is gone, seconds later (the window in which the first request after the kill
    # was refused). The tests' uniprocess executor saves a third process per start.
    space = Space.model_validate(data)
    logs = tmp_path / "logs"
    runner = TrialRunner(space, create("vllm"), CpuSlotPool(slots=1), logs)
    monkeypatch.setattr(trial_module, "TRANSIENT_ATTEMPTS", len(KILLED_AT))
    killed: list[tuple[int, str]] = []

    def on_phase(phase: str) -> None:
        start = len(list(logs.glob("trial-0000*.log")))
        if phase.startswith(KILLED_AT.get(start, "\0")) and start not in dict(killed):
            log = sorted(logs.glob("trial-0000*.log"), key=os.path.getmtime)[-1]
            found = ENGINE_PID.search(log.read_text())
            assert found, log.read_text()[-2000:]
            os.kill(int(found.group(1)), signal.SIGKILL)
            killed.append((start, phase))

    post = EngineTokenizer._post

    def tokenize(self: EngineTokenizer, path: str, body: dict[str, object]) -> dict:
        on_phase(path)  # the engine dies just as the request leaves
        return post(self, path, body)

    monkeypatch.setattr(EngineTokenizer, "_post", tokenize)
    outcome = runner.run(0, {}, is_default=True, on_phase=on_phase)

    assert [start for start, _ in killed] == [1, 2, 3], (killed, outcome.failure, outcome.notes)
    assert outcome.state == "failed" and outcome.failure is not None, outcome.notes
    assert outcome.failure.kind == FailureKind.TRANSIENT, outcome.failure
    assert "SIGKILL" in outcome.failure.reason, outcome.failure.reason
    retried = [note for note in outcome.notes if "failed transiently" in note]
    assert len(retried) == 2, outcome.notes
    assert all("SIGKILL" in note for note in retried), retried
    assert not any("tokenize" in note for note in retried), retried  # the death, not its echo
    result = recording.measured(space, outcome)
    # Optuna FAIL: not reused for the same configuration, not learned by the crash model.
    assert result.values is None and not result.failure_kind.caused_by_config
    assert outcome.quality_reference is None  # no start got as far as recording it
    assert engine_processes() == []
