"""A weighted mix of workloads: the ``workloads:`` and ``aggregate:`` sections of a space file,
how per-workload metrics are named, and how a trial's aggregate figures are made from them.

A mix's trial measures each workload in turn on the same server. Each workload's figures are
stored under its name (``chat.ttft_p95_ms``); the unprefixed figures (``output_throughput``,
``ttft_p95_ms``, ...) are aggregates over the workloads, made as ``aggregate:`` says, and
``slo_attainment_worst`` / ``slo_attainment_weighted`` say how many requests met their own
workload's SLOs. Documented in docs/search-space.md, "Several workloads".

A leaf module beside ``space.workload`` (and the metric catalogue): the space file's sections
and the measuring step both use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autotune.metrics import (
    LATENCY_METRIC,
    directions,
    known_metric_names,
    natural_direction,
    of_kind,
)
from autotune.space.workload import WorkloadSpec

# Aggregates that exist only in a mix: the smallest, and the weighted mean, over workloads of
# the fraction of its requests that met all of that workload's SLOs (its goodput_fraction).
ATTAINMENT_WORST = "slo_attainment_worst"
ATTAINMENT_WEIGHTED = "slo_attainment_weighted"
MIX_METRICS = directions(of_kind("mix"))
# Combined as ``aggregate.throughput`` says.
THROUGHPUT_METRICS = tuple(m.name for m in of_kind("throughput"))

WORKLOAD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_PREFIXED = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\.(.+)$")

# Summed over workloads: totals of the measured runs.
SUMMED = ("completed", "failed", "total_input_tokens", "total_output_tokens", "duration_s")
# Resource figures measured around each workload's runs (devices.sampling).
SAMPLED = ("engine_rss_peak_mib", "gpu_mem_peak_mib", "gpu_util_mean_pct", "gpu_util_peak_pct",
           "cpu_util_mean_pct", "cpu_util_peak_pct", "engine_rss_mean_mib", "gpu_mem_mean_mib")


def per_workload_metric_names() -> list[str]:
    """Metrics each workload of a mix records under its own name (``NAME.<metric>``) and an
    objective may name: the load figures and the resources sampled around them. The quality
    probe, the capacity search and the cost belong to the trial, not to one workload."""
    load = [*THROUGHPUT_METRICS, *SUMMED, "error_rate"]
    return [n for n in known_metric_names()
            if n in load or LATENCY_METRIC.match(n) or n in SAMPLED]


def split_metric(name: str) -> tuple[str | None, str]:
    """``chat.ttft_p95_ms`` → ``("chat", "ttft_p95_ms")``; unprefixed → ``(None, name)``."""
    m = _PREFIXED.match(name)
    return (m.group(1), m.group(2)) if m else (None, name)


def metric_direction(name: str) -> str:
    """Which way is better for a metric, its workload prefix (if any) aside."""
    base = split_metric(name)[1]
    return MIX_METRICS.get(base) or natural_direction(base)


def check_slos(slos: dict[str, float]) -> dict[str, float]:
    """SLO keys are latency metrics, each limit a finite number > 0 (a single workload's and a
    mix's alike: ``nan <= 0`` is false, and a NaN limit would be met by every trial)."""
    for key, value in slos.items():
        if not LATENCY_METRIC.match(key):
            raise ValueError(
                f"unknown SLO {key!r}: use <ttft|tpot|itl|e2e>_<mean|p50|p90|p95|p99>_ms"
            )
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"SLO {key} must be a finite number > 0, got {value}")
    return slos


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MixWorkload(_Strict):
    """One workload of a mix: its share of the traffic, its prompts and load, its SLOs."""

    weight: float = Field(gt=0, description="share of the traffic (relative: normalised to 1)")
    workload: WorkloadSpec
    slos: dict[str, float] = Field(default_factory=dict)

    @field_validator("slos")
    @classmethod
    def _slo_keys(cls, slos: dict[str, float]) -> dict[str, float]:
        return check_slos(slos)


class AggregateSpec(_Strict):
    """How a mix's unprefixed figures are made from its workloads' figures.

    ``weighted``: Σ weight × value (weights normalised to sum to 1); ``worst``: the worst
    workload's value (the smallest throughput, the largest latency)."""

    throughput: Literal["weighted", "worst"] = Field(
        default="weighted",
        description="output/request/total-token throughput, request_goodput, goodput_fraction",
    )
    latency: Literal["worst", "weighted"] = Field(
        default="worst", description="every <latency>_<stat>_ms"
    )
    min_slo_attainment: float | None = Field(
        default=None, gt=0, le=1,
        description="constraint: slo_attainment_worst must be at least this",
    )


@dataclass(frozen=True)
class NamedWorkload:
    """A workload as a trial measures it. ``name`` is empty for a single-workload space (its
    metrics are unprefixed); ``weight`` is normalised (the weights of a mix sum to 1)."""

    name: str
    weight: float
    workload: WorkloadSpec
    slos: dict[str, float] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"{self.name}." if self.name else ""

    def metric(self, base: str) -> str:
        return self.prefix + base


def named_workloads(mix: Mapping[str, MixWorkload]) -> list[NamedWorkload]:
    total = sum(entry.weight for entry in mix.values())
    return [NamedWorkload(name, entry.weight / total, entry.workload, dict(entry.slos))
            for name, entry in mix.items()]


def aggregate(
    mix: list[NamedWorkload], spec: AggregateSpec, measured: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """The trial's metrics for a mix: each workload's ``measured[name]`` under its prefix, then
    the aggregates over the workloads measured (a metric some workload lacks, none; one that
    is NaN for some workload, NaN).

    Throughput-like figures follow ``spec.throughput``, latencies ``spec.latency``; the error
    rate is the worst (``max_error_rate`` holds for every workload); counts and durations are
    summed; sampled resources take the largest peak and the weighted mean."""
    out: dict[str, float] = {}
    for entry in mix:
        for key, value in measured.get(entry.name, {}).items():
            out[entry.metric(key)] = value
    done = [entry for entry in mix if entry.name in measured]
    if not done:
        return out
    names = set.intersection(*(set(measured[e.name]) for e in done))
    for name in sorted(names):
        values = [float(measured[e.name][name]) for e in done]
        weights = [e.weight for e in done]
        rule = _rule(name, spec)
        if rule is not None:
            out[name] = _combine(rule, values, weights)
    if "goodput_fraction" in names:
        fractions = [float(measured[e.name]["goodput_fraction"]) for e in done]
        out[ATTAINMENT_WORST] = _combine("min", fractions, [])
        out[ATTAINMENT_WEIGHTED] = _combine("weighted", fractions, [e.weight for e in done])
    return out


def _rule(name: str, spec: AggregateSpec) -> str | None:
    if name in THROUGHPUT_METRICS:
        return "weighted" if spec.throughput == "weighted" else "min"
    if LATENCY_METRIC.match(name):
        return "weighted" if spec.latency == "weighted" else "max"
    if name == "error_rate":
        return "max"
    if name in SUMMED:
        return "sum"
    if name in SAMPLED:
        return "max" if "_peak_" in name else "weighted"
    return None


def _combine(rule: str, values: list[float], weights: list[float]) -> float:
    if any(not math.isfinite(v) for v in values):
        return math.nan
    if rule == "weighted":
        # Renormalised over the workloads measured (all of them, unless the trial failed).
        return sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)
    if rule == "sum":
        return sum(values)
    return min(values) if rule == "min" else max(values)

