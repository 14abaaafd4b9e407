"""vLLM's own view of a measurement, from its Prometheus ``/metrics`` endpoint.

Scrape ``/metrics`` before and after a measurement (and, for peaks, now and then during it:
``Peaks`` folds those in as they come, keeping no text); ``engine_metrics`` turns the scrapes
into per-measurement figures that explain a result:
preemptions, peak KV-cache usage, prefix-cache hit rate, speculative-decoding acceptance, queue
time. Names are those of vLLM's ``v1/metrics/loggers.py`` and ``v1/spec_decode/metrics.py``
(v0.32); prometheus_client exports a counter ``x`` as ``x_total`` (plus ``x_created``).
Values are summed over label sets (engines, models) unless said otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import NamedTuple

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # a fraction: 1.0 means full
PREEMPTIONS = "vllm:num_preemptions"
PREFIX_QUERIES = "vllm:prefix_cache_queries"
PREFIX_HITS = "vllm:prefix_cache_hits"
SPEC_DRAFTS = "vllm:spec_decode_num_drafts"
SPEC_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
SPEC_ACCEPTED_TOKENS = "vllm:spec_decode_num_accepted_tokens"
QUEUE_TIME = "vllm:request_queue_time_seconds"


class Sample(NamedTuple):
    """One exposition line: ``name{labels} value``."""

    name: str
    labels: Mapping[str, str]
    value: float


def _parse_labels(text: str, lineno: int) -> tuple[dict[str, str], int]:
    """Labels from ``text`` starting just after ``{``; returns them and the index after ``}``."""
    labels: dict[str, str] = {}
    i = 0
    while True:
        while i < len(text) and text[i] in " ,":
            i += 1
        if i < len(text) and text[i] == "}":
            return labels, i + 1
        eq = text.find("=", i)
        if eq < 0:
            raise ValueError(f"line {lineno}: malformed labels")
        key = text[i:eq].strip()
        i = eq + 1
        while i < len(text) and text[i] == " ":
            i += 1
        if i >= len(text) or text[i] != '"' or not key:
            raise ValueError(f"line {lineno}: malformed labels")
        i += 1
        value: list[str] = []
        while True:
            if i >= len(text):
                raise ValueError(f"line {lineno}: unterminated label value")
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif ch == '"':
                i += 1
                break
            else:
                value.append(ch)
                i += 1
        labels[key] = "".join(value)


def parse_prometheus(text: str) -> list[Sample]:
    """The samples of a Prometheus (or OpenMetrics) text exposition.

    Comment lines (``# HELP``, ``# TYPE``, ``# EOF``) and blank lines are skipped; a trailing
    timestamp is dropped. Histograms come out as their ``_bucket`` (label ``le``), ``_sum`` and
    ``_count`` samples.

    Raises:
        ValueError: a line is not a sample (e.g. a scrape cut off mid-line).
    """
    samples: list[Sample] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace >= 0 and (space < 0 or brace < space):
            name = line[:brace]
            labels, end = _parse_labels(line[brace + 1 :], lineno)
            rest = line[brace + 1 + end :].split()
        else:
            name, labels, rest = line[:space] if space > 0 else line, {}, line[space:].split()
        if not name or not rest or len(rest) > 2:
            raise ValueError(f"line {lineno}: not a sample: {raw[:120]!r}")
        try:
            value = float(rest[0])
        except ValueError:
            raise ValueError(f"line {lineno}: bad value {rest[0]!r}") from None
        samples.append(Sample(name, labels, value))
    return samples


_LabelKey = tuple[tuple[str, str], ...]


class Scrape:
    """One parsed ``/metrics`` text, indexed by metric name and label set."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self._series: dict[str, dict[_LabelKey, float]] = {}
        for s in samples:
            self._series.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value

    @classmethod
    def parse(cls, text: str) -> Scrape:
        return cls(parse_prometheus(text))

    def series(self, name: str) -> dict[_LabelKey, float]:
        """Every label set of the sample name ``name`` (exact, suffixes included) → value."""
        return dict(self._series.get(name, {}))

    def has(self, name: str) -> bool:
        return name in self._series

    def gauge_sum(self, name: str) -> float | None:
        """Sum over label sets; None when the metric is absent."""
        return sum(self._series[name].values()) if name in self._series else None

    def gauge_max(self, name: str) -> float | None:
        """Largest value over label sets; None when the metric is absent."""
        return max(self._series[name].values()) if self._series.get(name) else None

    def counter_name(self, name: str) -> str | None:
        """The exported sample name of counter ``name`` (``name_total``, else ``name``)."""
        for candidate in (f"{name}_total", name):
            if candidate in self._series:
                return candidate
        return None


def _as_scrape(scrape: str | Scrape) -> Scrape:
    return scrape if isinstance(scrape, Scrape) else Scrape.parse(scrape)


def _series_delta(before: Scrape, after: Scrape, sample_name: str) -> float | None:
    """Increase of a monotonic sample between scrapes, summed over label sets.

    A series that went down was reset (engine restarted): its increase is its new value, as in
    Prometheus' ``increase()``. A series absent before counts from zero.
    """
    if not after.has(sample_name):
        return None
    old = before.series(sample_name)
    total = 0.0
    for labels, value in after.series(sample_name).items():
        prev = old.get(labels, 0.0)
        total += value - prev if value >= prev else value
    return total


def counter_delta(before: str | Scrape, after: str | Scrape, name: str) -> float | None:
    """Increase of counter ``name`` (without ``_total``) between two scrapes; None if absent."""
    b, a = _as_scrape(before), _as_scrape(after)
    sample_name = a.counter_name(name)
    return None if sample_name is None else _series_delta(b, a, sample_name)


def histogram_mean_delta(before: str | Scrape, after: str | Scrape, name: str) -> float | None:
    """Mean of the observations of histogram ``name`` made between two scrapes.

    None when the histogram is absent or nothing was observed in between.
    """
    b, a = _as_scrape(before), _as_scrape(after)
    total = _series_delta(b, a, f"{name}_sum")
    count = _series_delta(b, a, f"{name}_count")
    if total is None or not count:
        return None
    return total / count


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return num / den


class Peaks:
    """Running peaks of the scrapes made during a measurement: the gauges whose highest value
    ``EngineMetricsDelta`` reports, folded in scrape by scrape, so that a long run keeps three
    numbers instead of every /metrics text (a busy vLLM's is hundreds of KB)."""

    def __init__(self) -> None:
        self.kv_cache_usage: float | None = None
        self.waiting: float | None = None
        self.running: float | None = None
        self.scrapes = 0

    def add(self, scrape: str | Scrape) -> None:
        """Fold in one scrape. Raises ValueError when its text does not parse."""
        parsed = _as_scrape(scrape)
        self.kv_cache_usage = _higher(self.kv_cache_usage, parsed.gauge_max(KV_CACHE_USAGE))
        self.waiting = _higher(self.waiting, parsed.gauge_sum(WAITING))
        self.running = _higher(self.running, parsed.gauge_sum(RUNNING))
        self.scrapes += 1


def _higher(peak: float | None, value: float | None) -> float | None:
    if value is None:
        return peak
    return value if peak is None else max(peak, value)


@dataclass(frozen=True)
class EngineMetricsDelta:
    """What the engine did during one measurement; None where the engine did not say.

    preemptions: requests preempted (KV cache ran out), summed over engines.
    kv_cache_usage_peak_pct: highest KV-cache usage seen by any engine in any scrape, in %.
    prefix_cache_hit_rate: cached / queried prompt tokens (None when nothing was queried).
    spec_decode_acceptance_rate: accepted / proposed draft tokens (None without drafts).
    spec_decode_mean_acceptance_length: 1 + accepted tokens per draft, vLLM's own definition.
    queue_time_mean_ms: mean time requests waited before scheduling.
    requests_waiting_peak, requests_running_peak: highest totals over engines in any scrape.
    """

    preemptions: float | None = None
    kv_cache_usage_peak_pct: float | None = None
    prefix_cache_hit_rate: float | None = None
    spec_decode_acceptance_rate: float | None = None
    spec_decode_mean_acceptance_length: float | None = None
    queue_time_mean_ms: float | None = None
    requests_waiting_peak: float | None = None
    requests_running_peak: float | None = None

    @classmethod
    def from_scrapes(
        cls,
        before: str | Scrape,
        after: str | Scrape,
        samples_during: Iterable[str | Scrape] = (),
        peaks: Peaks | None = None,
    ) -> EngineMetricsDelta:
        """Deltas between ``before`` and ``after``; peaks over all three arguments' scrapes
        (and over ``peaks``, the scrapes between already folded in).

        Raises:
            ValueError: a scrape text does not parse (see ``parse_prometheus``).
        """
        b, a = _as_scrape(before), _as_scrape(after)
        every = Peaks()
        for scrape in (b, *samples_during, a):
            every.add(scrape)
        if peaks is not None:
            every.kv_cache_usage = _higher(every.kv_cache_usage, peaks.kv_cache_usage)
            every.waiting = _higher(every.waiting, peaks.waiting)
            every.running = _higher(every.running, peaks.running)
        kv_peak = every.kv_cache_usage
        drafts = counter_delta(b, a, SPEC_DRAFTS)
        accepted = counter_delta(b, a, SPEC_ACCEPTED_TOKENS)
        queue_s = histogram_mean_delta(b, a, QUEUE_TIME)
        per_draft = _ratio(accepted, drafts)
        return cls(
            preemptions=counter_delta(b, a, PREEMPTIONS),
            kv_cache_usage_peak_pct=None if kv_peak is None else kv_peak * 100.0,
            prefix_cache_hit_rate=_ratio(
                counter_delta(b, a, PREFIX_HITS), counter_delta(b, a, PREFIX_QUERIES)
            ),
            spec_decode_acceptance_rate=_ratio(accepted, counter_delta(b, a, SPEC_DRAFT_TOKENS)),
            spec_decode_mean_acceptance_length=None if per_draft is None else 1.0 + per_draft,
            queue_time_mean_ms=None if queue_s is None else queue_s * 1000.0,
            requests_waiting_peak=every.waiting,
            requests_running_peak=every.running,
        )

    def to_dict(self) -> dict[str, float]:
        """The figures the engine reported, by field name; absent ones left out."""
        out: dict[str, float] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not math.isnan(value):
                out[f.name] = float(value)
        return out


def engine_metrics(
    before: str | Scrape, after: str | Scrape, samples_during: Iterable[str | Scrape] = (),
    peaks: Peaks | None = None,
) -> dict[str, float]:
    """``EngineMetricsDelta.from_scrapes(...).to_dict()``: the per-measurement figures."""
    return EngineMetricsDelta.from_scrapes(before, after, samples_during, peaks).to_dict()
