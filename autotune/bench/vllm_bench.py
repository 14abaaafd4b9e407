"""``vllm bench serve`` as a load driver: vLLM's own benchmark client (``vllm.benchmarks.serve``,
run in this process) behind the ``LoadDriver`` boundary, chosen with ``measurement.driver:
vllm_bench`` (``load_driver``).

What it runs (the space refuses the rest at load, ``space.measurement.vllm_bench_refusal``):
random prompts (``--dataset-name random``, lengths and ``--random-range-ratio``), shared
prefixes (``prefix_repetition``, completions), ShareGPT and plain JSONL prompts (``sharegpt``);
a closed loop (``--max-concurrency N --request-rate inf``) or Poisson arrivals
(``--request-rate R``, optionally ``--max-concurrency``). Always greedy (``--temperature 0``)
and ``--ignore-eos``, as the built-in driver sends.

Prompts never repeat across the runs on one server (vLLM's prefix cache would serve them):
random and shared-prefix runs draw with a ``--seed`` derived from the workload's seed and the
run index. Dataset runs send the very prompts the built-in driver would send in that run
(``bench.datasets.dataset_prompts``: the run's own slice, tagged where it could repeat,
filtered or cut to the engine's max_model_len), written as a ShareGPT file that vLLM's
``sharegpt`` reader takes in order (``--disable-shuffle --no-oversample``), every prompt with
the workload's one output length (``--sharegpt-output-len``); ShareGPT goes to the chat
endpoint (``--backend openai-chat``) as the one user message vLLM's client sends, plain JSONL
to completions as text. vLLM's reader also leaves out prompts under 4 or over 1,024 tokens:
such a run sends fewer requests.

A run sends ``prompt_count`` prompts: the workload's ``num_requests`` plus a ramp and a drain
of one concurrency each, at least 8x the concurrency, so that the closed loop reaches its
steady state. vLLM's client cannot stop at a window, so every figure covers the whole run
(ramp-up and drain included); ``BenchResult.records`` holds every request (vLLM's per-request
send times are ``time.perf_counter()`` values, the built-in driver's clock) for the windows and
disturbance checks.

vLLM's client has no stall detection: a watchdog polls the server's ``/metrics`` and ends the
run with ``EngineStalled`` when requests are running or waiting and no token was generated for
``stall_timeout_s`` (or ``/metrics`` does not answer for that long).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from autotune.bench.datasets import dataset_prompts
from autotune.bench.driver import BenchResult, Endpoint, EngineStalled, HttpLoadDriver, LoadDriver
from autotune.bench.engine_metrics import RUNNING, WAITING, Scrape
from autotune.bench.engine_tokenizer import EngineTokenizer
from autotune.bench.metrics import RequestRecord, goodput_limits, summarize
from autotune.bench.prompt_set import Prompt, WorkloadError
from autotune.bench.steady import (
    MEASURED,
    SteadyPlan,
    SteadyWindow,
    completed_within,
    window_metrics,
)
from autotune.metrics import PERCENTILES
from autotune.space import (
    ConcurrencyLoad,
    JsonlPrompts,
    PoissonLoad,
    RandomPrompts,
    SharedPrefixPrompts,
    SharegptPrompts,
    WorkloadSpec,
)
from autotune.space.measurement import vllm_bench_refusal

if TYPE_CHECKING:
    from autotune.space import Space

# The figures vllm bench serve reports under its own names (--save-result keys) → ours.
_COUNTS = {"completed": "completed", "failed": "failed", "duration": "duration_s",
           "total_input_tokens": "total_input_tokens",
           "total_output_tokens": "total_output_tokens",
           "request_throughput": "request_throughput", "request_goodput": "request_goodput",
           "output_throughput": "output_throughput",
           "total_token_throughput": "total_token_throughput"}
_LATENCIES = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2el": "e2e"}
_GENERATED = "vllm:generation_tokens"
_WATCHED = (_GENERATED, RUNNING, WAITING)
# A closed loop's run: the measured requests and a ramp and drain around them, and never
# fewer than this many times the concurrency.
MIN_PER_CONCURRENCY = 8


def load_driver(space: Space) -> LoadDriver:
    """The load driver the space's ``measurement.driver`` names."""
    if space.measurement.driver == "vllm_bench":
        return VllmBenchDriver()
    return HttpLoadDriver()


def concurrency_of(workload: WorkloadSpec) -> int | None:
    """The requests in flight the load holds at most (None: an unbounded open loop)."""
    load = workload.load
    if isinstance(load, ConcurrencyLoad):
        return load.concurrency
    return getattr(load, "max_concurrency", None)


