"""One trial, start to finish: reject known-invalid configs, launch, measure, tear down.

``TrialRunner.run`` never raises for engine or benchmark failures: it returns a
``TrialOutcome`` with the failure classified. It re-raises KeyboardInterrupt (after teardown),
so the study can mark the trial interrupted and stop.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autotune import memory_fit, rules
from autotune.bench.capacity import CapacitySpec, find_capacity
from autotune.bench.driver import BenchResult, Endpoint, HttpLoadDriver, LoadDriver
from autotune.bench.metrics import to_vllm_bench_keys
from autotune.bench.workload import WorkloadError
from autotune.devices import DevicePool, DeviceSet, ReportsDeviceMemory
from autotune.devices.sampling import UtilisationSampler
from autotune.engines.base import EngineConfig, EngineLauncher, RunningEngine
from autotune.engines.failures import EngineFailure, FailureKind, classify, log_excerpt
from autotune.engines.vllm import engine_config
from autotune.measurement import measure_robustly
from autotune.quality.probe import QualityError, QualityProbe, Reference
from autotune.scoring import COST_METRIC, cost_per_1m_output_tokens, slos_hold
from autotune.space import ConcurrencyLoad, PoissonLoad, Space

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
    # The study's quality reference, when this (default) trial recorded it: the study stores it.
    quality_reference: Reference | None = None
    measurements: list[dict[str, Any]] = field(default_factory=list)
    disturbed: bool = False


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
        self.quality = QualityProbe(space.quality) if space.quality is not None else None
        self.memory_calibration = memory_fit.Calibration()
        self._shapes: dict[str, memory_fit.ModelShape | None] = {}

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

    def _shape(self, model: str) -> memory_fit.ModelShape | None:
        if model not in self._shapes:
            if model == self.space.model.resolved_path:
                self._shapes[model] = memory_fit.model_shape(self.model_config)
            else:  # a quantization variant's own checkpoint
                own = memory_fit.checkpoint_config(model)
                self._shapes[model] = memory_fit.model_shape(
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
        predicted = None if is_default else self.memory_estimate(config)
        misfit = predicted.misfit() if predicted is not None else None
        if misfit:
            outcome.state = "rejected"
            outcome.failure = EngineFailure(
                FailureKind.OUT_OF_MEMORY, f"predicted before launch: {misfit}"
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
            self._launch_and_measure(
                number, config, devices, outcome, on_phase, is_default=is_default
            )
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
                self._launch_and_measure(
                    number, retry, devices, outcome, on_phase, attempt=2, is_default=is_default
                )
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

    def log_path(self, number: int, attempt: int = 1) -> Path:
        """Where the engine of this trial (and attempt) logs."""
        suffix = "" if attempt == 1 else f".{attempt}"
        return self.log_dir / f"trial-{number:04d}{suffix}.log"

    def _launch_and_measure(
        self,
        number: int,
        config: EngineConfig,
        devices: DeviceSet,
        outcome: TrialOutcome,
        on_phase: PhaseCallback,
        attempt: int = 1,
        is_default: bool = False,
    ) -> None:
        log_path = self.log_path(number, attempt)
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
                robust = measure_robustly(
                    lambda: self._measure(engine), engine.base_url, self.space.measurement,
                    closed_loop=isinstance(self.space.workload.load, ConcurrencyLoad),
                    on_repeat=lambda n, why: on_phase(f"re-measuring ({n}): {why[0]}"),
                )
            result = robust.chosen or robust.measurements[-1].result
            outcome.timings["warmup_s"] = result.warmup_s
            outcome.timings["benchmark_s"] = sum(
                m.result.benchmark_s for m in robust.measurements
            )
            outcome.metrics = {**robust.metrics, **sampler.summary()}
            outcome.measurements = [m.to_dict() for m in robust.measurements]
            outcome.disturbed = robust.disturbed
            if robust.disturbed:
                outcome.notes.append(
                    "measured under disturbance: " + "; ".join(
                        robust.measurements[-1].disturbances)
                )
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
                self._probe_quality(engine, number, outcome, on_phase, may_record=is_default)
                if self.space.capacity is not None and engine.alive():
                    on_phase("searching SLO capacity")
                    started_capacity = time.monotonic()
                    outcome.metrics.update(self._capacity(engine, self.space.capacity))
                    outcome.timings["capacity_s"] = time.monotonic() - started_capacity
                write_result_file(log_path.with_suffix(".result.json"), outcome.metrics)
        except WorkloadError as exc:
            self._fail(outcome, EngineFailure(FailureKind.BENCHMARK_FAILED, str(exc)), log_path)
        finally:
            on_phase("tearing down")
            outcome.timings["teardown_s"] = engine.stop()

    def _probe_quality(
        self,
        engine: RunningEngine,
        number: int,
        outcome: TrialOutcome,
        on_phase: PhaseCallback,
        *,
        may_record: bool,
    ) -> None:
        """Accuracy / agreement on the same live server, after the load benchmark. A probe
        that cannot run leaves the quality metrics out (a quality constraint then fails)."""
        if self.quality is None:
            return
        on_phase("measuring quality")
        started = time.monotonic()
        try:
            result = self.quality.run(
                engine.base_url, engine.served_name, may_record=may_record, trial=number
            )
        except QualityError as exc:
            outcome.notes.append(str(exc))
        else:
            outcome.metrics.update(result.metrics)
            outcome.notes.extend(result.notes)
            outcome.quality_reference = result.recorded
        finally:
            outcome.timings["quality_s"] = time.monotonic() - started

    def _measure(self, engine: RunningEngine) -> BenchResult:
        return self.driver.run(
            Endpoint(engine.base_url, engine.served_name), self.space.workload, self.space.slos
        )

    def _capacity(self, engine: RunningEngine, spec: CapacitySpec) -> dict[str, float]:
        """Bracket and bisect the Poisson rate at which every SLO holds, on this engine."""
        endpoint = Endpoint(engine.base_url, engine.served_name)

        def measure(rate: float) -> dict[str, float]:
            workload = self.space.workload.model_copy(update={
                "load": PoissonLoad(rate=rate, max_concurrency=spec.max_concurrency),
                "num_requests": spec.requests_per_point,
                "warmup_requests": 0,
            })
            return self.driver.run(endpoint, workload, self.space.slos).metrics

        return find_capacity(measure, lambda m: slos_hold(self.space, m), spec).as_metrics()

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


def write_result_file(path: Path, metrics: Mapping[str, float]) -> None:
    """The trial's figures under ``vllm bench serve``'s JSON key names (plus our own), so
    tools that plot vLLM benchmark results read them."""
    try:
        path.write_text(json.dumps(to_vllm_bench_keys(finite_metrics(metrics)), indent=2))
    except OSError:
        pass


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Metrics with NaN/inf replaced by None-free JSON-safe values (dropped)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)
    }
