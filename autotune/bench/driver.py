"""The built-in load driver: streams completions and chats at a fixed concurrency, a Poisson
rate or a trace's arrival times.

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

A prompt with chat ``messages`` goes to ``/v1/chat/completions``, timed as vLLM's chat
benchmark times it (every chunk with choices is a token event, the role-only first one
included). A prompt with ``next_turns`` is a conversation: each turn is a request (a record of
its own), sent after the last answer plus the turn's think time with the whole history. Loads
count prompts, so conversations: ``concurrency`` is conversations in flight, a Poisson
``rate`` is conversations arriving per second, a trace sends each conversation's first turn at
its ``arrival_s``; a ``max_concurrency`` gate holds conversations too.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import aiohttp

from autotune.bench.metrics import RequestRecord, summarize
from autotune.bench.prompt_set import Prompt, PromptSet, WorkloadError
from autotune.bench.steady import (
    MEASURED,
    SteadyPlan,
    SteadyWindow,
    completed_within,
    window_metrics,
)
from autotune.bench.workload import build_prompts
from autotune.space import ConcurrencyLoad, PoissonLoad, TraceLoad, WorkloadSpec


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    served_name: str


@dataclass
class BenchResult:
    """One run's figures and its measured requests. A steady run (``window`` set) measured
    only the requests of its window, and its throughputs count ``completed`` (the requests of
    any phase that finished inside the window) over the window's length."""

    metrics: dict[str, float]
    records: list[RequestRecord] = field(default_factory=list)
    warmup_s: float = 0.0
    benchmark_s: float = 0.0
    started_at: float = 0.0  # time.perf_counter() at the first measured send
    window: SteadyWindow | None = None
    completed: list[RequestRecord] = field(default_factory=list)

    def figures(self, slos: Mapping[str, float], *, from_arrival: bool = False
                ) -> dict[str, float]:
        """The run's metrics against ``slos``; ``from_arrival``: latencies counted from each
        request's arrival, its wait at the client's concurrency gate included (what a user
        arriving at that rate sees)."""
        if not (self.records and from_arrival):
            return dict(self.metrics)
        records = [r.including_client_queue() for r in self.records]
        if self.window is None:
            return summarize(records, self.benchmark_s, slos)
        return window_metrics(records, self.completed, self.window.length_s, slos) | (
            self.window.facts())


# More prompts for a steady run that needs them: ``more(part)`` builds part ``part`` (1, 2, ...)
# of the run's prompts, none of them repeating an earlier part's.
MorePrompts = Callable[[int], Sequence[Prompt]]


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


@dataclass(frozen=True)
class _Client:
    """What every request of one run shares."""

    session: aiohttp.ClientSession
    endpoint: Endpoint
    ignore_eos: bool
    progress: _Progress
    # Some prompt of the run is a multi-turn conversation: every chat of the run is then a
    # conversation, one-turn ones too (they count in first_turn_* and conversations_*).
    conversations: bool = False


def _payload(
    client: _Client, body: list[int] | str | None, messages: Sequence[Mapping[str, str]] | None,
    max_tokens: int,
) -> tuple[str, dict[str, object]]:
    """The request's path and JSON: a completion of ``body``, or, with ``messages``, a chat
    completion as vLLM's chat benchmark sends it (``max_completion_tokens``; ``ignore_eos`` is
    vLLM's extra sampling parameter on both endpoints)."""
    common: dict[str, object] = {
        "model": client.endpoint.served_name,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": client.ignore_eos,
    }
    if messages is None:
        return "/v1/completions", {"prompt": body, "max_tokens": max_tokens, **common}
    return "/v1/chat/completions", {
        "messages": [dict(m) for m in messages], "max_completion_tokens": max_tokens, **common,
    }


