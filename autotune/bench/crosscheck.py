"""The built-in driver against ``vllm bench serve`` on one running server, side by side.

Both measure the same kind of workload (random prompts of fixed input and output lengths,
``ignore_eos``, a fixed concurrency), each with fresh prompts (vLLM's prefix cache is on by
default: a prompt sent twice would be served from it the second time). vLLM's benchmark runs
in this process (``vllm.benchmarks.serve``: ``add_cli_args`` and ``main``, imported only here),
so both clients share the host alike. Used by benchmarks/crosscheck_vllm_bench.py and
tests/bench/test_crosscheck.py.

On a small host a client's own CPU time is taken from the server it measures: a client that
parses each chunk twice slows the server more than one that parses it once, and the drivers
then disagree on what the *server* does. ``isolate`` pins the server's processes (every thread)
to some cores and this process to the others, so what each driver measures is the same server.
"""

from __future__ import annotations

import functools
import math
import os
import random
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.bench.driver import Endpoint, HttpLoadDriver
from autotune.bench.engine_tokenizer import token_pool
from autotune.bench.metrics import goodput_limits
from autotune.bench.prompt_set import Prompt
from autotune.bench.workload import random_prompt
from autotune.space import WorkloadSpec

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
    # Lengths drawn around input_len/output_len (vLLM's --random-range-ratio): with every
    # request the same length, a closed loop runs in lockstep waves, and whether a wave's
    # prefills land in one step decides a whole run (median TTFT 300 or 430 ms at 16).
    range_ratio: float = 0.0


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

    def pairs(self, ours_key: str, their_key: str) -> list[float]:
        """Per round, ours relative to vLLM's run of that round (back to back with it), as a
        fraction (+0.02: ours 2% higher)."""
        return [float(a[ours_key]) / float(b[their_key]) - 1 if b[their_key] else math.nan
                for a, b in zip(self.ours, self.theirs, strict=True)]

    def difference(self, ours_key: str, their_key: str) -> float:
        """Ours relative to vLLM's: the median over the rounds of each round's pair. The host's
        speed drifts by more than the drivers differ (10-25% between runs minutes apart on a
        2-core host): a round's two runs, back to back, see nearly the same host, and the
        median leaves out a round whose host changed between them."""
        return statistics.median(self.pairs(ours_key, their_key))

    def spread(self, ours_key: str, their_key: str) -> tuple[float, float]:
        """Each driver's own run-to-run range (max - min) over its mean, as a fraction: the
        host's noise, against which a difference between the drivers is to be read."""
        def relative_range(values: list[float]) -> float:
            mean = statistics.mean(values)
            return (max(values) - min(values)) / mean if mean else float("nan")
        return (relative_range([float(r[ours_key]) for r in self.ours]),
                relative_range([float(r[their_key] or 0.0) for r in self.theirs]))

    def table(self) -> str:
        """Both drivers' means, the paired difference, each driver's own spread; then every
        run's figures in the order they ran."""
        lines = [f"{'metric':<22}{'autotune driver':>17}{'vllm bench serve':>18}"
                 f"{'difference':>12}{'spread ours/theirs':>20}"]
        for ours_key, their_key in ROWS:
            a, b = self.mean(ours_key, their_key)
            spread_a, spread_b = self.spread(ours_key, their_key)
            lines.append(f"{ours_key:<22}{a:>17.2f}{b:>18.2f}"
                         f"{100 * self.difference(ours_key, their_key):>11.1f}%"
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


def our_workload(load: CrossCheckLoad, seed: int) -> WorkloadSpec:
    """Our driver's load, warm-up and seed (its prompts are ``our_prompts``, not built from
    this spec's ``prompts``)."""
    return WorkloadSpec.model_validate({
        "prompts": {"kind": "random", "input_tokens": load.input_len,
                    "output_tokens": load.output_len},
        "num_requests": load.requests, "warmup_requests": load.warmup,
        "load": {"kind": "concurrency", "concurrency": load.concurrency}, "seed": seed,
    })


def vllm_random_lengths(tokenizer: Path, load: CrossCheckLoad, seed: int
                        ) -> list[tuple[int, int]]:
    """The (input, output) lengths of the requests ``vllm bench serve --seed SEED`` sends on
    its random dataset, in its order: the dataset's first draws (``RandomDataset.sample`` →
    ``get_sampling_params``), the input with the tokenizer's special tokens the server adds."""
    import numpy as np
    from vllm.benchmarks.datasets.utils import get_sampling_params

    hf = _hf_tokenizer(str(tokenizer))
    inputs, outputs, _ = get_sampling_params(
        np.random.default_rng(seed), load.requests, load.range_ratio, load.input_len,
        load.output_len, hf)
    special = int(hf.num_special_tokens_to_add())
    return [(int(i) + special, int(o)) for i, o in zip(inputs, outputs, strict=True)]


@functools.cache
def _hf_tokenizer(path: str) -> Any:
    """vLLM's benchmark tokenizer for ``path``, loaded once for every run of the check."""
    from vllm.tokenizers import get_tokenizer

    return get_tokenizer(path)


def our_prompts(endpoint: Endpoint, load: CrossCheckLoad, seed: int,
                lengths: Sequence[tuple[int, int]]) -> list[Prompt]:
    """The warm-up's random prompts, then one of each of ``lengths``, token ids of our own
    (none repeats vLLM's prompts, which the prefix cache would then serve)."""
    rng = random.Random(f"crosscheck-{seed}")
    pool = token_pool(endpoint.base_url, endpoint.served_name)
    warmup = [(load.input_len, load.output_len)] * load.warmup
    return [random_prompt(rng, pool, n_in, n_out) for n_in, n_out in [*warmup, *lengths]]


def vllm_bench_argv(
    endpoint: Endpoint, tokenizer: Path, load: CrossCheckLoad, seed: int,
    slos: Mapping[str, float], result: Path,
) -> list[str]:
    argv = [
        "--backend", "vllm", "--base-url", endpoint.base_url, "--model", endpoint.served_name,
        "--tokenizer", str(tokenizer), "--dataset-name", "random",
        "--random-input-len", str(load.input_len), "--random-output-len", str(load.output_len),
        "--random-range-ratio", str(load.range_ratio),
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
    """One unrecorded run of each driver at ``load`` (the server's first batches of that
    size, vLLM's benchmark's first call in this process), then ``rounds`` runs of each, in
    the order ours, theirs, theirs, ours, ...; fresh prompts every run."""
    slos = dict(slos or {})
    found = Comparison(load)

    def run(driver: str, base: int, result: Path) -> dict[str, Any]:
        """One run; ours sends the lengths vLLM's run of the same round sends (``base + 5``),
        so the two differ in their clients, not in the sample of lengths."""
        if driver == "theirs":
            return run_vllm_bench(vllm_bench_argv(endpoint, tokenizer, load, base + 5, slos,
                                                  result))
        prompts = our_prompts(endpoint, load, base,
                              vllm_random_lengths(tokenizer, load, base + 5))
        return dict(HttpLoadDriver().measure(endpoint, prompts, our_workload(load, base),
                                             slos).metrics)

    # Distinct seeds: no run repeats another's prompts (the prefix cache would serve them).
    first = seed + 1000 * load.concurrency
    for driver in ("ours", "theirs"):
        run(driver, first + 900, work / f"vllm-bench-c{load.concurrency}-warm-up.json")
    for round_ in range(rounds):
        result = work / f"vllm-bench-c{load.concurrency}-{round_}.json"
        for driver in ("ours", "theirs") if round_ % 2 == 0 else ("theirs", "ours"):
            figures = run(driver, first + 10 * round_, result)
            (found.ours if driver == "ours" else found.theirs).append(figures)
    return found
