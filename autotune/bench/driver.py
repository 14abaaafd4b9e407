"""The built-in load driver: streams /v1/completions at a fixed concurrency or Poisson rate.

``LoadDriver`` is the boundary (``run(endpoint, workload, slos) → BenchResult``); the built-in
``HttpLoadDriver`` is async on aiohttp, as ``vllm bench serve`` is: on a small host the client
shares the CPU with the engine, so its per-chunk cost shows in the engine's throughput.
Warm-up requests run first and are not measured.

The figures follow ``vllm bench serve`` (vllm/benchmarks/lib/endpoint_request_func.py): every
streamed chunk with choices is a token event, empty text or not (TTFT at the first, one ITL per
later one); E2E ends at the last such chunk, not when the stream closes after the usage chunk;
a request's send time is taken after the client's concurrency gate, and the wait at the gate is
kept apart (``RequestRecord.queued_s``). A run in which no request in flight receives anything
for ``stall_timeout_s`` raises ``EngineStalled`` instead of waiting for request timeouts.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import aiohttp

from autotune.bench.metrics import RequestRecord, summarize
from autotune.bench.workload import Prompt, build_prompts
from autotune.bench.workload_spec import ConcurrencyLoad, WorkloadSpec


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    served_name: str


@dataclass
class BenchResult:
    metrics: dict[str, float]
    records: list[RequestRecord] = field(default_factory=list)
    warmup_s: float = 0.0
    benchmark_s: float = 0.0
    started_at: float = 0.0  # time.perf_counter() at the first measured send


class EngineStalled(Exception):
    """No request in flight received anything for the workload's ``stall_timeout_s``."""


@runtime_checkable
class LoadDriver(Protocol):
    """Drives ``workload`` against a running OpenAI-compatible endpoint and measures it.

    ``run_index`` numbers the runs on one server (repeats, capacity points, load levels):
    each gets prompts of its own. Never raises for request errors: they are counted in
    ``failed`` / ``error_rate``. Raises WorkloadError when the workload itself cannot be built
    (e.g. an unreadable prompts file), and EngineStalled when the engine stops answering
    every request at once.
    """

    def run(
        self, endpoint: Endpoint, workload: WorkloadSpec, slos: Mapping[str, float],
        run_index: int = 0,
    ) -> BenchResult: ...


class _Progress:
    """When anything last arrived from the engine, and how many requests are in flight."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.in_flight = 0

    def begin(self) -> None:
        if self.in_flight == 0:  # an idle gap between arrivals is not a stall
            self.last = time.perf_counter()
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1
        self.last = time.perf_counter()


async def _one_request(
    client: aiohttp.ClientSession, endpoint: Endpoint, prompt: Prompt, ignore_eos: bool,
    progress: _Progress, arrived: float | None = None,
) -> RequestRecord:
    payload: dict[str, object] = {
        "model": endpoint.served_name,
        "prompt": prompt.body,
        "max_tokens": prompt.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": ignore_eos,
    }
    sent = time.perf_counter()
    record = RequestRecord(ok=False, sent_at=sent, queued_s=sent - (arrived or sent))
    progress.begin()
    try:
        return await _stream(client, endpoint, prompt, ignore_eos, payload, record, progress)
    finally:
        record.done_at = time.perf_counter()
        progress.end()


async def _stream(
    client: aiohttp.ClientSession, endpoint: Endpoint, prompt: Prompt, ignore_eos: bool,
    payload: dict[str, object], record: RequestRecord, progress: _Progress,
) -> RequestRecord:
    sent = record.sent_at
    last: float | None = None
    try:
        async with client.post(f"{endpoint.base_url}/v1/completions", json=payload) as response:
            if response.status != 200:
                body = (await response.read()).decode(errors="replace")[:300]
                record.error = f"HTTP {response.status}: {body}"
                return record
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                now = time.perf_counter()
                progress.last = now
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = _chunk(data)
                if "error" in chunk:
                    record.error = str(chunk["error"])[:300]
                    return record
                if _choices(chunk):  # a token event even when its text is empty (vLLM's)
                    if last is None:
                        record.ttft = now - sent
                    else:
                        record.itls.append(now - last)
                    last = now
                usage = chunk.get("usage")
                if usage:
                    if not isinstance(usage, dict):
                        raise ValueError(f"malformed usage in chunk: {data[:100]!r}")
                    record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    record.output_tokens = int(usage.get("completion_tokens") or 0)
    # ValueError: JSON that is not a chunk, or a chunk of the wrong shape (one request fails,
    # not the run: an exception escaping here would end the whole measurement).
    except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:300]
        return record
    if last is None:
        record.error = "no token received"
        return record
    record.e2e = last - sent  # at the last token, as vLLM's E2EL
    if ignore_eos and record.output_tokens < prompt.max_tokens:
        record.error = f"truncated: {record.output_tokens} of {prompt.max_tokens} tokens"
    else:
        record.ok = True
    return record


def _chunk(data: bytes) -> dict[str, Any]:
    """One SSE ``data:`` payload as a JSON object; ValueError for anything else."""
    chunk = json.loads(data)
    if not isinstance(chunk, dict):
        raise ValueError(f"malformed chunk (not a JSON object): {data[:100]!r}")
    return chunk


def _choices(chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chunk's choices ([] for the usage-only chunk)."""
    choices = chunk.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise ValueError(f"malformed choices in chunk: {str(choices)[:100]!r}")
    return choices


