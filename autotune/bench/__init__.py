"""Measuring a serving engine: the load driver (completions and chats over HTTP), prompts from
workloads, datasets and traces, headline metrics, statistics of trust (windows, intervals,
disturbance), the load ladder and capacity at SLO, vLLM's /metrics, host load, and the measuring
step a trial runs (``MeasuringStep``; ``HttpMeasurement`` by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.lazy import lazy_attributes

if TYPE_CHECKING:
    from autotune.bench.driver import Endpoint, HttpLoadDriver, LoadDriver
    from autotune.bench.http_step import HttpMeasurement
    from autotune.bench.ladder import ladder_into, levels_of, pareto_values
    from autotune.bench.metrics import finite_metrics
    from autotune.bench.stats import binomial_cdf
    from autotune.bench.step import MeasureContext, Measured, MeasuringStep

# Each name's module, imported on first use (autotune.lazy).
_HOMES = {
    "Endpoint": "autotune.bench.driver",
    "HttpLoadDriver": "autotune.bench.driver",
    "HttpMeasurement": "autotune.bench.http_step",
    "LoadDriver": "autotune.bench.driver",
    "MeasureContext": "autotune.bench.step",
    "Measured": "autotune.bench.step",
    "MeasuringStep": "autotune.bench.step",
    "binomial_cdf": "autotune.bench.stats",
    "finite_metrics": "autotune.bench.metrics",
    "ladder_into": "autotune.bench.ladder",
    "levels_of": "autotune.bench.ladder",
    "pareto_values": "autotune.bench.ladder",
}

__all__ = [
    "Endpoint",
    "HttpLoadDriver",
    "HttpMeasurement",
    "LoadDriver",
    "MeasureContext",
    "Measured",
    "MeasuringStep",
    "binomial_cdf",
    "finite_metrics",
    "ladder_into",
    "levels_of",
    "pareto_values",
]

__getattr__ = lazy_attributes(__name__, _HOMES)
