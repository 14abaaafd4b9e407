"""One trial, start to finish: reject known-invalid configs, launch, measure, tear down.

``TrialRunner.run`` never raises for engine or benchmark failures: it returns a
``TrialOutcome`` with the failure classified. It re-raises KeyboardInterrupt (after teardown),
so the study can mark the trial interrupted and stop. What is measured on the running engine is
an injected ``MeasuringStep`` (bench/step.py): the HTTP load driver by default, a measured
grid's recorded figures in a replay (``autotune.replay.ReplayTrialRunner``).

The trial knows engines only through the ``EngineLauncher`` and ``RunningEngine`` Protocols
(engines/base.py): the launcher turns a configuration into its ``EngineConfig``, says how many
devices a start takes, what to start instead after a host fault, and whether an engine still
serves.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autotune.bench import (
    HttpMeasurement,
    LoadDriver,
    MeasureContext,
    Measured,
    MeasuringStep,
)
from autotune.bench.vllm_bench import load_driver
from autotune.devices import DevicePool, DeviceSet, ReportsDeviceMemory
from autotune.engines.base import EngineConfig, EngineLauncher, RunningEngine
from autotune.engines.failures import (
    EngineFailure,
    TeardownError,
    after_benchmark,
    classify,
    log_excerpt,
)
from autotune.model import ModelShape, memory_fit, model_shape, read_model_config
from autotune.quality import QualityProbe, Reference
from autotune.space import Space, rules
from autotune.trial_state import FailureKind

__all__ = ["PhaseCallback", "TrialOutcome", "TrialRunner"]

PhaseCallback = Callable[[str], None]
# Starts of one configuration in one trial while its failures are transient (each on a fresh
# port, with a log of its own): a second start is worth it, a third rarely changes the verdict.
TRANSIENT_ATTEMPTS = 2


@dataclass
class TrialOutcome:
    state: str  # complete | failed | rejected
    metrics: dict[str, float] = field(default_factory=dict)
    failure: EngineFailure | None = None
    log_excerpt: str = ""
    log_path: str = ""
    argv: list[str] = field(default_factory=list)
    flags: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    engine_version: str = ""
    devices: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # The study's quality reference, when this (default) trial recorded it: the study stores it.
    quality_reference: Reference | None = None
    measurements: list[dict[str, Any]] = field(default_factory=list)
    disturbed: bool = False

    def record(self, measured: Measured, log_path: Path) -> None:
        """Take what the measuring step found (before teardown, so that a failure's log
        excerpt is the log as the failure left it)."""
        self.metrics = measured.metrics
        self.timings.update(measured.timings)
        self.measurements = measured.measurements
        self.disturbed = measured.disturbed
        self.notes.extend(measured.notes)
        self.quality_reference = measured.quality_reference
        if measured.failure is not None:
            self.fail(measured.failure, log_path)
        else:
            self.state = "complete"

    def fail(self, failure: EngineFailure, log_path: Path) -> None:
        """Failed with ``failure``; the excerpt of the engine's log around its deciding line."""
        self.state = "failed"
        self.failure = failure
        try:
            text = log_path.read_text(errors="replace")
        except OSError:
            text = ""
        if failure.kind == FailureKind.BENCHMARK_FAILED and not failure.line:
            failure.line = classify(text, None).line
        self.log_excerpt = log_excerpt(text, failure.line)


