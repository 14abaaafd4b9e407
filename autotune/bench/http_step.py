"""The default measuring step: load, quality and SLO capacity over the engine's HTTP API."""

from __future__ import annotations

import time

from autotune.bench.capacity import CapacitySpec, find_capacity
from autotune.bench.driver import BenchResult, Endpoint, HttpLoadDriver, LoadDriver
from autotune.bench.metrics import write_result_file
from autotune.bench.step import MeasureContext, Measured
from autotune.bench.workload import WorkloadError
from autotune.bench.workload_spec import ConcurrencyLoad, PoissonLoad, WorkloadSpec
from autotune.devices.sampling import UtilisationSampler
from autotune.engines.base import EngineConfig, RunningEngine
from autotune.engines.failures import EngineFailure, FailureKind
from autotune.measurement import measure_robustly
from autotune.quality.probe import QualityError, QualityProbe
from autotune.quality.spec import QualitySpec
from autotune.scoring import COST_METRIC, cost_per_1m_output_tokens, slos_hold
from autotune.space import Space


class HttpMeasurement:
    """Implements MeasuringStep on an OpenAI-compatible endpoint: the load driver under robust
    measurement and utilisation sampling, the cost metric; then, when requests succeeded, the
    quality probe and the SLO-capacity search on the same server, and the result file."""

    def __init__(self, quality: QualitySpec | None = None, driver: LoadDriver | None = None):
        self.driver = driver or HttpLoadDriver()
        self.quality = QualityProbe(quality) if quality is not None else None

    def measure(
        self, engine: RunningEngine, config: EngineConfig, trial: MeasureContext
    ) -> Measured:
        found = Measured()
        try:
            self._load(engine, trial, found)
            if found.failure is None:
                self._probe_quality(engine, trial, found)
                capacity = trial.space.capacity
                if capacity is not None and engine.alive():
                    trial.on_phase("searching SLO capacity")
                    started = time.monotonic()
                    found.metrics.update(self.capacity(engine, trial.space, capacity))
                    found.timings["capacity_s"] = time.monotonic() - started
                write_result_file(trial.log_path.with_suffix(".result.json"), found.metrics)
        except WorkloadError as exc:
            found.failure = EngineFailure(FailureKind.BENCHMARK_FAILED, str(exc))
        return found

    def _load(self, engine: RunningEngine, trial: MeasureContext, found: Measured) -> None:
        space = trial.space
        trial.on_phase("benchmarking")
        with UtilisationSampler(trial.pool, trial.devices, engine.pids) as sampler:
            robust = measure_robustly(
                lambda: self.run_load(engine, space.workload, space), engine.base_url,
                space.measurement,
                closed_loop=isinstance(space.workload.load, ConcurrencyLoad),
                on_repeat=lambda n, why: trial.on_phase(f"re-measuring ({n}): {why[0]}"),
            )
        result = robust.chosen or robust.measurements[-1].result
        found.timings["warmup_s"] = result.warmup_s
        found.timings["benchmark_s"] = sum(m.result.benchmark_s for m in robust.measurements)
        found.metrics = {**robust.metrics, **sampler.summary()}
        found.measurements = [m.to_dict() for m in robust.measurements]
        found.disturbed = robust.disturbed
        if robust.disturbed:
            found.notes.append(
                "measured under disturbance: " + "; ".join(robust.measurements[-1].disturbances)
            )
        if space.cost is not None:
            found.metrics[COST_METRIC] = cost_per_1m_output_tokens(
                space.cost.device_hour_usd, len(trial.devices.ids),
                found.metrics.get("output_throughput", 0.0),
            )
        if result.metrics.get("completed", 0) == 0:
            failure = engine.failure()
            if failure.kind == FailureKind.CRASHED:  # it still runs: the requests failed
                errors = [r.error for r in result.records if r.error][:1]
                failure = EngineFailure(
                    FailureKind.BENCHMARK_FAILED,
                    "no request succeeded" + (f": {errors[0]}" if errors else ""),
                    failure.line,
                )
            found.failure = failure

    def run_load(self, engine: RunningEngine, workload: WorkloadSpec, space: Space) -> BenchResult:
        """One run of ``workload`` against ``engine``, scored against ``space``'s SLOs."""
        return self.driver.run(Endpoint(engine.base_url, engine.served_name), workload, space.slos)

    def _probe_quality(
        self, engine: RunningEngine, trial: MeasureContext, found: Measured
    ) -> None:
        """Accuracy / agreement on the same live server, after the load benchmark. A probe
        that cannot run leaves the quality metrics out (a quality constraint then fails)."""
        if self.quality is None:
            return
        trial.on_phase("measuring quality")
        started = time.monotonic()
        try:
            result = self.quality.run(
                engine.base_url, engine.served_name, may_record=trial.is_default,
                trial=trial.number,
            )
        except QualityError as exc:
            found.notes.append(str(exc))
        else:
            found.metrics.update(result.metrics)
            found.notes.extend(result.notes)
            found.quality_reference = result.recorded
        finally:
            found.timings["quality_s"] = time.monotonic() - started

    def capacity(
        self, engine: RunningEngine, space: Space, spec: CapacitySpec
    ) -> dict[str, float]:
        """Bracket and bisect the Poisson rate at which every SLO of ``space`` holds, on this
        engine."""

        def measure(rate: float) -> dict[str, float]:
            workload = space.workload.model_copy(update={
                "load": PoissonLoad(rate=rate, max_concurrency=spec.max_concurrency),
                "num_requests": spec.requests_per_point,
                "warmup_requests": 0,
            })
            return self.run_load(engine, workload, space).metrics

        return find_capacity(measure, lambda m: slos_hold(space, m), spec).as_metrics()