def prompt_count(workload: WorkloadSpec) -> int:
    """The measured prompts one run sends: under a steady-state rule as many as the built-in
    driver builds (``SteadyPlan.prompts_needed``), else ``num_requests`` with a ramp and a
    drain of one concurrency each; at least ``MIN_PER_CONCURRENCY`` times the concurrency."""
    concurrency = concurrency_of(workload)
    if workload.steady is not None:
        needed = SteadyPlan.of(workload, workload.steady).prompts_needed()
        return max(needed, MIN_PER_CONCURRENCY * (concurrency or 0))
    if concurrency is None:
        return workload.num_requests
    return max(workload.num_requests + 2 * concurrency, MIN_PER_CONCURRENCY * concurrency)


def run_seed(workload: WorkloadSpec, run_index: int) -> int:
    """vLLM's ``--seed`` of run ``run_index`` (an int below 2**31, distinct per run)."""
    digest = hashlib.sha256(f"vllm-bench:{workload.seed}:{run_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def from_vllm_bench_keys(result: Mapping[str, Any]) -> dict[str, float]:
    """vllm bench serve's result under our metric names (the inverse of
    ``bench.metrics.to_vllm_bench_keys``); keys it did not report are left out."""
    out: dict[str, float] = {}
    for theirs, ours in _COUNTS.items():
        if result.get(theirs) is not None:
            out[ours] = float(result[theirs])
    for theirs, ours in _LATENCIES.items():
        for stat, key in (("mean", f"mean_{theirs}_ms"), ("p50", f"median_{theirs}_ms"),
                          *((f"p{p}", f"p{p}_{theirs}_ms") for p in PERCENTILES if p != 50)):
            if result.get(key) is not None:
                out[f"{ours}_{stat}_ms"] = float(result[key])
    return out


def records_of(result: Mapping[str, Any]) -> list[RequestRecord]:
    """One ``RequestRecord`` per request of a ``--save-detailed`` result (in send order), on
    vLLM's clock (``time.perf_counter()`` at send, as ours)."""
    starts = result.get("start_times")
    if not starts:
        return []
    records = []
    for i, start in enumerate(starts):
        error = str(result["errors"][i] or "")
        output = int(result["output_lens"][i] or 0)
        ok = not error and output > 0
        latency = float(result["latencies"][i])
        records.append(RequestRecord(
            ok=ok, prompt_tokens=int(result["input_lens"][i] or 0), output_tokens=output,
            ttft=float(result["ttfts"][i]) if ok else None, e2e=latency if ok else None,
            itls=[float(x) for x in result["itls"][i]] if ok else [],
            error=error[-300:] if not ok else "", sent_at=float(start),
            done_at=float(start) + latency,
            queued_s=float((result.get("queue_times") or [0.0] * len(starts))[i] or 0.0)))
    return sorted(records, key=lambda r: r.sent_at)


def _tokenizer_of(endpoint: Endpoint) -> str:
    """The served model's folder (or hub id), as the server's ``/v1/models`` gives it
    (``root``): vLLM's client tokenizes with it."""
    import urllib.request

    with urllib.request.urlopen(f"{endpoint.base_url}/v1/models", timeout=30) as response:
        models = json.load(response).get("data") or []
    for model in models:
        if model.get("id") == endpoint.served_name and model.get("root"):
            return str(model["root"])
    return endpoint.served_name


def _dataset_file(workload: WorkloadSpec, endpoint: Endpoint, count: int, run_index: int,
                  folder: Path) -> Path:
    """This run's dataset prompts (the built-in driver's for this run), the warm-up's first,
    in the ShareGPT file format vLLM's ``sharegpt`` reader takes (a JSON list of first turns;
    its ``custom`` JSONL reader needs pandas, which autotune does not install)."""
    spec = workload.prompts
    assert isinstance(spec, JsonlPrompts | SharegptPrompts)
    with EngineTokenizer(endpoint.base_url, endpoint.served_name) as tokenizer:
        prompts = dataset_prompts(spec, count, workload.seed, run_index, tokenizer)
    path = folder / f"prompts-{run_index}.json"
    path.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": _text(prompt, number)},
                           {"from": "gpt", "value": ""}]}
        for number, prompt in enumerate(prompts)]))
    return path