async def _one_request(
    client: _Client, body: list[int] | str | None, messages: Sequence[Mapping[str, str]] | None,
    max_tokens: int, arrived: float | None = None,
) -> tuple[RequestRecord, str]:
    """One streamed request, timed; and the answer's text (chat only: a later turn resends
    it)."""
    path, payload = _payload(client, body, messages, max_tokens)
    sent = time.perf_counter()
    record = RequestRecord(ok=False, sent_at=sent, queued_s=sent - (arrived or sent))
    answer: list[str] = []
    client.progress.begin()
    try:
        await _stream(client, path, payload, max_tokens, record, answer)
    finally:
        record.done_at = time.perf_counter()
        client.progress.end()
    return record, "".join(answer)


async def _stream(
    client: _Client, path: str, payload: dict[str, object], max_tokens: int,
    record: RequestRecord, answer: list[str],
) -> None:
    sent = record.sent_at
    chat = "messages" in payload
    last: float | None = None
    try:
        async with client.session.post(f"{client.endpoint.base_url}{path}",
                                       json=payload) as response:
            if response.status != 200:
                body = (await response.read()).decode(errors="replace")[:300]
                record.error = f"HTTP {response.status}: {body}"
                return
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                now = time.perf_counter()
                client.progress.last = now
                data = line[5:].strip()
                if data == b"[DONE]":
                    # Read on to the end of the body: leaving it unread closes the connection,
                    # and the server then accepts a new one for the next request (vLLM's client
                    # reads to the end and keeps its connections).
                    continue
                chunk = _chunk(data)
                if "error" in chunk:
                    record.error = str(chunk["error"])[:300]
                    return
                # A token event even when its text is empty (vLLM's), and in a chat the
                # role-only first chunk too, as vLLM's chat benchmark counts it.
                if choices := _choices(chunk):
                    if last is None:
                        record.ttft = now - sent
                    else:
                        record.itls.append(now - last)
                    last = now
                    if chat:
                        answer.append(_delta_content(choices[0]))
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
        return
    if last is None:
        record.error = "no token received"
        return
    record.e2e = last - sent  # at the last token, as vLLM's E2EL
    if client.ignore_eos and record.output_tokens < max_tokens:
        record.error = f"truncated: {record.output_tokens} of {max_tokens} tokens"
    else:
        record.ok = True


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