class TrialRunner:
    """One trial end to end: checks before launch, engine starts (a transient fault starts it
    again), the measuring step, teardown.

    Over 200 lines because every step reads and writes the same trial state (its devices, log,
    outcome and stop event); the checks before launch (``rejection``, ``memory_estimate``) are
    the part that could stand alone, and the first to move if this class grows."""

    def __init__(
        self,
        space: Space,
        launcher: EngineLauncher,
        pool: DevicePool,
        log_dir: Path,
        driver: LoadDriver | None = None,
        *,
        measuring: MeasuringStep | None = None,
    ) -> None:
        """``measuring`` defaults to ``HttpMeasurement`` with ``driver`` (or the built-in one)
        and the space's quality probe."""
        self.space = space
        self.launcher = launcher
        self.pool = pool
        self.log_dir = log_dir
        self.measuring = measuring or HttpMeasurement(space.quality, driver or load_driver(space))
        self.stop_event = threading.Event()  # set on Ctrl-C: start no further engine
        self.model_config = read_model_config(space.model.resolved_path)
        self.memory_calibration = memory_fit.Calibration()
        self._shapes: dict[str, ModelShape | None] = {}

    def fresh(self, log_dir: Path) -> TrialRunner:
        """A runner of this one's kind for engine starts of their own (the confirm stage's
        fresh servers): its engine logs under ``log_dir``; the same launcher, devices,
        measuring step and stop event; a memory calibration of its own."""
        runner = copy.copy(self)
        runner.log_dir = log_dir
        runner.memory_calibration = memory_fit.Calibration()
        return runner

    @property
    def quality(self) -> QualityProbe | None:
        """The measuring step's quality probe (the study gives it the stored reference)."""
        return self.measuring.quality

    def planned(
        self, params: Mapping[str, Any], *, is_default: bool
    ) -> tuple[EngineConfig, TrialOutcome]:
        """The engine configuration of ``params`` and the outcome a run of it starts as
        (running; its flags, model and command line)."""
        config = self.launcher.engine_config(self.space, params, is_default=is_default)
        return config, TrialOutcome(state="running", flags=dict(config.flags),
                                    model=config.model, argv=self.launcher.argv(config))

    def rejection(self, params: Mapping[str, Any], config: EngineConfig) -> str | None:
        values = dict(config.flags)
        values.update({k: v for k, v in params.items() if k not in values})
        return rules.check(
            rules.RuleContext(
                values=values,
                max_model_len=self.space.model.max_model_len,
                devices_present=self.pool.capacity,
                model_config=self.model_config,
            )
        )

    def memory_estimate(
        self, config: EngineConfig, devices: DeviceSet | None = None
    ) -> memory_fit.MemoryEstimate | None:
        """The memory picture of ``config`` on ``devices`` (before they are acquired: on the
        pool's largest device, so a prediction never rejects what some device could hold)."""
        shape = self._shape(config.model)
        if shape is None:
            return None
        memory = None
        if isinstance(self.pool, ReportsDeviceMemory):
            sizes = self.pool.device_memory()
            wanted = [sizes[i] for i in devices.ids if i in sizes] if devices else []
            memory = min(wanted) if wanted else max(sizes.values(), default=None)
        # The engine inherits this process's environment (VLLM_CPU_KVCACHE_SPACE may be in it).
        env = {**os.environ, **config.env, **(devices.env if devices else {})}
        return memory_fit.estimate(
            shape, config.flags, device=self.pool.kind, device_memory=memory, env=env,
            calibration=self.memory_calibration.offset(),
        )

    def _shape(self, model: str) -> ModelShape | None:
        if model not in self._shapes:
            if model == self.space.model.resolved_path:
                self._shapes[model] = model_shape(self.model_config)
            else:  # a quantization variant's own checkpoint
                own = read_model_config(model)
                self._shapes[model] = model_shape(
                    own or self.model_config, quantized_checkpoint=not own
                )
        return self._shapes[model]

    def run(
        self,
        number: int,
        params: Mapping[str, Any],
        *,
        is_default: bool,
        on_phase: PhaseCallback = lambda _: None,
    ) -> TrialOutcome:
        config, outcome = self.planned(params, is_default=is_default)
        reason = None if is_default else self.rejection(params, config)
        if reason:
            outcome.state = "rejected"
            outcome.failure = EngineFailure(
                FailureKind.INVALID_CONFIG, f"rejected before launch: {reason}"
            )
            return outcome
        predicted = None if is_default else self.memory_estimate(config)
        misfit = predicted.misfit() if predicted is not None else None
        if misfit:
            outcome.state = "rejected"
            outcome.failure = EngineFailure(
                FailureKind.OUT_OF_MEMORY, f"predicted before launch: {misfit}"
            )
            return outcome
        on_phase("waiting for devices")
        devices = self.pool.acquire(self.launcher.devices_needed(config))
        outcome.devices = devices.describe()
        try:
            if self.stop_event.is_set():
                outcome.state = "failed"
                outcome.failure = EngineFailure(FailureKind.INTERRUPTED, "study stopped")
                return outcome
            self._attempts(number, config, devices, outcome, on_phase, is_default)
            failure = outcome.failure
            fallback = (
                self.launcher.fallback(config, failure, devices)
                if failure is not None and not failure.survivors
                and not self.stop_event.is_set()
                else None
            )
            if fallback is not None:
                # The host's fault, not the configuration's (e.g. a bf16 kernel a CPU cannot
                # run): the launcher's stand-in is measured instead of losing the trial.
                outcome.notes.append(fallback.note)
                outcome.flags = dict(fallback.config.flags)
                self._attempts(number, fallback.config, devices, outcome, on_phase, is_default)
            self._check_memory_fit(replace(config, flags=outcome.flags), devices, outcome)
        finally:
            self.pool.release(devices)
        return outcome

    def _check_memory_fit(
        self, config: EngineConfig, devices: DeviceSet, outcome: TrialOutcome
    ) -> None:
        """Set the estimate beside the KV-cache size the engine logged at start. The real start
        wins: its figures are the metrics and the notes, the estimate only learns from them."""
        predicted = self.memory_estimate(config, devices)
        if predicted is None or not outcome.log_path:
            return
        try:
            logged = memory_fit.LoggedMemory.parse(
                Path(outcome.log_path).read_text(errors="replace")
            )
        except OSError:
            return
        if logged.kv_tokens is None:
            failure = outcome.failure
            if failure is not None and failure.kind == FailureKind.OUT_OF_MEMORY:
                outcome.notes.append(
                    f"memory fit had predicted {predicted.kv_tokens} KV-cache tokens "
                    f"({memory_fit.size(predicted.kv_memory)}); the engine ran out of memory"
                )
            return
        outcome.metrics.update(memory_fit.comparison_metrics(predicted, logged))
        self.memory_calibration.observe(predicted, logged.kv_tokens)
        note = predicted.shortfall(logged.kv_tokens)
        if note:
            outcome.notes.append(note)

    def log_path(self, number: int) -> Path:
        """A new log file for the next engine start of trial ``number``: ``trial-NNNN.log``,
        then ``trial-NNNN.attempt-2.log``, ... (the first name not taken, so an earlier run's
        log of the same number is neither appended to nor read as this one's)."""
        path = self.log_dir / f"trial-{number:04d}.log"
        attempt = 1
        while path.exists():
            attempt += 1
            path = self.log_dir / f"trial-{number:04d}.attempt-{attempt}.log"
        return path

    def _attempts(
        self, number: int, config: EngineConfig, devices: DeviceSet, outcome: TrialOutcome,
        on_phase: PhaseCallback, is_default: bool,
    ) -> None:
        """Launch and measure ``config``; start it again while its failure is transient."""
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            if self.stop_event.is_set():
                outcome.state = "failed"
                outcome.failure = EngineFailure(FailureKind.INTERRUPTED, "study stopped")
                return
            # What a start found dies with it: a failed start's reference outputs (the default
            # trial's) are recorded again by the start that follows.
            outcome.failure, outcome.quality_reference = None, None
            notes_before = len(outcome.notes)
            self._launch_and_measure(number, config, devices, outcome, on_phase, is_default)
            failure = outcome.failure
            if (
                failure is None
                or failure.kind != FailureKind.TRANSIENT
                or failure.survivors
                or attempt == TRANSIENT_ATTEMPTS
            ):
                return
            # That start's own notes (e.g. "measured under disturbance" from the requests its
            # fault broke) say nothing about the start that follows.
            del outcome.notes[notes_before:]
            outcome.notes.append(f"start {attempt} failed transiently ({failure.reason}); "
                                 "started again")

    def _launch_and_measure(
        self,
        number: int,
        config: EngineConfig,
        devices: DeviceSet,
        outcome: TrialOutcome,
        on_phase: PhaseCallback,
        is_default: bool,
    ) -> None:
        log_path = self.log_path(number)
        outcome.log_path = str(log_path)
        on_phase("starting engine")
        started = time.monotonic()
        try:
            engine = self.launcher.start(config, devices, log_path, stop=self.stop_event)
        except EngineFailure as failure:
            outcome.timings["startup_s"] = time.monotonic() - started
            outcome.fail(failure, log_path)
            if failure.survivors:
                self._survived(failure.survivors, outcome, devices)
            return
        if self.stop_event.is_set():  # stopped while this engine was starting
            outcome.fail(EngineFailure(FailureKind.INTERRUPTED, "study stopped"), log_path)
            self._teardown(engine, outcome, devices)
            return
        outcome.argv = list(engine.argv)
        outcome.engine_version = engine.version
        outcome.timings["startup_s"] = engine.startup_s
        trial = MeasureContext(self.space, number, is_default, self.pool, devices, log_path,
                               on_phase)
        try:
            outcome.record(self.measuring.measure(engine, config, trial), log_path)
            found = outcome.failure
            if found is not None and found.kind == FailureKind.BENCHMARK_FAILED:
                outcome.failure = after_benchmark(
                    found, self.launcher.healthy(engine),
                    None if engine.alive() else engine.failure())
        finally:
            on_phase("tearing down")
            self._teardown(engine, outcome, devices)

    def _teardown(self, engine: RunningEngine, outcome: TrialOutcome, devices: DeviceSet) -> None:
        started = time.monotonic()
        try:
            outcome.timings["teardown_s"] = engine.stop()
        except TeardownError as exc:
            outcome.timings["teardown_s"] = time.monotonic() - started
            self._survived(exc.survivors, outcome, devices)

    def _survived(self, survivors: list[int], outcome: TrialOutcome, devices: DeviceSet) -> None:
        """Processes outlived the engine's teardown: its devices are marked suspect, a failed
        trial keeps its first reason and gets this one beside it (a measured one keeps its
        figures, which were taken before), and the study goes on."""
        what = (f"engine processes {survivors} survived teardown; devices "
                f"{devices.describe()} marked suspect")
        self.pool.mark_suspect(devices, what)
        failure = outcome.failure
        if failure is None:
            outcome.notes.append(what)
        elif what not in failure.reason:
            failure.reason = f"{failure.reason}; then {what}"
            failure.survivors = survivors