def _text(prompt: Prompt, number: int) -> str:
    if prompt.messages is None:
        assert isinstance(prompt.body, str)
        return prompt.body
    if len(prompt.messages) != 1:
        raise WorkloadError(
            f"prompt {number} has {len(prompt.messages)} messages (a system prompt?): vLLM's "
            "benchmark sends one user message; use the built-in driver (measurement.driver)")
    return prompt.messages[0]["content"]


def bench_argv(
    endpoint: Endpoint, tokenizer: str, workload: WorkloadSpec, slos: Mapping[str, float],
    run_index: int, dataset: Path | None = None,
) -> list[str]:
    """``vllm bench serve``'s arguments for run ``run_index`` of ``workload`` (``dataset``:
    the run's prompts file for ShareGPT and JSONL prompts)."""
    why = vllm_bench_refusal(workload)
    if why:
        raise WorkloadError(why)
    spec, load = workload.prompts, workload.load
    chat = isinstance(spec, SharegptPrompts)
    argv = ["--backend", "openai-chat" if chat else "vllm", "--base-url", endpoint.base_url,
            "--endpoint", "/v1/chat/completions" if chat else "/v1/completions",
            "--model", endpoint.served_name, "--tokenizer", tokenizer,
            "--num-prompts", str(prompt_count(workload)),
            "--num-warmups", str(workload.warmup_requests),
            "--seed", str(run_seed(workload, run_index)),
            "--temperature", "0", "--ignore-eos",
            "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", ",".join(str(p) for p in PERCENTILES),
            "--disable-tqdm", "--save-detailed"]
    if isinstance(spec, RandomPrompts):
        argv += ["--dataset-name", "random", "--random-input-len", str(spec.input_tokens),
                 "--random-output-len", str(spec.output_tokens),
                 "--random-range-ratio", str(spec.range_ratio)]
    elif isinstance(spec, SharedPrefixPrompts):
        argv += ["--dataset-name", "prefix_repetition",
                 "--prefix-repetition-prefix-len", str(spec.prefix_tokens),
                 "--prefix-repetition-suffix-len", str(spec.suffix_tokens),
                 "--prefix-repetition-num-prefixes", str(spec.num_prefixes),
                 "--prefix-repetition-output-len", str(spec.output_tokens)]
    else:
        if dataset is None:
            raise WorkloadError(f"prompts of kind {spec.kind} need the run's prompts file")
        assert isinstance(spec.output_tokens, int)  # the space refuses the rest
        # In file order, never a prompt twice (the prefix cache), one output length.
        argv += ["--dataset-name", "sharegpt", "--dataset-path", str(dataset),
                 "--disable-shuffle", "--no-oversample",
                 "--sharegpt-output-len", str(spec.output_tokens)]
    if isinstance(load, ConcurrencyLoad):
        argv += ["--max-concurrency", str(load.concurrency), "--request-rate", "inf"]
    else:
        assert isinstance(load, PoissonLoad)
        argv += ["--request-rate", f"{load.rate:g}"]
        if load.max_concurrency:
            argv += ["--max-concurrency", str(load.max_concurrency)]
    limits = goodput_limits(slos)
    if limits:
        argv += ["--goodput", *(f"{name}:{limit:g}" for name, limit in limits.items())]
    return argv


def run_vllm_bench(argv: Sequence[str], endpoint: Endpoint | None = None,
                   stall_s: float = math.inf) -> dict[str, Any]:
    """``vllm bench serve ARGV`` in this process, its printout kept off our console; its result
    dictionary. With ``endpoint``, EngineStalled once the server has requests but generates
    nothing for ``stall_s``."""
    from vllm.benchmarks.serve import add_cli_args, main_async
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args(list(argv))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            return dict(asyncio.run(_watched(main_async(args), endpoint, stall_s)))
    except EngineStalled:
        raise
    except Exception as exc:
        tail = printed.getvalue()[-1500:]
        raise WorkloadError(f"vllm bench serve failed: {type(exc).__name__}: {exc}"
                            + (f"\n{tail}" if tail else "")) from exc