def _delta_content(choice: Mapping[str, Any]) -> str:
    """The text a chat chunk's choice adds to the answer ("" for the role-only first chunk)."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        raise ValueError(f"malformed chat chunk: a choice without a delta: {str(choice)[:100]!r}")
    content = delta.get("content")
    if content is not None and not isinstance(content, str):
        raise ValueError(f"malformed chat chunk: delta content {str(content)[:100]!r}")
    return content or ""


async def _converse(
    client: _Client, prompt: Prompt, conversation: int, arrived: float | None = None,
) -> list[RequestRecord]:
    """A prompt's requests: its one request, or each turn of its conversation in order.

    After each answer, the next turn waits its ``think_s`` (nothing is in flight then, so it
    is no stall) and sends the whole history: the messages so far, the model's own answer as
    streamed, and the next user message. Once a turn fails, the later ones are not sent and
    are recorded as failed (a user would not have gone on either)."""
    record, answer = await _one_request(client, prompt.body, prompt.messages, prompt.max_tokens,
                                        arrived)
    if not prompt.next_turns:
        if client.conversations and prompt.messages is not None:
            record.conversation = conversation
        return [record]
    records = [record]
    history = list(prompt.messages or ())
    failed_turn: int | None = None
    for turn in prompt.next_turns:
        if failed_turn is None and not records[-1].ok:
            failed_turn = len(records) - 1
        if failed_turn is not None:
            now = time.perf_counter()
            records.append(RequestRecord(
                ok=False, error=f"not sent: turn {failed_turn} of its conversation failed",
                sent_at=now, done_at=now))
            continue
        await asyncio.sleep(turn.think_s)
        history += [{"role": "assistant", "content": answer},
                    {"role": "user", "content": turn.content}]
        record, answer = await _one_request(client, None, history, turn.max_tokens)
        records.append(record)
    for index, turn_record in enumerate(records):
        turn_record.conversation, turn_record.turn = conversation, index
    return records


def _arrival_offsets(load: PoissonLoad | TraceLoad, prompts: Sequence[Prompt],
                     seed: int) -> list[float]:
    """When each prompt is sent, in seconds from the run's start: Poisson arrivals (the first
    at 0), or the prompts' trace arrival times counted from the run's earliest one (so that a
    run after the warm-up does not open with the warm-up's span of idle time)."""
    if isinstance(load, TraceLoad):
        arrivals = [p.arrival_s or 0.0 for p in prompts]
        first = min(arrivals, default=0.0)
        return [a - first for a in arrivals]
    rng = random.Random(seed)
    offsets, at = [], 0.0
    for _ in prompts:
        offsets.append(at)
        at += rng.expovariate(load.rate)
    return offsets


async def _closed_loop(client: _Client, prompts: Sequence[Prompt],
                       concurrency: int) -> list[RequestRecord]:
    """``concurrency`` users, each sending its next prompt (or conversation) once the last
    one is done."""
    queue = list(enumerate(prompts))
    done: list[list[RequestRecord]] = [[] for _ in prompts]

    async def user() -> None:
        while queue:
            index, prompt = queue.pop(0)
            done[index] = await _converse(client, prompt, index)

    await asyncio.gather(*(user() for _ in range(min(concurrency, len(prompts)))))
    return [record for records in done for record in records]


async def _open_loop(
    client: _Client, prompts: Sequence[Prompt], offsets: Sequence[float], started: float,
    max_concurrency: int | None,
) -> list[RequestRecord]:
    """Each prompt (or conversation) sent at ``started + offset``, whatever is in flight; a
    ``max_concurrency`` gate holds it until fewer are, the wait kept in ``queued_s``."""
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def send(index: int) -> list[RequestRecord]:
        arrived = time.perf_counter()
        if gate is None:
            return await _converse(client, prompts[index], index)
        async with gate:
            return await _converse(client, prompts[index], index, arrived)

    tasks = []
    for index in sorted(range(len(prompts)), key=lambda i: offsets[i]):
        wait = started + offsets[index] - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(send(index)))
    return [record for records in await asyncio.gather(*tasks) for record in records]


