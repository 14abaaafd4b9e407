"""The built-in driver against ``vllm bench serve`` on one running server, side by side.

Both run through the ``LoadDriver`` boundary: ``HttpLoadDriver`` and ``VllmBenchDriver``
(bench/vllm_bench.py, vLLM's benchmark module in this process, so both clients share the host
alike) on the same workload (random prompts of input and output lengths drawn around their
means, ``ignore_eos``, a fixed concurrency), each run with a run index of its own, so fresh
prompts (vLLM's prefix cache is on by default: a prompt sent twice would be served from it the
second time). A run is as long as ``VllmBenchDriver`` makes a closed loop's run
(``vllm_bench.prompt_count``: a ramp and a drain around the measured requests, at least 8x the
concurrency), and the built-in driver sends as many. Used by benchmarks/crosscheck_vllm_bench.py
and tests/bench/test_crosscheck.py.

On a small host a client's own CPU time is taken from the server it measures: a client that
parses each chunk twice slows the server more than one that parses it once, and the drivers
then disagree on what the *server* does. ``isolate`` pins the server's processes (every thread)
to some cores and this process to the others, so what each driver measures is the same server.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from autotune.bench.driver import Endpoint, HttpLoadDriver, LoadDriver
from autotune.bench.vllm_bench import VllmBenchDriver, prompt_count
from autotune.space import WorkloadSpec

# The figures compared (our metric names; both drivers report them so).
ROWS = ("output_throughput", "request_throughput", "request_goodput", "ttft_p50_ms",
        "ttft_p99_ms", "tpot_p50_ms", "tpot_mean_ms", "itl_p50_ms", "e2e_p50_ms", "e2e_p99_ms")


@dataclass(frozen=True)
class CrossCheckLoad:
    input_len: int
    output_len: int
    requests: int
    concurrency: int
    warmup: int = 8
    # Lengths drawn around input_len/output_len (--random-range-ratio): with every request
    # the same length, a closed loop runs in lockstep waves, and whether a wave's prefills
    # land in one step decides a whole run (median TTFT 300 or 430 ms at 16).
    range_ratio: float = 0.0


@dataclass
class Comparison:
    """Both drivers' figures at one load, ``rounds`` alternating runs each."""

    load: CrossCheckLoad
    ours: list[dict[str, float]] = field(default_factory=list)
    theirs: list[dict[str, float]] = field(default_factory=list)

    def mean(self, metric: str) -> tuple[float, float]:
        return (statistics.mean(float(r[metric]) for r in self.ours),
                statistics.mean(float(r[metric]) for r in self.theirs))

    def pairs(self, metric: str) -> list[float]:
        """Per round, ours relative to vLLM's run of that round (back to back with it), as a
        fraction (+0.02: ours 2% higher)."""
        return [float(a[metric]) / float(b[metric]) - 1 if b[metric] else math.nan
                for a, b in zip(self.ours, self.theirs, strict=True)]

    def difference(self, metric: str) -> float:
        """Ours relative to vLLM's: the median over the rounds of each round's pair. The host's
        speed drifts by more than the drivers differ (10-25% between runs minutes apart on a
        2-core host): a round's two runs, back to back, see nearly the same host, and the
        median leaves out a round whose host changed between them."""
        return statistics.median(self.pairs(metric))

    def spread(self, metric: str) -> tuple[float, float]:
        """Each driver's own run-to-run range (max - min) over its mean, as a fraction: the
        host's noise, against which a difference between the drivers is to be read."""
        def relative_range(values: list[float]) -> float:
            mean = statistics.mean(values)
            return (max(values) - min(values)) / mean if mean else float("nan")
        return (relative_range([float(r[metric]) for r in self.ours]),
                relative_range([float(r[metric]) for r in self.theirs]))

    def table(self) -> str:
        """Both drivers' means, the paired difference, each driver's own spread; then every
        run's figures in the order they ran."""
        lines = [f"{'metric':<22}{'autotune driver':>17}{'vllm bench serve':>18}"
                 f"{'difference':>12}{'spread ours/theirs':>20}"]
        for metric in ROWS:
            a, b = self.mean(metric)
            spread_a, spread_b = self.spread(metric)
            lines.append(f"{metric:<22}{a:>17.2f}{b:>18.2f}"
                         f"{100 * self.difference(metric):>11.1f}%"
                         f"{100 * spread_a:>12.1f}%/{100 * spread_b:.1f}%")
        lines.append("per round (ours / theirs): " + "; ".join(
            f"{float(a['output_throughput']):.1f}/{float(b['output_throughput']):.1f} tok/s"
            for a, b in zip(self.ours, self.theirs, strict=True)))
        return "\n".join(lines)