async def _watched(run: Any, endpoint: Endpoint | None, stall_s: float) -> Any:
    task = asyncio.ensure_future(run)
    if endpoint is None or not math.isfinite(stall_s):
        return await task
    # Seldom, and only the lines it needs parsed: the watchdog shares the event loop with
    # vLLM's client (a full parse of /metrics blocks its timing of every stream), and each
    # scrape costs the server's API process CPU time.
    tick = min(5.0, stall_s / 4)
    last_change, generated = time.perf_counter(), None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=tick * 2)) as session:
        while not task.done():
            await asyncio.wait({task}, timeout=tick)
            if task.done():
                break
            busy = True
            try:
                async with session.get(f"{endpoint.base_url}/metrics") as response:
                    text = await response.text()
                scrape = Scrape.parse("\n".join(
                    line for line in text.splitlines() if line.startswith(_WATCHED)))
                name = scrape.counter_name(_GENERATED)
                now_generated = scrape.gauge_sum(name) if name else None
                busy = bool((scrape.gauge_sum(RUNNING) or 0) + (scrape.gauge_sum(WAITING) or 0))
                if now_generated != generated or not busy:
                    generated, last_change = now_generated, time.perf_counter()
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                pass  # no answer: silence, as no token
            silent = time.perf_counter() - last_change
            if busy and silent > stall_s:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise EngineStalled(f"engine stalled: requests waiting or running and no token "
                                    f"generated for {silent:.1f} s (stall_timeout_s "
                                    f"{stall_s:g})")
    return task.result()


class VllmBenchDriver:
    """``vllm bench serve`` as a LoadDriver (implements LoadDriver; see the module)."""

    def run(
        self, endpoint: Endpoint, workload: WorkloadSpec, slos: Mapping[str, float],
        run_index: int = 0,
    ) -> BenchResult:
        why = vllm_bench_refusal(workload)
        if why:
            raise WorkloadError(why)
        tokenizer = _tokenizer_of(endpoint)
        with tempfile.TemporaryDirectory(prefix="autotune-vllm-bench-") as folder:
            dataset = None
            if isinstance(workload.prompts, JsonlPrompts | SharegptPrompts):
                dataset = _dataset_file(workload, endpoint, prompt_count(workload), run_index,
                                        Path(folder))
            argv = bench_argv(endpoint, tokenizer, workload, slos, run_index, dataset)
            began = time.perf_counter()
            result = run_vllm_bench(argv, endpoint, workload.stall_timeout_s)
            wall = time.perf_counter() - began
        return bench_result(result, slos, wall, workload)


def bench_result(result: Mapping[str, Any], slos: Mapping[str, float], wall_s: float = 0.0,
                 workload: WorkloadSpec | None = None) -> BenchResult:
    """A ``BenchResult`` from vllm bench serve's detailed result: its own figures under our
    names, completed by ours from its per-request records (the percentiles, error and goodput
    fractions it does not report); under ``workload``'s steady-state rule, the figures of its
    steady window instead (``steady_window``)."""
    records = records_of(result)
    duration = float(result.get("duration") or 0.0)
    started_at = min((r.sent_at for r in records), default=0.0)
    warmup_s = max(0.0, wall_s - duration)
    if workload is not None and workload.steady is not None and records:
        window, measured, completed = steady_window(records, workload)
        metrics = window_metrics(measured, completed, window.length_s, slos) | window.facts()
        return BenchResult(metrics, measured, warmup_s, duration, started_at, window, completed)
    metrics = summarize(records, duration, slos) if records else {}
    metrics |= from_vllm_bench_keys(result)
    if "request_goodput" not in metrics:  # no SLOs: every completed request is good
        metrics["request_goodput"] = metrics.get("request_throughput", 0.0)
    return BenchResult(metrics, records, warmup_s, duration, started_at)


def steady_window(records: Sequence[RequestRecord], workload: WorkloadSpec
                  ) -> tuple[SteadyWindow, list[RequestRecord], list[RequestRecord]]:
    """The steady window of a whole run, after the fact: its sends and completions replayed in
    time order through the built-in driver's books (``bench.steady.SteadyWindow``), so both
    drivers trim ramp-up and drain alike. The window, its measured requests, and the requests
    that completed inside it."""
    assert workload.steady is not None
    window = SteadyWindow(SteadyPlan.of(workload, workload.steady))
    ordered = sorted(records, key=lambda r: r.sent_at)
    events = sorted([(r.sent_at, 1, i) for i, r in enumerate(ordered)]
                    + [(r.done_at, 0, i) for i, r in enumerate(ordered)])
    phases: dict[int, str] = {}
    for at, is_send, i in events:
        if is_send:
            phases[i] = window.on_send(at, len(ordered) - i - 1)
        else:
            window.on_done(at, phases[i])
            window.records.append(ordered[i])
    if window.closed is None:
        window.ran_out(ordered[-1].sent_at)
    measured = [r for i, r in enumerate(ordered) if phases[i] == MEASURED]
    completed = (completed_within(ordered, window.opened, window.closed)
                 if window.opened is not None and window.closed is not None else [])
    return window, measured, completed
