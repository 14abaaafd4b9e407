"""The built-in driver against ``vllm bench serve`` on one running server, side by side.

Both measure the same kind of workload (random prompts of fixed input and output lengths,
``ignore_eos``, a fixed concurrency), each with fresh prompts (vLLM's prefix cache is on by
default: a prompt sent twice would be served from it the second time). vLLM's benchmark runs
in this process (``vllm.benchmarks.serve``: ``add_cli_args`` and ``main``, imported only here),
so both clients share the host alike. Used by benchmarks/crosscheck_vllm_bench.py and
tests/integration/test_crosscheck.py.

On a small host a client's own CPU time is taken from the server it measures: a client that
parses each chunk twice slows the server more than one that parses it once, and the drivers
then disagree on what the *server* does. ``isolate`` pins the server's processes (every thread)
to some cores and this process to the others, so what each driver measures is the same server.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.bench.driver import Endpoint, HttpLoadDriver
from autotune.bench.metrics import goodput_limits
from autotune.bench.workload_spec import WorkloadSpec

# (our metric, vllm bench serve's --save-result key)
ROWS = (
    ("output_throughput", "output_throughput"),
    ("request_throughput", "request_throughput"),
    ("request_goodput", "request_goodput"),
    ("ttft_p50_ms", "median_ttft_ms"),
    ("ttft_p99_ms", "p99_ttft_ms"),
    ("tpot_p50_ms", "median_tpot_ms"),
    ("tpot_mean_ms", "mean_tpot_ms"),
    ("itl_p50_ms", "median_itl_ms"),
    ("e2e_p50_ms", "median_e2el_ms"),
    ("e2e_p99_ms", "p99_e2el_ms"),
)


@dataclass(frozen=True)
class CrossCheckLoad:
    input_len: int
    output_len: int
    requests: int
    concurrency: int
    warmup: int = 8


@dataclass
class Comparison:
    """Both drivers' figures at one load, ``rounds`` alternating runs each."""

    load: CrossCheckLoad
    ours: list[dict[str, float]] = field(default_factory=list)
    theirs: list[dict[str, Any]] = field(default_factory=list)

    def mean(self, ours_key: str, their_key: str) -> tuple[float, float]:
        a = statistics.mean(float(r[ours_key]) for r in self.ours)
        b = statistics.mean(float(r[their_key] or 0.0) for r in self.theirs)
        return a, b

    def difference(self, ours_key: str, their_key: str) -> float:
        """Ours relative to vLLM's, as a fraction (+0.02: ours 2% higher)."""
        a, b = self.mean(ours_key, their_key)
        return (a - b) / b if b else float("nan")

    def spread(self, ours_key: str, their_key: str) -> tuple[float, float]:
        """Each driver's own run-to-run range (max - min) over its mean, as a fraction: the
        host's noise, against which a difference between the drivers is to be read."""
        def relative_range(values: list[float]) -> float:
            mean = statistics.mean(values)
            return (max(values) - min(values)) / mean if mean else float("nan")
        return (relative_range([float(r[ours_key]) for r in self.ours]),
                relative_range([float(r[their_key] or 0.0) for r in self.theirs]))

    def table(self) -> str:
        lines = [f"{'metric':<22}{'autotune driver':>17}{'vllm bench serve':>18}"
                 f"{'difference':>12}{'spread ours/theirs':>20}"]
        for ours_key, their_key in ROWS:
            a, b = self.mean(ours_key, their_key)
            spread_a, spread_b = self.spread(ours_key, their_key)
            lines.append(f"{ours_key:<22}{a:>17.2f}{b:>18.2f}"
                         f"{100 * self.difference(ours_key, their_key):>11.1f}%"
                         f"{100 * spread_a:>12.1f}%/{100 * spread_b:.1f}%")
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


def our_workload(load: CrossCheckLoad, seed: int) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "prompts": {"kind": "random", "input_tokens": load.input_len,
                    "output_tokens": load.output_len},
        "num_requests": load.requests, "warmup_requests": load.warmup,
        "load": {"kind": "concurrency", "concurrency": load.concurrency}, "seed": seed,
    })


def vllm_bench_argv(
    endpoint: Endpoint, tokenizer: Path, load: CrossCheckLoad, seed: int,
    slos: Mapping[str, float], result: Path,
) -> list[str]:
    argv = [
        "--backend", "vllm", "--base-url", endpoint.base_url, "--model", endpoint.served_name,
        "--tokenizer", str(tokenizer), "--dataset-name", "random",
        "--random-input-len", str(load.input_len), "--random-output-len", str(load.output_len),
        "--num-prompts", str(load.requests), "--max-concurrency", str(load.concurrency),
        "--request-rate", "inf", "--ignore-eos", "--num-warmups", str(load.warmup),
        # greedy, as our driver asks (vllm bench no longer sends temperature 0 by default)
        "--temperature", "0",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--seed", str(seed), "--disable-tqdm", "--save-result",
        "--result-dir", str(result.parent), "--result-filename", result.name,
    ]
    limits = goodput_limits(slos)
    if limits:
        argv += ["--goodput", *(f"{name}:{limit:g}" for name, limit in limits.items())]
    return argv


def run_vllm_bench(argv: Sequence[str]) -> dict[str, Any]:
    """``vllm bench serve ARGV`` in this process; its result dictionary."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    return dict(main(parser.parse_args(list(argv))))


def cross_check(
    endpoint: Endpoint, tokenizer: Path, load: CrossCheckLoad, work: Path, *,
    rounds: int = 2, slos: Mapping[str, float] | None = None, seed: int = 0,
) -> Comparison:
    """``rounds`` runs of each driver at ``load``, in the order ours, theirs, theirs, ours,
    ... (a drift of the host's load over the rounds then weighs on both alike, not on
    whichever always ran second); fresh prompts every run."""
    slos = dict(slos or {})
    found = Comparison(load)
    for round_ in range(rounds):
        # Distinct seeds: no run repeats another's prompts (the prefix cache would serve them).
        base = seed + 1000 * load.concurrency + 10 * round_
        result = work / f"vllm-bench-c{load.concurrency}-{round_}.json"
        for driver in ("ours", "theirs") if round_ % 2 == 0 else ("theirs", "ours"):
            if driver == "ours":
                workload = our_workload(load, base)
                found.ours.append(HttpLoadDriver().run(endpoint, workload, slos).metrics)
            else:
                argv = vllm_bench_argv(endpoint, tokenizer, load, base + 5, slos, result)
                found.theirs.append(run_vllm_bench(argv))
    return found
