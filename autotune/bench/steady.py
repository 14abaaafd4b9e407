"""Steady-state load levels: which requests of a run are measured, and over which window.

A load level is the server under a load held at its target (``concurrency`` requests in flight,
or Poisson arrivals at ``rate``), not one burst of requests. ``SteadyWindow`` follows one run
through three phases, as GuideLLM trims warm-up and cool-down:

* **ramp-up**: from the first send until the load has turned over: ``concurrency``
  completions in a closed loop (every slot has finished the request it opened with, so the
  opening burst of prefills is over), the first completion in an open loop (the queue has
  filled to its steady depth). Requests sent then are not measured.
* **window**: requests sent from then on are measured, until the window holds at least its
  ``requests`` and lasts ``min_duration_s`` (or ``max_requests`` were sent, or the prompts
  run short: then ``short`` says so).
* **drain**: the load is held (requests keep being sent, never measured) until every measured
  request has finished, so none of them ran under a thinning load; then the run ends and the
  drain requests still in flight are cancelled.

Latencies (TTFT, TPOT, ITL, E2E) are those of the measured requests; throughputs count the
requests that *completed* inside the window (whatever their phase) over its length, the
steady completion rate (``window_metrics``). The driver (``bench.driver``) runs the loops;
this module only keeps the books.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from autotune.bench.metrics import RequestRecord, summarize
from autotune.space import ConcurrencyLoad, SteadyState, WorkloadSpec

RAMP, MEASURED, DRAIN = "ramp", "measured", "drain"


@dataclass(frozen=True)
class SteadyPlan:
    """What one steady run aims at: ``concurrency`` (None: an open loop), the least measured
    requests, the least window length, the most measured requests."""

    concurrency: int | None
    requests: int
    min_duration_s: float
    max_requests: int

    @classmethod
    def of(cls, workload: WorkloadSpec, rule: SteadyState) -> SteadyPlan:
        concurrency = (workload.load.concurrency if isinstance(workload.load, ConcurrencyLoad)
                       else None)
        rate = getattr(workload.load, "rate", None)
        requests = rule.window_requests(workload.num_requests, concurrency)
        if rate:  # an open loop's time floor is known up front
            requests = min(rule.max_requests,
                           max(requests, math.ceil(rate * rule.min_duration_s)))
        return cls(concurrency, requests, rule.min_duration_s,
                   max(rule.max_requests, requests))

    def prompts_needed(self) -> int:
        """Prompts to build before the run: ramp-up and drain (a concurrency each, or a
        quarter of the window for an open loop) and the window's least requests; the driver
        builds more, a window's worth at a time, while the time floor needs them."""
        edge = self.concurrency if self.concurrency else max(8, self.requests // 4)
        return 2 * edge + self.requests


@dataclass
class SteadyWindow:
    """The books of one steady run (times are ``time.perf_counter()``)."""

    plan: SteadyPlan
    first_send: float | None = None
    opened: float | None = None  # end of ramp-up: the window's start
    closed: float | None = None  # the window's end: no measured send after it
    completions: int = 0
    sent: dict[str, int] = field(default_factory=lambda: {RAMP: 0, MEASURED: 0, DRAIN: 0})
    measured_in_flight: int = 0
    short: bool = False  # the window closed on the prompt supply, before its floors
    records: list[RequestRecord] = field(default_factory=list)  # every finished request's

    def on_send(self, now: float, left: int) -> str:
        """The phase of a request (or conversation) sent at ``now``, ``left`` prompts after
        it; closes the window when this send would be past it."""
        if self.first_send is None:
            self.first_send = now
        if self.opened is None:
            phase = RAMP
        elif self.closed is None and self._full(now):
            self.closed = now
            phase = DRAIN
        else:
            phase = MEASURED if self.closed is None else DRAIN
        if phase == MEASURED:
            self.measured_in_flight += 1
            edge = self.plan.concurrency or 0
            if left <= edge and not self._full(now):  # keep the rest for the drain
                self.closed, self.short = now, True
        self.sent[phase] += 1
        return phase

    def _full(self, now: float) -> bool:
        assert self.opened is not None
        measured = self.sent[MEASURED]
        return measured >= self.plan.max_requests or (
            measured >= self.plan.requests and now - self.opened >= self.plan.min_duration_s)

    def on_done(self, now: float, phase: str) -> None:
        """A request (or conversation) of ``phase`` finished at ``now``."""
        self.completions += 1
        if phase == MEASURED:
            self.measured_in_flight -= 1
        if self.opened is None and self.completions >= (self.plan.concurrency or 1):
            self.opened = now

    def ran_out(self, now: float) -> None:
        """No prompt is left: the window (if open) closes here, short of its floors."""
        if self.closed is None:
            self.closed = now
            self.short = True

    @property
    def finished(self) -> bool:
        """The window closed and every measured request finished: the run can end."""
        return self.closed is not None and self.measured_in_flight == 0

    @property
    def length_s(self) -> float:
        if self.opened is None or self.closed is None:
            return 0.0
        return self.closed - self.opened

    def facts(self) -> dict[str, float]:
        """The run's window as metrics (``steady_*``, in the metric catalogue)."""
        return {
            "steady_window_s": self.length_s,
            "steady_ramp_requests": float(self.sent[RAMP]),
            "steady_window_requests": float(self.sent[MEASURED]),
            "steady_drain_requests": float(self.sent[DRAIN]),
            "steady_ramp_s": (self.opened - self.first_send
                              if self.opened is not None and self.first_send is not None
                              else 0.0),
            "steady_window_short": float(self.short),
        }


def window_metrics(
    measured: Sequence[RequestRecord], completed: Sequence[RequestRecord], window_s: float,
    slos: Mapping[str, float],
) -> dict[str, float]:
    """The level's figures: latencies, errors and goodput fraction of the ``measured``
    requests; throughputs from the requests ``completed`` inside the window, over its
    ``window_s`` (goodput: the good fraction of the measured requests at that rate)."""
    metrics = summarize(measured, window_s, {**slos})
    ok = [r for r in completed if r.ok]
    span = max(window_s, 1e-9)
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    metrics |= {
        "duration_s": window_s,
        "request_throughput": len(ok) / span,
        "output_throughput": out_tokens / span,
        "total_token_throughput": (in_tokens + out_tokens) / span,
    }
    metrics["request_goodput"] = metrics["request_throughput"] * metrics["goodput_fraction"]
    return metrics


def completed_within(records: Sequence[RequestRecord], start: float, end: float
                     ) -> list[RequestRecord]:
    """The ``records`` that finished inside ``[start, end]``."""
    return [r for r in records if start <= r.done_at <= end]
