"""Per-request records → headline metrics: percentiles, throughput, goodput, error rate.

Metric names are ``<latency>_<stat>_ms`` (latency in ttft, tpot, itl, e2e; stat in mean, p50,
p90, p95, p99) plus throughput and count metrics, each described once in the metric catalogue
(``autotune.metrics``). ``to_vllm_bench_keys`` renames them to the JSON keys ``vllm bench serve
--save-result`` writes, so existing plotting tools read our files.

Every turn of a conversation is a request of its own for all of these (and for goodput and the
SLOs, as vLLM counts them); a run with conversations adds the conversation metrics: TTFT and
E2E of first turns apart from later ones (which resend the history, so the prefix cache serves
most of their prompt), and per conversation its duration without think time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from autotune.metrics import LATENCY_METRIC, PERCENTILES


@dataclass
class RequestRecord:
    """One measured request. Times in seconds, relative to the request's own send time (after
    the client's concurrency gate, as ``vllm bench serve`` takes it); ``queued_s`` is the time
    it waited at that gate first (vLLM's ``client_queue_time``)."""

    ok: bool
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float | None = None
    e2e: float | None = None
    itls: list[float] = field(default_factory=list)
    error: str = ""
    sent_at: float = 0.0  # time.perf_counter() when sent, and when its stream ended
    done_at: float = 0.0
    queued_s: float = 0.0
    # A turn of a multi-turn conversation: which conversation (its index in the run) and which
    # turn (0 first); a single request has conversation None.
    conversation: int | None = None
    turn: int = 0

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first (vLLM's definition)."""
        if self.ttft is None or self.e2e is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    def including_client_queue(self) -> RequestRecord:
        """The request as its user saw it: TTFT and E2E from its arrival, before the gate."""
        q = self.queued_s
        return replace(
            self, ttft=None if self.ttft is None else self.ttft + q,
            e2e=None if self.e2e is None else self.e2e + q, sent_at=self.sent_at - q,
            queued_s=0.0, itls=list(self.itls),
        )


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, the same definition as ``numpy.percentile``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(ordered[lo])
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def _latency_stats(name: str, seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    out = {f"{name}_mean_ms": (sum(ms) / len(ms)) if ms else math.nan}
    for p in PERCENTILES:
        out[f"{name}_p{p}_ms"] = percentile(ms, p)
    return out


# ``vllm bench serve --goodput`` names (ttft, tpot, e2el) of our latency metrics; ITL is not a
# goodput type there.
_GOODPUT_TYPES = {"ttft": "ttft", "tpot": "tpot", "e2e": "e2el"}
_STAT_ORDER = ("mean", "p50", "p90", "p95", "p99")


def goodput_limits(slos: Mapping[str, float]) -> dict[str, float]:
    """The per-request limits (ms) of ``--goodput``, one per latency type, from percentile SLOs.

    An SLO ``ttft_p95_ms: 500`` says a request is good when its TTFT is ≤ 500 ms (the
    percentile says how many must be). With several SLOs on one type, the one on the highest
    percentile bounds nearly every request and is its limit: applying the strictest (say a
    p50 bound) to every request would count most of the requests that meet the tail bound as
    bad."""
    chosen: dict[str, tuple[int, float]] = {}
    for key, limit in slos.items():
        m = LATENCY_METRIC.match(key)
        if not m or m.group(1) not in _GOODPUT_TYPES:
            continue
        name, rank = _GOODPUT_TYPES[m.group(1)], _STAT_ORDER.index(m.group(2))
        if name not in chosen or rank > chosen[name][0]:
            chosen[name] = (rank, float(limit))
    return {name: limit for name, (_, limit) in chosen.items()}


def meets_slos(record: RequestRecord, slos: Mapping[str, float]) -> bool:
    """Whether one request is good under ``goodput_limits(slos)``, as ``vllm bench serve``
    counts goodput: successful, with TTFT, TPOT (0 for a one-token answer) and E2E each within
    its limit."""
    if not record.ok:
        return False
    values = {"ttft": record.ttft, "tpot": record.tpot or 0.0, "e2el": record.e2e}
    for name, limit in goodput_limits(slos).items():
        value = values[name]
        if value is None or value * 1000.0 > limit:
            return False
    return True


def summarize(
    records: Sequence[RequestRecord], duration_s: float, slos: Mapping[str, float]
) -> dict[str, float]:
    """Headline metrics over the measured (non-warm-up) requests."""
    ok = [r for r in records if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    dur = max(duration_s, 1e-9)
    good = sum(1 for r in ok if meets_slos(r, slos))
    metrics: dict[str, float] = {
        "completed": float(len(ok)),
        "failed": float(len(records) - len(ok)),
        "error_rate": (len(records) - len(ok)) / len(records) if records else 1.0,
        "duration_s": duration_s,
        "total_input_tokens": float(in_tokens),
        "total_output_tokens": float(out_tokens),
        "request_throughput": len(ok) / dur,
        "output_throughput": out_tokens / dur,
        "total_token_throughput": (in_tokens + out_tokens) / dur,
        "request_goodput": good / dur,
        "goodput_fraction": good / len(records) if records else 0.0,
    }
    metrics |= _latency_stats("ttft", [r.ttft for r in ok if r.ttft is not None])
    metrics |= _latency_stats("tpot", [t for r in ok if (t := r.tpot) is not None])
    metrics |= _latency_stats("itl", [x for r in ok for x in r.itls])
    metrics |= _latency_stats("e2e", [r.e2e for r in ok if r.e2e is not None])
    if any(r.conversation is not None for r in records):
        metrics |= _conversation_metrics(records)
    return metrics


def _conversation_metrics(records: Sequence[RequestRecord]) -> dict[str, float]:
    """The conversation metrics (catalogue kind ``conversation``) over the turns of the run's
    conversations: per conversation whose turns all succeeded, the sum of its turns' E2E
    (send → last token), i.e. without think time and without the wait at the client's
    concurrency gate."""
    turns = [r for r in records if r.conversation is not None and r.ok]
    out: dict[str, float] = {}
    for part, chosen in (("first_turn", [r for r in turns if r.turn == 0]),
                         ("later_turn", [r for r in turns if r.turn > 0])):
        out |= _latency_stats(f"{part}_ttft", [r.ttft for r in chosen if r.ttft is not None])
        out |= _latency_stats(f"{part}_e2e", [r.e2e for r in chosen if r.e2e is not None])
    conversations: dict[int, list[RequestRecord]] = {}
    for record in records:
        if record.conversation is not None:
            conversations.setdefault(record.conversation, []).append(record)
    complete = [c for c in conversations.values() if all(r.ok for r in c)]
    out |= _latency_stats("conversation_duration",
                          [sum(r.e2e or 0.0 for r in c) for c in complete])
    out["conversations_completed"] = float(len(complete))
    out["conversations_failed"] = float(len(conversations) - len(complete))
    return out


_VLLM_STAT = {"mean": "mean", "p50": "median", "p90": "p90", "p95": "p95", "p99": "p99"}


def to_vllm_bench_keys(metrics: Mapping[str, float]) -> dict[str, float]:
    """Rename to ``vllm bench serve`` result keys (``p99_ttft_ms``, ``median_e2el_ms``...)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        m = LATENCY_METRIC.match(key)
        if m:
            lat = "e2el" if m.group(1) == "e2e" else m.group(1)
            out[f"{_VLLM_STAT[m.group(2)]}_{lat}_ms"] = value
            if m.group(2) == "p50":
                out[f"p50_{lat}_ms"] = value
        elif key in ("completed", "failed", "total_input_tokens", "total_output_tokens"):
            out[key] = int(value)
        elif key == "duration_s":
            out["duration"] = value
        else:
            out[key] = value
    return out


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Metrics with NaN/inf replaced by None-free JSON-safe values (dropped)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)
    }


def write_result_file(path: Path, metrics: Mapping[str, float]) -> None:
    """The trial's figures under ``vllm bench serve``'s JSON key names (plus our own), so
    tools that plot vLLM benchmark results read them."""
    try:
        path.write_text(json.dumps(to_vllm_bench_keys(finite_metrics(metrics)), indent=2))
    except OSError:
        pass