async def _run_load(
    endpoint: Endpoint,
    prompts: Sequence[Prompt],
    workload: WorkloadSpec,
    seed: int,
    ignore_eos: bool,
) -> tuple[list[RequestRecord], float]:
    load = workload.load
    progress = _Progress()
    connector = aiohttp.TCPConnector(limit=0, force_close=False, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=workload.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        started = time.perf_counter()
        if isinstance(load, ConcurrencyLoad):
            queue = list(enumerate(prompts))
            records: list[RequestRecord | None] = [None] * len(prompts)

            async def worker() -> None:
                while queue:
                    index, prompt = queue.pop(0)
                    records[index] = await _one_request(
                        client, endpoint, prompt, ignore_eos, progress)

            async def closed() -> list[RequestRecord]:
                await asyncio.gather(*(worker() for _ in range(min(load.concurrency,
                                                                   len(prompts)))))
                return [r for r in records if r is not None]

            done = await _watched(closed(), progress, workload.stall_timeout_s)
        else:
            rng = random.Random(seed)
            gate = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else None

            async def send(prompt: Prompt) -> RequestRecord:
                arrived = time.perf_counter()
                if gate is None:
                    return await _one_request(client, endpoint, prompt, ignore_eos, progress)
                async with gate:
                    return await _one_request(client, endpoint, prompt, ignore_eos, progress,
                                              arrived)

            async def open_loop() -> list[RequestRecord]:
                tasks = []
                for prompt in prompts:
                    tasks.append(asyncio.create_task(send(prompt)))
                    await asyncio.sleep(rng.expovariate(load.rate))
                return list(await asyncio.gather(*tasks))

            done = await _watched(open_loop(), progress, workload.stall_timeout_s)
        return done, time.perf_counter() - started


async def _watched(
    run: Coroutine[Any, Any, list[RequestRecord]], progress: _Progress, stall_s: float
) -> list[RequestRecord]:
    """``run``, cancelled with EngineStalled once requests are in flight and nothing has come
    from the engine for ``stall_s`` (a stopped or hung engine keeps connections open, so the
    requests alone would wait for their timeout)."""
    task = asyncio.ensure_future(run)
    tick = min(1.0, stall_s / 4)
    while not task.done():
        await asyncio.wait({task}, timeout=tick)
        silent = time.perf_counter() - progress.last
        if not task.done() and progress.in_flight and silent > stall_s:
            in_flight = progress.in_flight
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise EngineStalled(
                f"engine stalled: no token from any of {in_flight} requests in flight for "
                f"{silent:.1f} s (stall_timeout_s {stall_s:g})"
            )
    return task.result()


class HttpLoadDriver:
    """The built-in driver (implements LoadDriver)."""

    def __init__(self, ignore_eos: bool = True) -> None:
        self.ignore_eos = ignore_eos

    def run(
        self, endpoint: Endpoint, workload: WorkloadSpec, slos: Mapping[str, float],
        run_index: int = 0,
    ) -> BenchResult:
        prompts = build_prompts(workload, endpoint.base_url, endpoint.served_name, run_index)
        warmup, measured = prompts[: workload.warmup_requests], prompts[workload.warmup_requests :]
        warmup_s = 0.0
        if warmup:
            _, warmup_s = asyncio.run(
                _run_load(endpoint, warmup, workload, workload.seed, self.ignore_eos)
            )
        records, duration = asyncio.run(
            _run_load(endpoint, measured, workload, workload.seed + 1, self.ignore_eos)
        )
        started_at = min((r.sent_at for r in records), default=0.0)
        return BenchResult({**summarize(records, duration, slos), **prompts.counts()}, records,
                           warmup_s, duration, started_at)
