"""The default measuring step: load, load ladder, quality and SLO capacity over the engine's
HTTP API.

Before every load run (each repeat, each capacity point), before the quality probe and once
all is measured, the engine must be alive and answer ``/health`` within the workload's
``stall_timeout_s``; the driver ends a run in which nothing arrives for that long. A stall of an
engine that still runs is ``transient`` ("engine stalled: ...": the trial starts it again); an
engine that exited fails it with its exit (signal or status, from the guard's log line) and the
log's last error, instead of whatever request the death broke first (killed by a signal
autotune did not send: transient). A request the engine never answered, in whatever phase
(/tokenize, the quality probe), is never a verdict on the configuration: the engine is asked why
(``lost``), and one that still serves lost it on the way (transient).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import httpx

from autotune.bench.capacity import CapacityResult, find_capacity
from autotune.bench.driver import BenchResult, Endpoint, EngineStalled, HttpLoadDriver, LoadDriver
from autotune.bench.engine_tokenizer import EngineUnreachable
from autotune.bench.ladder import ladder_into
from autotune.bench.measurement import MetricsPoller, measure_robustly
from autotune.bench.metrics import write_result_file
from autotune.bench.prompt_set import WorkloadError
from autotune.bench.step import MeasureContext, Measured
from autotune.devices.sampling import UtilisationSampler
from autotune.engines.base import EngineConfig, RunningEngine
from autotune.engines.failures import (
    EngineFailure,
    classify,
    reported_exit,
    reported_exit_text,
    stalled,
)
from autotune.metrics import COST_METRIC
from autotune.quality import QualityError, QualityProbe, QualityRequestLost
from autotune.scoring import cost_per_1m_output_tokens, slos_hold
from autotune.space import (
    CapacitySpec,
    ConcurrencyLoad,
    LadderSpec,
    NamedWorkload,
    PoissonLoad,
    QualitySpec,
    Space,
    WorkloadSpec,
    aggregate,
)
from autotune.trial_state import FailureKind


class HttpMeasurement:
    """Implements MeasuringStep on an OpenAI-compatible endpoint: the load driver under robust
    measurement and utilisation sampling, the cost metric; then, when requests succeeded, the
    quality probe and the SLO-capacity search on the same server, and the result file."""

    def __init__(self, quality: QualitySpec | None = None, driver: LoadDriver | None = None):
        self.driver = driver or HttpLoadDriver()
        self.quality = QualityProbe(quality) if quality is not None else None
        # The study's current front (objective values of its non-dominated feasible trials),
        # for the load ladder's early stop; the study runner sets it.
        self.front: Callable[[], Sequence[Sequence[float]]] | None = None

    def measure(
        self, engine: RunningEngine, config: EngineConfig, trial: MeasureContext
    ) -> Measured:
        found = Measured()
        runs = itertools.count()  # every run on this server gets prompts of its own
        space = trial.space
        timeout_s = space.primary_workload.stall_timeout_s
        try:
            by_workload: dict[str, dict[str, float]] = {}
            for entry in space.mix:  # one workload, or each of a mix in turn, on this server
                self._load(engine, trial, found, runs, entry, by_workload)
                if found.failure is not None:
                    break
            if found.failure is None:
                self._ladder(engine, trial, found, runs)
                check_serving(engine, timeout_s)
                self._probe_quality(engine, trial, found)
                capacity = trial.space.capacity
                if capacity is not None:
                    trial.on_phase("searching SLO capacity")
                    started = time.monotonic()
                    found.metrics.update(
                        self.capacity(engine, trial.space, capacity, runs).as_metrics())
                    found.timings["capacity_s"] = time.monotonic() - started
                # An engine that died or hung at any point since its last check (during the
                # last run's closing /metrics scrape, the capacity search) measured nothing
                # to keep.
                check_serving(engine, timeout_s)
                write_result_file(trial.log_path.with_suffix(".result.json"), found.metrics)
        except EngineFailure as exc:
            found.failure = exc
        except EngineStalled as exc:
            found.failure = exited(engine) if stopped(engine) else stalled(str(exc))
        except (EngineUnreachable, QualityRequestLost) as exc:
            found.failure = lost(engine, str(exc), timeout_s)
        except WorkloadError as exc:
            # e.g. /tokenize answered an error: an engine that died or stopped answering says
            # why better than the request
            found.failure = lost(engine, str(exc), timeout_s, answered=True)
        return found

    def _load(
        self, engine: RunningEngine, trial: MeasureContext, found: Measured, runs: Iterator[int],
        entry: NamedWorkload, by_workload: dict[str, dict[str, float]],
    ) -> None:
        """Measure one workload (robustly, utilisation sampled) into ``by_workload``, and
        ``found.metrics`` anew from all measured so far (before any check that may raise, so
        the figures are kept); its timings add up in ``found``, its measurements are appended
        (tagged with a mix's workload name); a run with no success sets ``found.failure``."""
        space, workload = trial.space, entry.workload
        label = f" {entry.name}" if entry.name else ""
        trial.on_phase("benchmarking" + label)
        with UtilisationSampler(trial.pool, trial.devices, engine.pids) as sampler:
            robust = measure_robustly(
                lambda: self.run_load(engine, workload, entry.slos, next(runs)), engine.base_url,
                space.measurement,
                closed_loop=isinstance(workload.load, ConcurrencyLoad),
                on_repeat=lambda n, why: trial.on_phase(f"re-measuring{label} ({n}): {why[0]}"),
            )
        result = robust.chosen or robust.measurements[-1].result
        by_workload[entry.name] = {**robust.metrics, **sampler.summary()}
        found.metrics = trial_figures(trial, by_workload)
        found.timings["warmup_s"] = found.timings.get("warmup_s", 0.0) + result.warmup_s
        found.timings["benchmark_s"] = found.timings.get("benchmark_s", 0.0) + sum(
            m.result.benchmark_s for m in robust.measurements)
        found.measurements += [{**({"workload": entry.name} if entry.name else {}), **m.to_dict()}
                               for m in robust.measurements]
        found.disturbed = found.disturbed or robust.disturbed
        if robust.disturbed:
            found.notes.append(
                f"measured{label} under disturbance: "
                + "; ".join(robust.measurements[-1].disturbances)
            )
        if result.metrics.get("failed"):
            check_serving(engine, workload.stall_timeout_s)  # a death broke them?
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

    def _ladder(
        self, engine: RunningEngine, trial: MeasureContext, found: Measured, runs: Iterator[int]
    ) -> None:
        """The load ladder (space ``ladder:``) on this server, after the main measurement
        (which warmed it up): each level short, with prompts of its own, its latencies counted
        from arrival (the client gate's wait included). Adds the curve metrics, one
        ``measurements`` entry per level, and the early stop's reason as a note."""
        space, spec = trial.space, trial.space.ladder
        if spec is None:
            return
        started = time.monotonic()
        planned = spec.resolved_levels()
        primary = space.mix[0]  # as the capacity search: a mix's first workload

        def measure(load: float) -> dict[str, float]:
            workload = primary.workload.model_copy(update={
                "load": ladder_load(spec, load), "num_requests": spec.requests_per_level,
                "warmup_requests": 0,
            })
            run_index = next(runs)
            with MetricsPoller(engine.base_url) as poller:
                result = self.run_load(engine, workload, primary.slos, run_index)
            figures = result.figures(primary.slos, from_arrival=True)
            return figures | poller.delta() | {"run_index": float(run_index)}

        def on_level(index: int, load: float) -> None:
            where = (f"{index + 1}/{len(planned)}" if index < len(planned)
                     else f"{index + 1}, above the listed ones")
            trial.on_phase(f"load ladder: level {where} ({spec.kind} {load:g})")

        ladder_into(found, trial, measure, self.front, on_level=on_level)
        found.timings["ladder_s"] = time.monotonic() - started

    def run_load(
        self, engine: RunningEngine, workload: WorkloadSpec, slos: Mapping[str, float],
        run_index: int = 0,
    ) -> BenchResult:
        """Run ``run_index`` of ``workload`` against ``engine`` (each index has prompts of its
        own), scored against ``slos``, once the engine is alive and answers /health."""
        check_serving(engine, workload.stall_timeout_s)
        return self.driver.run(Endpoint(engine.base_url, engine.served_name), workload,
                               slos, run_index)

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
        except QualityRequestLost:
            raise  # never answered: the engine's fault of the moment (``lost``)
        except QualityError as exc:
            # An engine that died or stopped answering fails the start; one that serves and
            # refused the probe is measured without its quality.
            check_serving(engine, trial.space.primary_workload.stall_timeout_s)
            found.notes.append(str(exc))
        else:
            found.metrics.update(result.metrics)
            found.notes.extend(result.notes)
            found.quality_reference = result.recorded
        finally:
            found.timings["quality_s"] = time.monotonic() - started

    def capacity(
        self, engine: RunningEngine, space: Space, spec: CapacitySpec,
        runs: Iterator[int] | None = None,
    ) -> CapacityResult:
        """Bracket and bisect the Poisson rate at which every SLO of ``space``'s primary
        workload (the only one, or a mix's first) holds, on this engine, each load point
        measured by ``capacity_point`` with prompts of its own (run indices from ``runs``)."""
        fresh = runs if runs is not None else itertools.count()
        return find_capacity(
            lambda rate: self.capacity_point(engine, space, spec, rate, next(fresh)),
            lambda m: slos_hold(space, m), spec)

    def capacity_point(
        self, engine: RunningEngine, space: Space, spec: CapacitySpec, rate: float,
        run_index: int,
    ) -> dict[str, float]:
        """One load point of the capacity search: the primary workload at Poisson ``rate``.
        Latencies are judged as a user arriving at that rate sees them: from arrival,
        including any wait behind the client's ``max_concurrency`` gate (else a rate far above
        the server's would hold, its queue hidden on the client)."""
        primary = space.mix[0]
        workload = primary.workload.model_copy(update={
            "load": PoissonLoad(rate=rate, max_concurrency=spec.max_concurrency),
            "num_requests": spec.requests_per_point,
            "warmup_requests": 0,
        })
        result = self.run_load(engine, workload, primary.slos, run_index)
        return result.figures(primary.slos, from_arrival=True)


def trial_figures(trial: MeasureContext, by_workload: Mapping[str, dict[str, float]]
                  ) -> dict[str, float]:
    """The trial's load metrics: the one workload's (keyed ``""``), or a mix's prefixed per
    workload with their aggregates; plus the cost at the (aggregate) output throughput."""
    space = trial.space
    metrics = (aggregate(space.mix, space.aggregation, by_workload) if space.is_mix
               else dict(by_workload[""]))
    if space.cost is not None:
        metrics[COST_METRIC] = cost_per_1m_output_tokens(
            space.cost.device_hour_usd, len(trial.devices.ids),
            metrics.get("output_throughput", 0.0),
        )
    return metrics


def ladder_load(spec: LadderSpec, load: float) -> ConcurrencyLoad | PoissonLoad:
    """The workload load of one ladder level."""
    if spec.kind == "concurrency":
        return ConcurrencyLoad(concurrency=int(load))
    return PoissonLoad(rate=load, max_concurrency=spec.max_concurrency)


# How long a death takes to show: the guard notices the engine's exit within a poll (0.2 s)
# and reports it in the log at once, then tears the rest of the tree down before exiting.
DEATH_WAIT_S = 10.0


def check_serving(engine: RunningEngine, timeout_s: float) -> None:
    """Raise EngineFailure unless ``engine`` is alive and its /health answers 200 within
    ``timeout_s`` (a stopped or hung engine accepts the connection and never answers). An
    engine that exited fails with its exit; one that runs but never answers is transient."""
    if stopped(engine):
        raise exited(engine)
    answered = True
    try:
        status = httpx.get(f"{engine.base_url}/health", timeout=timeout_s).status_code
        problem = "" if status == 200 else f"/health answered HTTP {status}"
    except httpx.TimeoutException:
        if stopped(engine):
            raise exited(engine) from None
        raise stalled(f"engine stalled: /health did not answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        answered = False
        problem = f"/health failed: {type(exc).__name__}: {exc}"
    if problem:
        if stopped(engine, wait_s=DEATH_WAIT_S):
            raise exited(engine)
        if not answered:
            raise stalled(f"engine stopped answering: {problem}; its process still runs")
        raise EngineFailure(FailureKind.BENCHMARK_FAILED, f"engine stopped serving: {problem}")


def lost(
    engine: RunningEngine, reason: str, timeout_s: float, *, answered: bool = False
) -> EngineFailure:
    """The failure of a request to ``engine`` that failed with ``reason``: the engine's exit
    when it died (named by its signal or status), a stall when it no longer answers /health
    (transient); else, for a request it never ``answered`` (refused, reset, timed out), a
    transient fault of this start, and for one it answered with an error, that answer
    (``benchmark_failed``)."""
    try:
        check_serving(engine, timeout_s)
    except EngineFailure as failure:
        return failure
    if answered:
        return EngineFailure(FailureKind.BENCHMARK_FAILED, reason)
    return EngineFailure(FailureKind.TRANSIENT, f"{reason} (the engine still serves)")


def _log(engine: RunningEngine) -> str:
    try:
        return engine.log_path.read_text(errors="replace")
    except OSError:
        return ""


def stopped(engine: RunningEngine, wait_s: float = 0.0) -> bool:
    """Whether the engine has exited (its process, or its guard's report in the log: the guard
    reaps the engine's children before it exits itself, seconds after a death), waiting up to
    ``wait_s`` for it to do so."""
    deadline = time.monotonic() + wait_s
    while engine.alive() and reported_exit(_log(engine)) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def exited(engine: RunningEngine) -> EngineFailure:
    """The engine's death as a failure: its kind from its exit (as the guard reported it, else
    the engine's own account) and its log, and a reason that names the exit (signal or status)
    and the log's deciding error. Called once the guard reported the exit: it waits (up to
    ``DEATH_WAIT_S``) for the guard to have torn the rest of the tree down and exited."""
    deadline = time.monotonic() + DEATH_WAIT_S
    while engine.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = _log(engine)
    code = reported_exit(log)
    failure = classify(log, code) if code is not None else engine.failure()
    how = reported_exit_text(log) or "engine exited"
    return EngineFailure(
        failure.kind, f"the engine process exited during the measurement ({how}): "
        f"{failure.reason}", failure.line,
    )
