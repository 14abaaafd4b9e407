"""A small OpenAI-compatible streaming server for unit tests of the load driver and the
engine suite's HTTP half: no model, no vLLM, answers in milliseconds.

It serves what autotune reads of a vLLM server: ``/v1/completions`` and
``/v1/chat/completions`` (JSON or SSE streaming, with the usage chunk when
``stream_options.include_usage`` asks for it; a chat stream opens with vLLM's role-only chunk),
``/tokenize``, ``/health``, ``/version``,
``/v1/models`` and a small Prometheus ``/metrics``. Token ``i`` of an answer is the text
``"t{i} "``. ``Behaviour`` sets delays and the edge cases (empty chunks, an error chunk
mid-stream, a malformed chunk, an early close, a non-200 status, a stall, a slow /health or
/tokenize) for every following request (or ``script``: request k of the completions endpoints
answers as ``script[k % len(script)]``)::

    with MockOpenAI() as server:
        server.behaviour = Behaviour(tokens=4, token_delay_s=0.01, error_after=2)
        HttpLoadDriver().run(server.endpoint, workload, slos)

``autotune/testing/mock_engine.py`` puts it behind the engine boundary.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from autotune.bench import Endpoint

SERVED_NAME = "mock-model"
VERSION = "0.0.mock"


@dataclass
class Behaviour:
    """How the server answers; every field applies to every request until changed."""

    tokens: int | None = None  # tokens per answer; None: the request's max_tokens
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    empty_chunks: int = 0  # chunks with empty text before the first token (vLLM sends some)
    error_after: int | None = None  # an error chunk (then [DONE]) after this many tokens
    close_after: int | None = None  # drop the connection after this many tokens
    bad_chunk: str | None = None  # a raw ``data:`` payload sent after the first token
    status: int = 200  # not 200: every completion request fails with this status
    usage: bool = True  # send the usage chunk when the request asks for it
    keepalive_comments: bool = False  # SSE comment lines (": ping") between chunks
    stall_after: int | None = None  # go silent after this many tokens (a SIGSTOPped engine)
    stall_s: float = 30.0  # how long a stall lasts (the client gives up long before)
    usage_delay_s: float = 0.0  # between the last token and the usage chunk
    health_delay_s: float = 0.0  # /health answers after this long (a stalled engine: long)
    tokenize_delay_s: float = 0.0  # /tokenize answers after this long (a hung one: long)
    # A /tokenize request freezes /health and /tokenize for this long (an engine stopped, say
    # by SIGSTOP, just as a workload is built)
    freeze_at_tokenize_s: float = 0.0
    role_chunk: bool = True  # chat: open with the role-only chunk (content ""), as vLLM does
    finish_chunk: bool = False  # the finish reason in a last chunk of its own (empty text)


@dataclass
class Seen:
    """One request the server received."""

    path: str
    body: dict[str, Any] = field(default_factory=dict)
    peer: Any = None  # the client's (address, port): one per connection


class ThreadedServer:
    """An aiohttp application on 127.0.0.1 and a free port, served by a thread of its own (with
    its own event loop), so synchronous code under test can call it. ``start``/``stop`` or a
    ``with`` block; subclasses add their routes in ``routes``."""

    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # reported to start() below
                failed.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start within 10s")
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _close(self) -> None:
        """Abort the requests still in flight, then close the server: a graceful shutdown
        would wait for each of them (a stalled stream holds its connection for its whole
        stall)."""
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _listen(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]


class MockOpenAI(ThreadedServer):
    """The mock vLLM server. ``reset`` restores the default behaviour and forgets the requests
    and counters (for a server shared by a module's tests)."""

    def __init__(self, served_name: str = SERVED_NAME) -> None:
        super().__init__()
        self.served_name = served_name
        self.behaviour = Behaviour()
        self.script: list[Behaviour] = []
        self.requests: list[Seen] = []
        self.answered = 0  # completion requests seen (the index into ``script``)
        self.frozen_until = 0.0  # event-loop time until which /health and /tokenize hang
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished = 0

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.base_url, self.served_name)

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.script = []
        self.answered = 0
        self.requests.clear()
        self.prompt_tokens = self.generation_tokens = self.finished = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_get("/health", self._health)
        app.router.add_get("/version", self._version)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)

    async def _frozen(self) -> None:
        await asyncio.sleep(max(0.0, self.frozen_until - asyncio.get_running_loop().time()))

    async def _health(self, request: web.Request) -> web.Response:
        await self._frozen()
        await asyncio.sleep(self.behaviour.health_delay_s)
        return web.Response(status=200)

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.served_name, "object": "model", "owned_by": "mock", "max_model_len": 4096}
        ]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(Seen("/tokenize", body))
        if self.behaviour.freeze_at_tokenize_s:
            self.frozen_until = (asyncio.get_running_loop().time()
                                 + self.behaviour.freeze_at_tokenize_s)
        await self._frozen()
        await asyncio.sleep(self.behaviour.tokenize_delay_s)
        words = str(body.get("prompt", "")).split()
        tokens = [1000 + sum(map(ord, word)) % 5000 for word in words]
        return web.json_response({"tokens": tokens, "count": len(tokens), "max_model_len": 4096})

    async def _metrics(self, request: web.Request) -> web.Response:
        labels = f'{{model_name="{self.served_name}"}}'
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{labels} {float(self.running)}",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{labels} 0.0",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{labels} {min(1.0, 0.1 * self.running)}",
            "# TYPE vllm:num_preemptions counter",
            f"vllm:num_preemptions_total{labels} 0.0",
            "# TYPE vllm:prompt_tokens counter",
            f"vllm:prompt_tokens_total{labels} {float(self.prompt_tokens)}",
            "# TYPE vllm:generation_tokens counter",
            f"vllm:generation_tokens_total{labels} {float(self.generation_tokens)}",
            "# TYPE vllm:request_queue_time_seconds histogram",
            f"vllm:request_queue_time_seconds_sum{labels} {0.001 * self.finished}",
            f"vllm:request_queue_time_seconds_count{labels} {float(self.finished)}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Seen("/v1/completions", body, _peer(request)))
        prompt = body.get("prompt", "")
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            return {"id": "cmpl-mock", "object": "text_completion", "model": self.served_name,
                    "choices": [{"index": 0, "text": text, "finish_reason": finish,
                                 "logprobs": None}]}

        def whole(text: str, n: int) -> dict[str, Any]:
            return {"id": "cmpl-mock", "object": "text_completion", "model": self.served_name,
                    "choices": [{"index": 0, "text": text, "finish_reason": "length",
                                 "logprobs": None}],
                    "usage": _usage(prompt_tokens, n)}

        return await self._answer(request, body, prompt_tokens, chunk, whole)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Seen("/v1/chat/completions", body, _peer(request)))
        prompt_tokens = sum(len(str(m.get("content", "")).split())
                            for m in body.get("messages") or [])

        def delta(content: dict[str, str], finish: str | None) -> dict[str, Any]:
            return {"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                    "model": self.served_name,
                    "choices": [{"index": 0, "delta": content, "finish_reason": finish}]}

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            # A finish chunk of its own has an empty delta, as OpenAI's.
            return delta({"content": text} if text or finish is None else {}, finish)

        def role(b: Behaviour) -> list[dict[str, Any]]:
            return [delta({"role": "assistant", "content": ""}, None)] if b.role_chunk else []

        def whole(text: str, n: int) -> dict[str, Any]:
            return {"id": "chatcmpl-mock", "object": "chat.completion", "model": self.served_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "length"}],
                    "usage": _usage(prompt_tokens, n)}

        return await self._answer(request, body, prompt_tokens, chunk, whole, role)

    async def _answer(
        self,
        request: web.Request,
        body: dict[str, Any],
        prompt_tokens: int,
        chunk: Callable[[str, str | None], dict[str, Any]],
        whole: Callable[[str, int], dict[str, Any]],
        opening: Callable[[Behaviour], list[dict[str, Any]]] = lambda b: [],
    ) -> web.StreamResponse:
        b = self.script[self.answered % len(self.script)] if self.script else self.behaviour
        self.answered += 1
        if b.status != 200:
            return web.json_response(
                {"object": "error", "message": f"mock status {b.status}", "type": "MockError",
                 "code": b.status}, status=b.status)
        asked = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        n = b.tokens if b.tokens is not None else int(asked)
        self.running += 1
        try:
            self.prompt_tokens += prompt_tokens
            if not body.get("stream"):
                await asyncio.sleep(b.first_token_delay_s + b.token_delay_s * max(n - 1, 0))
                self.generation_tokens += n
                return web.json_response(whole("".join(_token(i) for i in range(n)), n))
            return await self._stream(request, body, b, prompt_tokens, n, chunk, opening(b))
        except ConnectionResetError:  # the client went away mid-answer: nothing more to say
            return web.Response(status=499)
        finally:
            self.running -= 1
            self.finished += 1

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        b: Behaviour,
        prompt_tokens: int,
        n: int,
        chunk: Callable[[str, str | None], dict[str, Any]],
        opening: list[dict[str, Any]],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(payload: str) -> None:
            await response.write(f"data: {payload}\n\n".encode())
            if b.keepalive_comments:
                await response.write(b": ping\n\n")

        async def say(data: dict[str, Any]) -> None:
            await send(json.dumps(data))

        await asyncio.sleep(b.first_token_delay_s)
        for data in opening:  # with the first token, as vLLM sends a chat's role chunk
            await say(data)
        for _ in range(b.empty_chunks):
            await say(chunk("", None))
        sent = 0
        for i in range(n):
            if i:
                await asyncio.sleep(b.token_delay_s)
            if b.close_after is not None and i == b.close_after:
                assert request.transport is not None
                request.transport.close()  # mid-body: the client sees an incomplete payload
                return response
            if b.stall_after is not None and i == b.stall_after:
                await asyncio.sleep(b.stall_s)
            if b.error_after is not None and i == b.error_after:
                await say({"error": {"object": "error", "message": "mock error mid-stream",
                                     "type": "InternalServerError", "code": 500}})
                break
            await say(chunk(_token(i), "length" if i == n - 1 and not b.finish_chunk else None))
            sent += 1
            self.generation_tokens += 1
            if i == 0 and b.bad_chunk is not None:
                await send(b.bad_chunk)
        if b.finish_chunk and sent == n:
            await say(chunk("", "length"))
        await asyncio.sleep(b.usage_delay_s)
        if b.usage and (body.get("stream_options") or {}).get("include_usage"):
            await say({"id": "cmpl-mock", "choices": [], "usage": _usage(prompt_tokens, sent)})
        await send("[DONE]")
        await response.write_eof()
        return response


def _peer(request: web.Request) -> Any:
    return request.transport.get_extra_info("peername") if request.transport else None


def _token(i: int) -> str:
    return f"t{i} "


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
