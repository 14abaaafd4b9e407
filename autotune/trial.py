"""One trial, start to finish: reject known-invalid configs, launch, measure, tear down.

``TrialRunner.run`` never raises for engine or benchmark failures: it returns a
``TrialOutcome`` with the failure classified. It re-raises KeyboardInterrupt (after teardown),
so the study can mark the trial interrupted and stop.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autotune import rules
from autotune.bench.driver import BenchResult, Endpoint, HttpLoadDriver, LoadDriver
from autotune.bench.workload import WorkloadError
from autotune.devices import DevicePool, DeviceSet
from autotune.devices.sampling import UtilisationSampler
from autotune.engines.base import EngineConfig, EngineLauncher, RunningEngine
from autotune.engines.failures import EngineFailure, FailureKind, classify, log_excerpt
from autotune.engines.vllm import engine_config
from autotune.scoring import COST_METRIC, cost_per_1m_output_tokens
from autotune.space import Space

PhaseCallback = Callable[[str], None]
HOST_FAULT_FALLBACK_DTYPE = "float16"


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


class TrialRunner:
    def __init__(
        self,
        space: Space,
        launcher: EngineLauncher,
        pool: DevicePool,
        log_dir: Path,
        driver: LoadDriver | None = None,
    ) -> None:
        self.space = space
        self.launcher = launcher
        self.pool = pool
        self.log_dir = log_dir
        self.driver = driver or HttpLoadDriver()
        self.stop_event = threading.Event()  # set on Ctrl-C: start no further engine
        self.model_config = rules.read_model_config(space.model.resolved_path)

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

    def run(
        self,
        number: int,
        params: Mapping[str, Any],
        *,
        is_default: bool,
        on_phase: PhaseCallback = lambda _: None,
    ) -> TrialOutcome:
        config = engine_config(self.space, params, is_default=is_default)
        outcome = TrialOutcome(
            state="running",
            flags=dict(config.flags),
            model=config.model,
            argv=self.launcher.argv(config),
        )
        reason = None if is_default else self.rejection(params, config)
        if reason:
            outcome.state = "rejected"
            outcome.failure = EngineFailure(
                FailureKind.INVALID_CONFIG, f"rejected before launch: {reason}"
            )
            return outcome
        n_devices = int(config.flags.get("tensor_parallel_size") or 1) * int(
            config.flags.get("pipeline_parallel_size") or 1
        )
        on_phase("waiting for devices")
        devices = self.pool.acquire(n_devices)
        outcome.devices = devices.describe()
        try:
            if self.stop_event.is_set():
                outcome.state = "failed"
                outcome.failure = EngineFailure(FailureKind.INTERRUPTED, "study stopped")
                return outcome
            self._launch_and_measure(number, config, devices, outcome, on_phase)
            if (
                outcome.failure is not None
                and outcome.failure.kind == FailureKind.HOST_FAULT
                and str(config.flags.get("dtype", "auto")) in ("auto", "bfloat16")
                and devices.kind == "cpu"
            ):
                # A bf16 kernel the host cannot run (SIGILL): the host's fault, not the config's.
                # Measure the same configuration in float16 instead of losing the trial.
                outcome.notes.append(
                    f"host fault in {config.flags.get('dtype', 'auto')}: re-ran with dtype "
                    f"{HOST_FAULT_FALLBACK_DTYPE}"
                )
                retry = replace(config, flags={**config.flags, "dtype": HOST_FAULT_FALLBACK_DTYPE})
                outcome.failure = None
                outcome.flags = dict(retry.flags)
                self._launch_and_measure(number, retry, devices, outcome, on_phase, attempt=2)
        finally:
            self.pool.release(devices)
        return outcome

    def _launch_and_measure(
        self,
        number: int,
        config: EngineConfig,
        devices: DeviceSet,
        outcome: TrialOutcome,
        on_phase: PhaseCallback,
        attempt: int = 1,
    ) -> None:
        suffix = "" if attempt == 1 else f".{attempt}"
        log_path = self.log_dir / f"trial-{number:04d}{suffix}.log"
        outcome.log_path = str(log_path)
        on_phase("starting engine")
        started = time.monotonic()
        try:
            engine = self.launcher.start(config, devices, log_path)
        except EngineFailure as failure:
            outcome.timings["startup_s"] = time.monotonic() - started
            self._fail(outcome, failure, log_path)
            return
        if self.stop_event.is_set():  # stopped while this engine was starting
            outcome.timings["teardown_s"] = engine.stop()
            self._fail(outcome, EngineFailure(FailureKind.INTERRUPTED, "study stopped"), log_path)
            return
        outcome.argv = list(engine.argv)
        outcome.engine_version = engine.version
        outcome.timings["startup_s"] = engine.startup_s
        try:
            on_phase("benchmarking")
            with UtilisationSampler(self.pool, devices, engine.pids) as sampler:
                result = self._measure(engine)
            outcome.timings["warmup_s"] = result.warmup_s
            outcome.timings["benchmark_s"] = result.benchmark_s
            outcome.metrics = {**result.metrics, **sampler.summary()}
            if self.space.cost is not None:
                outcome.metrics[COST_METRIC] = cost_per_1m_output_tokens(
                    self.space.cost.device_hour_usd, len(devices.ids),
                    outcome.metrics.get("output_throughput", 0.0),
                )
            if result.metrics.get("completed", 0) == 0:
                found = engine.failure()
                if found.kind == FailureKind.CRASHED:
                    errors = [r.error for r in result.records if r.error][:1]
                    found = EngineFailure(
                        FailureKind.BENCHMARK_FAILED,
                        "no request succeeded" + (f": {errors[0]}" if errors else ""),
                        found.line,
                    )
                self._fail(outcome, found, log_path)
            else:
                outcome.state = "complete"
        except WorkloadError as exc:
            self._fail(outcome, EngineFailure(FailureKind.BENCHMARK_FAILED, str(exc)), log_path)
        finally:
            on_phase("tearing down")
            outcome.timings["teardown_s"] = engine.stop()

    def _measure(self, engine: RunningEngine) -> BenchResult:
        return self.driver.run(
            Endpoint(engine.base_url, engine.served_name), self.space.workload, self.space.slos
        )

    @staticmethod
    def _fail(outcome: TrialOutcome, failure: EngineFailure, log_path: Path) -> None:
        outcome.state = "failed"
        outcome.failure = failure
        try:
            text = log_path.read_text(errors="replace")
        except OSError:
            text = ""
        if failure.kind == FailureKind.BENCHMARK_FAILED and not failure.line:
            found = classify(text, None)
            failure.line = found.line
        outcome.log_excerpt = log_excerpt(text, failure.line)


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Metrics with NaN/inf replaced by None-free JSON-safe values (dropped)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)
    }