async def _run_load(
    endpoint: Endpoint,
    prompts: Sequence[Prompt],
    workload: WorkloadSpec,
    seed: int,
    ignore_eos: bool,
    window: SteadyWindow | None = None,
    more: MorePrompts | None = None,
) -> tuple[list[RequestRecord], float]:
    """Send ``prompts`` under ``workload``'s load: all of them, or with a steady ``window``,
    until it is finished (then the records are the measured ones and ``window.completed``
    holds what finished inside it)."""
    load = workload.load
    progress = _Progress()
    connector = aiohttp.TCPConnector(limit=0, force_close=False, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=workload.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        client = _Client(session, endpoint, ignore_eos, progress,
                         conversations=any(p.next_turns for p in prompts))
        started = time.perf_counter()
        run: Coroutine[Any, Any, list[RequestRecord]]
        if window is not None and not isinstance(load, TraceLoad):
            run = _steady(client, prompts, load, seed, window, more)
        elif isinstance(load, ConcurrencyLoad):
            run = _closed_loop(client, prompts, load.concurrency)
        else:
            offsets = _arrival_offsets(load, prompts, seed)
            run = _open_loop(client, prompts, offsets, started, load.max_concurrency)
        done = await _watched(run, progress, workload.stall_timeout_s)
        return done, time.perf_counter() - started


class _Supply:
    """The prompts of a steady run: those built, and more from ``more(part)`` (in a thread,
    started when ``low`` or fewer are left) when the window needs more than were built."""

    def __init__(self, prompts: Sequence[Prompt], more: MorePrompts | None, low: int) -> None:
        self.items = list(prompts)
        self.more = more
        self.low = low
        self.part = 0
        self.pending: asyncio.Task[Sequence[Prompt]] | None = None

    def left(self) -> int:
        """Prompts still to come (a supply that can grow never runs short)."""
        return len(self.items) if self.more is None else 1 << 30

    async def take(self) -> Prompt | None:
        if self.more is not None and self.pending is None and len(self.items) <= self.low:
            self.part += 1
            self.pending = asyncio.create_task(asyncio.to_thread(self.more, self.part))
        pending = self.pending
        if pending is not None and (pending.done() or not self.items):
            fresh = await pending
            if self.pending is pending:  # another user may have taken it in meanwhile
                self.items.extend(fresh)
                self.pending = None
                if not fresh:
                    self.more = None
        return self.items.pop(0) if self.items else None

    async def close(self) -> None:
        if self.pending is not None:
            await asyncio.gather(self.pending, return_exceptions=True)


async def _steady(
    client: _Client, prompts: Sequence[Prompt], load: ConcurrencyLoad | PoissonLoad, seed: int,
    window: SteadyWindow, more: MorePrompts | None,
) -> list[RequestRecord]:
    """A held load (``concurrency`` users, or Poisson arrivals behind an optional gate) until
    ``window`` is finished: the measured requests' records; every finished request's records
    go to ``window.records`` (the window's completions are counted from them). Drain
    requests still in flight at the end are cancelled (vLLM aborts a request whose client
    went away)."""
    edge = load.concurrency if isinstance(load, ConcurrencyLoad) else 8
    supply = _Supply(prompts, more, low=2 * edge)
    measured: list[RequestRecord] = []
    finished = asyncio.Event()
    counter = itertools.count()

    async def one(prompt: Prompt, phase: str, arrived: float | None = None,
                  gate: asyncio.Semaphore | None = None) -> None:
        index = next(counter)
        if gate is None:
            records = await _converse(client, prompt, index, arrived)
        else:
            async with gate:
                records = await _converse(client, prompt, index, arrived)
        window.on_done(time.perf_counter(), phase)
        window.records.extend(records)
        if phase == MEASURED:
            measured.extend(records)
        if window.finished:
            finished.set()

    tasks: list[asyncio.Task[None]] = []
    if isinstance(load, ConcurrencyLoad):
        async def user() -> None:
            while not window.finished and (prompt := await supply.take()) is not None:
                phase = window.on_send(time.perf_counter(), supply.left())
                if window.finished:  # this send closed a window with nothing in flight
                    break
                await one(prompt, phase)
            window.ran_out(time.perf_counter())
            if window.finished:
                finished.set()

        tasks = [asyncio.create_task(user()) for _ in range(load.concurrency)]
    else:
        async def arrivals() -> None:
            gate = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else None
            rng, started, at = random.Random(seed), time.perf_counter(), 0.0
            while not window.finished:
                wait = started + at - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                prompt = None if window.finished else await supply.take()
                if prompt is None:
                    break
                now = time.perf_counter()
                phase = window.on_send(now, supply.left())
                if window.finished:
                    break
                tasks.append(asyncio.create_task(one(prompt, phase, now if gate else None,
                                                     gate)))
                at += rng.expovariate(load.rate)
            window.ran_out(time.perf_counter())
            if window.finished:
                finished.set()

        tasks = [asyncio.create_task(arrivals())]
    everyone = asyncio.ensure_future(_until_all(tasks))
    waiting = asyncio.ensure_future(finished.wait())
    try:
        await asyncio.wait({everyone, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [*tasks, everyone, waiting]:
            task.cancel()
        await asyncio.gather(*tasks, everyone, waiting, return_exceptions=True)
        await supply.close()
    return measured


async def _until_all(tasks: list[asyncio.Task[None]]) -> None:
    """Until every task of ``tasks`` (which may grow while waiting) is done."""
    while not all(t.done() for t in tasks):
        await asyncio.gather(*[t for t in tasks if not t.done()], return_exceptions=True)


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


def _check_prompts(
    prompts: Sequence[Prompt], load: ConcurrencyLoad | PoissonLoad | TraceLoad
) -> None:
    """WorkloadError naming the first prompt the driver cannot send as built (a bug of the
    prompt source rather than of the user's file, but said plainly rather than crashed on)."""
    for number, prompt in enumerate(prompts):
        if prompt.body is None and prompt.messages is None:
            raise WorkloadError(f"prompt {number} has neither a body nor chat messages")
        if prompt.next_turns and prompt.messages is None:
            raise WorkloadError(f"prompt {number} has later turns but no chat messages: a "
                                "conversation goes to /v1/chat/completions")
        if isinstance(load, TraceLoad) and prompt.arrival_s is None:
            raise WorkloadError(f"prompt {number} has no arrival time, which a trace load needs")


class HttpLoadDriver:
    """The built-in driver (implements LoadDriver)."""

    def __init__(self, ignore_eos: bool = True) -> None:
        self.ignore_eos = ignore_eos

    def run(
        self, endpoint: Endpoint, workload: WorkloadSpec, slos: Mapping[str, float],
        run_index: int = 0,
    ) -> BenchResult:
        steady = workload.steady
        if steady is None:
            prompts = build_prompts(workload, endpoint.base_url, endpoint.served_name, run_index)
            result = self.measure(endpoint, prompts, workload, slos)
            result.metrics.update(prompts.counts())
            return result
        plan = SteadyPlan.of(workload, steady)
        built = workload.model_copy(update={"num_requests": plan.prompts_needed()})
        prompts = build_prompts(built, endpoint.base_url, endpoint.served_name, run_index)
        parts = [prompts]

        def more(part: int) -> PromptSet:
            extra = build_prompts(
                built.model_copy(update={"num_requests": plan.requests, "warmup_requests": 0}),
                endpoint.base_url, endpoint.served_name, run_index, part=part)
            parts.append(extra)
            return extra

        result = self.measure(endpoint, prompts, workload, slos, more=more)
        result.metrics.update({key: sum(p.counts()[key] for p in parts)
                               for key in prompts.counts()})
        return result

    def measure(
        self, endpoint: Endpoint, prompts: Sequence[Prompt], workload: WorkloadSpec,
        slos: Mapping[str, float], more: MorePrompts | None = None,
    ) -> BenchResult:
        """Send ``prompts`` (the first ``workload.warmup_requests`` as the unmeasured warm-up)
        under ``workload``'s load, timeouts and stall limit, and measure them: all of them, or
        under a steady-state rule (``workload.steady``) the window of a held load, the rest of
        the prompts (and ``more``) its supply (``bench.steady``)."""
        _check_prompts(prompts, workload.load)
        warmup, measured = prompts[: workload.warmup_requests], prompts[workload.warmup_requests :]
        warmup_s = 0.0
        if warmup:
            _, warmup_s = asyncio.run(
                _run_load(endpoint, warmup, workload, workload.seed, self.ignore_eos)
            )
        steady = workload.steady
        window = None if steady is None else SteadyWindow(SteadyPlan.of(workload, steady))
        records, duration = asyncio.run(
            _run_load(endpoint, measured, workload, workload.seed + 1, self.ignore_eos, window,
                      more)
        )
        started_at = min((r.sent_at for r in records), default=0.0)
        if window is None:
            return BenchResult(summarize(records, duration, slos), records, warmup_s, duration,
                               started_at)
        completed = (completed_within(window.records, window.opened, window.closed)
                     if window.opened is not None and window.closed is not None else [])
        metrics = window_metrics(records, completed, window.length_s, slos) | window.facts()
        return BenchResult(metrics, records, warmup_s, duration, started_at, window, completed)