def split_cores(cores: Sequence[int]) -> tuple[list[int], list[int]]:
    """(server cores, client cores): the client gets one core in four (at least one), the
    server the rest; one core is shared."""
    cores = sorted(cores)
    if len(cores) < 2:
        return list(cores), list(cores)
    client = max(1, len(cores) // 4)
    return cores[:-client], cores[-client:]


def pin_process(pid: int, cores: Iterable[int]) -> int:
    """Pin every thread of ``pid`` to ``cores`` (``sched_setaffinity`` acts on one thread; new
    threads inherit their creator's); the number of threads pinned."""
    wanted = set(cores)
    pinned = 0
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return 0
    for tid in tids:
        try:
            os.sched_setaffinity(tid, wanted)
            pinned += 1
        except (ProcessLookupError, PermissionError):
            pass
    return pinned


def isolate(server_pids: Iterable[int], server_cores: Sequence[int],
            client_cores: Sequence[int]) -> None:
    """The server's processes on ``server_cores``, this process on ``client_cores``."""
    for pid in server_pids:
        pin_process(pid, server_cores)
    pin_process(os.getpid(), client_cores)


def crosscheck_workload(load: CrossCheckLoad, seed: int) -> WorkloadSpec:
    """The workload both drivers run at ``load``."""
    return WorkloadSpec.model_validate({
        "prompts": {"kind": "random", "input_tokens": load.input_len,
                    "output_tokens": load.output_len, "range_ratio": load.range_ratio},
        "num_requests": load.requests, "warmup_requests": load.warmup,
        "load": {"kind": "concurrency", "concurrency": load.concurrency}, "seed": seed,
    })


def cross_check(
    endpoint: Endpoint, load: CrossCheckLoad, *, rounds: int = 2,
    slos: Mapping[str, float] | None = None, seed: int = 0,
) -> Comparison:
    """One unrecorded run of each driver at ``load`` (the server's first batches of that
    size, vLLM's benchmark's first call in this process), then ``rounds`` runs of each, in
    the order ours, theirs, theirs, ours, ...; every run with a run index of its own (fresh
    prompts), both sending ``prompt_count`` measured requests."""
    slos = dict(slos or {})
    found = Comparison(load)
    workload = crosscheck_workload(load, seed + 1000 * load.concurrency)
    # The built-in driver sends what vLLM's sends: the same steady-state-length run.
    ours = workload.model_copy(update={"num_requests": prompt_count(workload)})
    drivers: dict[str, tuple[LoadDriver, WorkloadSpec]] = {
        "ours": (HttpLoadDriver(), ours), "theirs": (VllmBenchDriver(), workload)}
    run_index = 0

    def run(name: str) -> dict[str, float]:
        nonlocal run_index
        driver, spec = drivers[name]
        run_index += 1
        return dict(driver.run(endpoint, spec, slos, run_index).metrics)

    for name in ("ours", "theirs"):
        run(name)
    for round_ in range(rounds):
        for name in ("ours", "theirs") if round_ % 2 == 0 else ("theirs", "ours"):
            (found.ours if name == "ours" else found.theirs).append(run(name))
    return found
