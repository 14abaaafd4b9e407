"""Faults of the moment are not verdicts (issue 24, items 7 and 8), on the mock OpenAI server
behind the engine boundary: a /tokenize that hangs and a quality probe that times out fail the
start transiently (started again; recorded transient, never reused as the configuration's
result), and the default trial whose first start recorded the quality reference and then failed
records it again on the start that follows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from autotune.bench import engine_tokenizer
from autotune.bench.http_step import HttpMeasurement
from autotune.devices import CpuSlotPool, DeviceSet
from autotune.engines import EngineConfig
from autotune.space.model import Space
from autotune.space.quality import QualitySpec
from autotune.study import recording
from autotune.testing.mock_engine import MockEngine, MockLauncher
from autotune.testing.mock_openai import Behaviour
from autotune.trial import TrialRunner
from autotune.trial_state import FailureKind
from tests.quality.test_probe import ROWS, FakeServer, base_model
from tests.trial.test_driver_trial import SPACE

LOAD_REQUESTS = SPACE["workload"]["warmup_requests"] + SPACE["workload"]["num_requests"]


def _space(tmp_path: Path, **update: Any) -> Space:
    workload = {**SPACE["workload"], "stall_timeout_s": 1.0}
    return Space.model_validate({**SPACE, "workload": workload, **update})


def _quality(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return {"prompts": str(path), "batch_size": 2, **extra}


def _assert_transient(outcome: Any, space: Space, starts: int, fragment: str) -> None:
    assert outcome.state == "failed" and outcome.failure is not None, outcome.notes
    assert outcome.failure.kind == FailureKind.TRANSIENT, outcome.failure
    assert fragment in outcome.failure.reason, outcome.failure.reason
    assert starts == 2
    assert outcome.notes[0].startswith("start 1 failed transiently"), outcome.notes
    result = recording.measured(space, outcome)
    # Optuna FAIL: not reused for the configuration, not learned by the crash model.
    assert result.values is None and not result.failure_kind.caused_by_config


@pytest.fixture
def short_tokenize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_tokenizer, "TIMEOUT_S", 1.0)


def test_a_tokenize_that_hangs_on_a_serving_engine_is_transient(
    tmp_path: Path, short_tokenize: None
) -> None:
    space = _space(tmp_path)
    launcher = MockLauncher(Behaviour(tokenize_delay_s=5))
    outcome = TrialRunner(space, launcher, CpuSlotPool(slots=1), tmp_path / "logs").run(
        0, {}, is_default=True)
    _assert_transient(outcome, space, len(launcher.started), "cannot tokenize")
    assert "ReadTimeout" in outcome.failure.reason
    assert "the engine still serves" in outcome.failure.reason


def test_a_tokenize_that_hangs_on_a_hung_engine_is_a_stall(
    tmp_path: Path, short_tokenize: None
) -> None:
    """The engine stops answering anything (a SIGSTOP) as the workload is built."""
    space = _space(tmp_path)
    launcher = MockLauncher(Behaviour(freeze_at_tokenize_s=8))
    outcome = TrialRunner(space, launcher, CpuSlotPool(slots=1), tmp_path / "logs").run(
        0, {}, is_default=True)
    _assert_transient(outcome, space, len(launcher.started), "engine stalled")


class _SlowQuality(MockLauncher):
    """Each engine answers the load's requests at once and the first request after them (the
    quality probe's) only after 5 s."""

    def start(self, config: EngineConfig, devices: DeviceSet, log_path: Path, *,
              stop: Any = None) -> MockEngine:
        engine = super().start(config, devices, log_path)
        engine.server.script = [Behaviour()] * LOAD_REQUESTS + [Behaviour(first_token_delay_s=5)]
        return engine


def test_a_quality_probe_that_times_out_fails_the_start_transiently(tmp_path: Path) -> None:
    space = _space(tmp_path, quality=_quality(tmp_path, timeout_s=1.0,
                                              min={"quality_accuracy": 0.5}))
    launcher = _SlowQuality()
    outcome = TrialRunner(space, launcher, CpuSlotPool(slots=1), tmp_path / "logs").run(
        1, {"max_num_seqs": 8}, is_default=False)
    # Not a complete trial without its quality (infeasible, and reused as such forever).
    _assert_transient(outcome, space, len(launcher.started), "quality probe request failed")
    assert "ReadTimeout" in outcome.failure.reason


def test_the_default_trial_records_the_reference_again_after_a_failed_start(
    tmp_path: Path
) -> None:
    """Start 1 records the reference, then its engine stalls in the capacity search (a
    transient fault); start 2 must record the reference again, and the outcome carry it."""
    space = _space(tmp_path, quality=_quality(tmp_path),
                   capacity={"start_rate": 50, "max_rate": 100, "bisection_steps": 0,
                             "requests_per_point": 4})
    launcher = MockLauncher()
    step = HttpMeasurement(space.quality)
    assert step.quality is not None
    step.quality.transport = httpx.MockTransport(FakeServer(base_model))
    runner = TrialRunner(space, launcher, CpuSlotPool(slots=1), tmp_path / "logs",
                         measuring=step)

    def on_phase(phase: str) -> None:
        if phase == "searching SLO capacity" and len(launcher.started) == 1:
            launcher.started[0].server.behaviour = Behaviour(health_delay_s=5)  # it stalls

    outcome = runner.run(0, {}, is_default=True, on_phase=on_phase)
    assert len(launcher.started) == 2
    assert outcome.notes[0].startswith("start 1 failed transiently (engine stalled"), outcome.notes
    assert outcome.state == "complete", outcome.failure
    reference = outcome.quality_reference
    assert reference is not None  # the study stores it: every later trial is compared with it
    assert reference.trial == 0 and len(reference.items) == len(ROWS)
    assert outcome.metrics["quality_top1_agreement"] == 1.0
    assert step.quality.reference is reference


def test_a_reference_given_to_the_default_trial_is_compared_with(tmp_path: Path) -> None:
    """What the study stored (or another worker recorded) stays the reference: only what this
    probe recorded itself on a failed start is recorded again."""
    spec = QualitySpec.model_validate(_quality(tmp_path))
    step = HttpMeasurement(spec)
    assert step.quality is not None
    step.quality.transport = httpx.MockTransport(FakeServer(base_model))
    stored = step.quality.run("http://x", "d", may_record=True, trial=0).recorded
    assert stored is not None
    from autotune.quality import QualityProbe

    probe = QualityProbe(spec, reference=stored, transport=httpx.MockTransport(
        FakeServer(base_model)))
    again = probe.run("http://x", "d", may_record=True, trial=0)
    assert again.recorded is None and probe.reference is stored
