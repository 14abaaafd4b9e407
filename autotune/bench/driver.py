"""The built-in load driver: streams /v1/completions at a fixed concurrency or Poisson rate.

``LoadDriver`` is the boundary (``run(endpoint, workload, slos) → BenchResult``); the built-in
``HttpLoadDriver`` is async on aiohttp, as ``vllm bench serve`` is: on a small host the client
shares the CPU with the engine, so its per-chunk cost shows in the engine's throughput.
Warm-up requests run first and are not measured.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import aiohttp

from autotune.bench.metrics import RequestRecord, summarize
from autotune.bench.workload import Prompt, build_prompts
from autotune.bench.workload_spec import ConcurrencyLoad, PoissonLoad, WorkloadSpec


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


@runtime_checkable
class LoadDriver(Protocol):
    """Drives ``workload`` against a running OpenAI-compatible endpoint and measures it.

    Never raises for request errors: they are counted in ``failed`` / ``error_rate``. Raises
    only when the workload itself cannot be built (e.g. an unreadable prompts file).
    """

    def run(
        self, endpoint: Endpoint, workload: WorkloadSpec, slos: Mapping[str, float]
    ) -> BenchResult: ...


async def _one_request(
    client: aiohttp.ClientSession, endpoint: Endpoint, prompt: Prompt, ignore_eos: bool
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
    record = RequestRecord(ok=False, sent_at=sent)
    try:
        return await _stream(client, endpoint, prompt, ignore_eos, payload, record, sent)
    finally:
        record.done_at = time.perf_counter()


async def _stream(
    client: aiohttp.ClientSession, endpoint: Endpoint, prompt: Prompt, ignore_eos: bool,
    payload: dict[str, object], record: RequestRecord, sent: float,
) -> RequestRecord:
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
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = _chunk(data)
                if "error" in chunk:
                    record.error = str(chunk["error"])[:300]
                    return record
                now = time.perf_counter()
                if _text(chunk):
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
    record.e2e = time.perf_counter() - sent
    if record.ttft is None:
        record.error = "no token received"
    elif ignore_eos and record.output_tokens < prompt.max_tokens:
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


def _text(chunk: Mapping[str, Any]) -> str:
    """The text a completion chunk carries ('' for empty, usage-only and role chunks)."""
    choices = chunk.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise ValueError(f"malformed choices in chunk: {str(choices)[:100]!r}")
    return str(choices[0].get("text") or "") if choices else ""


async def _run_load(
    endpoint: Endpoint,
    prompts: Sequence[Prompt],
    load: ConcurrencyLoad | PoissonLoad,
    timeout_s: float,
    seed: int,
    ignore_eos: bool,
) -> tuple[list[RequestRecord], float]:
    limit = load.concurrency if isinstance(load, ConcurrencyLoad) else load.max_concurrency
    connector = aiohttp.TCPConnector(limit=0, force_close=False, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        started = time.perf_counter()
        if isinstance(load, ConcurrencyLoad):
            queue = list(enumerate(prompts))
            records: list[RequestRecord | None] = [None] * len(prompts)

            async def worker() -> None:
                while queue:
                    index, prompt = queue.pop(0)
                    records[index] = await _one_request(client, endpoint, prompt, ignore_eos)

            await asyncio.gather(*(worker() for _ in range(min(load.concurrency, len(prompts)))))
            done = [r for r in records if r is not None]
        else:
            rng = random.Random(seed)
            gate = asyncio.Semaphore(limit) if limit else None

            async def send(prompt: Prompt) -> RequestRecord:
                if gate is None:
                    return await _one_request(client, endpoint, prompt, ignore_eos)
                async with gate:
                    return await _one_request(client, endpoint, prompt, ignore_eos)

            tasks = []
            for prompt in prompts:
                tasks.append(asyncio.create_task(send(prompt)))
                await asyncio.sleep(rng.expovariate(load.rate))
            done = list(await asyncio.gather(*tasks))
        return done, time.perf_counter() - started


class HttpLoadDriver:
    """The built-in driver (implements LoadDriver)."""

    def __init__(self, ignore_eos: bool = True) -> None:
        self.ignore_eos = ignore_eos

    def run(
        self, endpoint: Endpoint, workload: WorkloadSpec, slos: Mapping[str, float]
    ) -> BenchResult:
        prompts = build_prompts(workload, endpoint.base_url, endpoint.served_name)
        warmup, measured = prompts[: workload.warmup_requests], prompts[workload.warmup_requests :]
        warmup_s = 0.0
        if warmup:
            _, warmup_s = asyncio.run(
                _run_load(
                    endpoint,
                    warmup,
                    workload.load,
                    workload.request_timeout_s,
                    workload.seed,
                    self.ignore_eos,
                )
            )
        records, duration = asyncio.run(
            _run_load(
                endpoint,
                measured,
                workload.load,
                workload.request_timeout_s,
                workload.seed + 1,
                self.ignore_eos,
            )
        )
        started_at = min((r.sent_at for r in records), default=0.0)
        return BenchResult(summarize(records, duration, slos), records, warmup_s, duration,
                           started_at)
