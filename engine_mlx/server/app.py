"""The ASGI app: ``GET /v1/models[/{id}]``, ``POST /v1/chat/completions`` and the rest on Starlette.

Requests run on the engine's job thread (engine_mlx.jobs), one at a time, in the same queue as the
app's own chats. Each request's events come back to the event loop through an asyncio queue; a
client that goes away cancels its generation, which stops at the next token. The body is read in
pieces and refused at the cap; a prompt whose text alone cannot fit the context is refused before
it is queued or tokenized. A stream that has sent nothing for ``keepalive_s`` (waiting in the queue,
a long prefill, a tool call being written) sends an SSE comment, so clients do not time out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from engine_mlx.cancel import CancelToken
from engine_mlx.errors import EngineError
from engine_mlx.events import (
    AnswerDelta,
    Finished,
    FinishReason,
    Stats,
    ThinkingDelta,
    TokenLogprob,
)
from engine_mlx.jobs import EngineThread, StreamEnd
from engine_mlx.server.config import ServerConfig
from engine_mlx.server.errors import ApiError, error_body, from_engine_error, model_not_found
from engine_mlx.server.media import ImageBatch, InlineImages
from engine_mlx.server.records import RequestRecord
from engine_mlx.server.requests import ChatRequest, parse_body, parse_chat_request
from engine_mlx.server.responses import ReplyAssembler, usage
from engine_mlx.server.security import AccessPolicy

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 << 20  # inline images included
KEEPALIVE = b": keep-alive\n\n"


@dataclass
class ServerContext:
    engine: Any  # engine_mlx.engine.Engine
    jobs: EngineThread
    policy: AccessPolicy
    on_request: Callable[[RequestRecord], None] | None = None
    config: ServerConfig = field(default_factory=ServerConfig)
    records: deque = field(default_factory=lambda: deque(maxlen=200))
    active: set = field(default_factory=set)  # CancelTokens of requests in flight
    lock: threading.Lock = field(default_factory=threading.Lock)
    media: InlineImages = field(init=False)

    def __post_init__(self) -> None:
        self.media = InlineImages(
            Path(tempfile.mkdtemp(prefix="qwendesk-api-")), self.config.media_cap_bytes
        )

    def model_id(self) -> str | None:
        info = self.engine.model_info
        return info.name if info is not None else None

    def record(self, rec: RequestRecord) -> None:
        self.records.append(rec)
        if self.on_request is not None:
            try:
                self.on_request(rec)
            except Exception:
                log.exception("request listener failed")

    def cancel_all(self) -> None:
        with self.lock:
            for token in list(self.active):
                token.cancel()


def _client(scope: Scope, headers: dict[str, str]) -> str:
    host, port = scope.get("client") or ("?", 0)
    agent = headers.get("user-agent", "")
    return f"{host}:{port}" + (f" ({agent})" if agent else "")


def _json_error(err: ApiError) -> JSONResponse:
    headers = {"Retry-After": "5"} if err.status == 503 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


# ---------------------------------------------------------------------------------- middleware


class GuardMiddleware:
    """Host, Origin and key checks for every HTTP request; CORS headers for allowed origins."""

    def __init__(self, app, context: ServerContext):
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        allowed = origin is not None and self.context.policy.origin_allowed(origin)
        cors = (
            [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
            if allowed
            else []
        )

        async def send_cors(message):  # on every answer to an allowed origin, errors too
            if message["type"] == "http.response.start" and cors:
                message = {**message, "headers": list(message.get("headers", [])) + cors}
            await send(message)

        try:
            self.context.policy.check(scope["method"], headers)
        except ApiError as err:
            self.context.record(
                RequestRecord(
                    time.time(),
                    _client(scope, headers),
                    scope["path"],
                    err.status,
                    error=err.message,
                )
            )
            await _json_error(err)(scope, receive, send_cors)
            return
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await Response(
                status_code=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Vary": "Origin",
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": headers.get(
                        "access-control-request-headers", "*"
                    ),
                    "Access-Control-Max-Age": "600",
                },
            )(scope, receive, send)
            return
        await self.app(scope, receive, send_cors)


# ---------------------------------------------------------------------------------- routes


async def list_models(request: Request) -> Response:
    context: ServerContext = request.app.state.context
    if context.jobs.loading:
        raise ApiError(503, "A model is loading; try again in a moment.", code="model_loading")
    model = context.model_id()
    return JSONResponse(
        {"object": "list", "data": [] if model is None else [_model_object(context, model)]}
    )


async def get_model(request: Request) -> Response:
    context: ServerContext = request.app.state.context
    if context.jobs.loading:
        raise ApiError(503, "A model is loading; try again in a moment.", code="model_loading")
    model, asked = context.model_id(), request.path_params["model_id"]
    if model is None:
        raise ApiError(
            503, "No model is loaded; load a model in QwenDesk first.", code="model_not_loaded"
        )
    if asked != model:
        raise model_not_found(asked, model)
    return JSONResponse(_model_object(context, model))


def _model_object(context: ServerContext, model: str) -> dict[str, Any]:
    """OpenAI's model object, plus what QwenDesk as a client needs (engine_mlx.remote): whether the
    model reads images, and the context a request may use."""
    info = context.engine.model_info
    extra: dict[str, Any] = {}
    if info is not None:
        limit = context.config.context_tokens or info.context_length
        extra = {"vision": bool(info.is_vision), "context_length": limit}
    return {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "qwendesk",
        "qwendesk": extra,
    }


def begin(request: Request) -> tuple[ServerContext, RequestRecord, float]:
    """A generation request's server context, its log record (200 until it fails) and its start."""
    context: ServerContext = request.app.state.context
    arrived, started = time.time(), time.perf_counter()
    headers = {k.lower(): v for k, v in request.headers.items()}
    return (
        context,
        RequestRecord(arrived, _client(request.scope, headers), request.url.path, 200),
        started,
    )


async def chat_completions(request: Request) -> Response:
    context, rec, started = begin(request)
    try:
        return await _chat(request, context, rec, started)
    except ApiError as err:
        context.record(
            _replace(
                rec, status=err.status, error=err.message, duration_s=time.perf_counter() - started
            )
        )
        raise


def _replace(rec: RequestRecord, **changes) -> RequestRecord:
    from dataclasses import replace

    return replace(rec, **changes)


async def _read_body(request: Request) -> bytearray:
    """The body, read piece by piece: refused at MAX_BODY_BYTES, chunked or not, without reading on."""
    too_large = ApiError(
        413,
        f"The request body is over {MAX_BODY_BYTES >> 20} MiB; send smaller images "
        "or fewer of them.",
        code="body_too_large",
    )
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for piece in request.stream():
        if len(body) + len(piece) > MAX_BODY_BYTES:
            raise too_large
        body += piece
    return body


async def admit(request: Request, context: ServerContext) -> tuple[dict[str, Any], str]:
    """A POST's JSON body and the model that serves it, or the ApiError that refuses it."""
    # seconds for a body of millions
    body = await asyncio.to_thread(parse_body, await _read_body(request))
    if context.jobs.loading:
        raise ApiError(503, "A model is loading; try again in a moment.", code="model_loading")
    model = context.model_id()
    if model is None:
        raise ApiError(
            503, "No model is loaded; load a model in QwenDesk first.", code="model_not_loaded"
        )
    return body, model


def check_model(asked: str, model: str) -> None:
    if asked != model:
        raise model_not_found(asked, model)


async def _chat(
    request: Request, context: ServerContext, rec: RequestRecord, started: float
) -> Response:
    body, model = await admit(request, context)
    images = context.media.batch()
    try:
        chat = parse_chat_request(body, images, context.config)
        check_model(chat.model, model)
        # before it is queued; off the event loop (normalizing megabytes of text takes a moment)
        await asyncio.to_thread(context.engine.check_prompt_size, chat.conversation, chat.settings)
    except (ApiError, EngineError) as exc:
        images.refuse()
        raise from_engine_error(exc) from None
    except BaseException:
        images.refuse()
        raise

    run = _Run(context, chat, request.receive, images)
    await run.start()
    # A stream starts once the engine answers or keepalive_s passes (errors after that go in the stream).
    first = await run.next(context.config.keepalive_s if chat.stream else None)
    if isinstance(first, StreamEnd):
        run.close()
        raise from_engine_error(first.error or RuntimeError("the request was cancelled"))
    if chat.stream:
        return _EventStream(run, rec, started, first)
    return await _complete(run, rec, started, first)


class _Run:
    """One request's generation on the engine thread, its events in an asyncio queue."""

    def __init__(
        self,
        context: ServerContext,
        chat: ChatRequest,
        receive: Receive,
        images: ImageBatch | None = None,
        generate: Callable[[CancelToken], Any] | None = None,
        prefix: str = "chatcmpl",
    ):
        self.context = context
        self.chat = chat
        self.images = images  # a chat's inline images (None for a raw completion)
        self.refused = (
            False  # the engine raised before its first event: the request's new images go
        )
        # what runs on the engine thread: the chat's next turn unless told (a raw completion)
        self._generate = generate or (
            lambda cancel: context.engine.generate(chat.conversation, chat.settings, cancel=cancel)
        )
        self.cancel = CancelToken()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.receive = receive
        self.engine_started = self.engine_ended = 0.0
        self.disconnected = False
        self._watch: asyncio.Task | None = None
        self.id = f"{prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def sink(item) -> None:
            now = time.perf_counter()
            if isinstance(item, StreamEnd):
                self.engine_ended = now
                self.refused = item.error is not None and not self.engine_started
            if not self.engine_started:
                self.engine_started = now
            loop.call_soon_threadsafe(self.queue.put_nowait, item)

        with self.context.lock:
            self.context.active.add(self.cancel)
        self._watch = asyncio.ensure_future(self._watch_disconnect())
        self.context.jobs.submit_stream(lambda: self._generate(self.cancel), sink, self.cancel)

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.cancel.cancel()  # the generation stops at its next token
                return

    async def next(self, timeout: float | None = None):
        """The next event, or None when ``timeout`` seconds pass first."""
        if timeout is None:
            return await self.queue.get()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        """Cancel the generation if it still runs; the images are kept, or deleted if refused (once
        the engine has ended: until then they are in use)."""
        self.cancel.cancel()  # no-op when the generation already ended
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        with self.context.lock:
            self.context.active.discard(self.cancel)
        self.release_images()

    def release_images(self) -> None:
        """Once the engine has ended (until then they are in use): keep the images, or delete the
        new ones if the engine refused the request."""
        if self.engine_ended and self.images is not None:
            self.images.refuse() if self.refused else self.images.done()

    async def events(self, first) -> AsyncIterator[Any]:
        """Engine events up to the end; a stop sequence cancels the rest (still drained)."""
        item = first
        while not isinstance(item, StreamEnd):
            yield item
            item = await self.next()

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if "logprobs" in delta:  # the assembler's content log-probabilities go beside the delta
            delta = dict(delta)
            choice = {
                "index": 0,
                "delta": delta,
                "logprobs": {"content": delta.pop("logprobs")},
                "finish_reason": finish,
            }
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.chat.model,
            "choices": [choice],
            **extra,
        }


def _assembler(run: _Run) -> ReplyAssembler:
    chat = run.chat
    return ReplyAssembler(
        stop=chat.stop,
        tools=chat.tool_schemas if chat.tools_on else None,
        reasoning_alias=run.context.config.reasoning_alias,
        logprobs=[] if chat.settings.logprobs is not None else None,
        forced_call=chat.forced_call,
    )


def _feed(assembler: ReplyAssembler, run: _Run, event) -> list[dict[str, Any]]:
    if isinstance(event, ThinkingDelta):
        return assembler.thinking(event.text)
    if isinstance(event, AnswerDelta):
        deltas = assembler.answer(event.text)
        if assembler.stopped:
            run.cancel.cancel()
        return deltas
    if isinstance(event, TokenLogprob):
        assembler.token_logprob(event)
    return []


async def collect(run: _Run, assembler: ReplyAssembler, first) -> tuple[Stats | None, Finished]:
    """A non-streamed request's events fed to ``assembler``: its stats and how it finished."""
    stats: Stats | None = None
    finished = Finished(FinishReason.ERROR, "no events")
    try:
        async for event in run.events(first):
            _feed(assembler, run, event)
            if isinstance(event, Stats):
                stats = event
            elif isinstance(event, Finished):
                finished = event
    finally:
        run.close()
    assembler.finish()
    return stats, finished


async def _complete(run: _Run, rec: RequestRecord, started: float, first) -> Response:
    assembler = _assembler(run)
    stats, finished = await collect(run, assembler, first)
    reason = assembler.finish_reason(finished.reason)
    _log(
        run,
        rec,
        started,
        stats,
        reason if finished.reason is not FinishReason.ERROR else "error",
        finished.error or "",
    )
    if finished.reason is FinishReason.ERROR:
        return JSONResponse(
            error_body(500, finished.error or "Generation failed."), status_code=500
        )
    return JSONResponse(
        {
            "id": run.id,
            "object": "chat.completion",
            "created": run.created,
            "model": run.chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": assembler.message(),
                    "finish_reason": reason,
                    "logprobs": None
                    if assembler.logprobs is None
                    else {"content": assembler.logprobs},
                }
            ],
            "usage": usage(stats),
        }
    )


def _log(
    run: _Run, rec: RequestRecord, started: float, stats: Stats | None, reason: str, error: str
) -> None:
    u = usage(stats)
    run.context.record(
        _replace(
            rec,
            status=499 if run.disconnected else rec.status,
            prompt_tokens=u["prompt_tokens"],
            cached_tokens=u["prompt_tokens_details"]["cached_tokens"],
            completion_tokens=u["completion_tokens"],
            duration_s=time.perf_counter() - started,
            finish_reason="disconnected" if run.disconnected else reason,
            error=error,
            engine_started=run.engine_started,
            engine_ended=run.engine_ended,
        )
    )


class _EventStream:
    """Server-sent events: one ``data:`` line per chunk, then ``data: [DONE]``. The request is
    logged when the generation has ended, whether the client stayed or left."""

    def __init__(
        self,
        run: _Run,
        rec: RequestRecord,
        started: float,
        first,
        assembler: ReplyAssembler | None = None,
    ):
        # first: None = not yet
        self.run, self.rec, self.started, self.first = (
            run,
            rec,
            started,
            first,
        )
        self.assembler = assembler or _assembler(run)
        self.stats: Stats | None = None
        self.finished = Finished(FinishReason.ERROR, "no events")
        self.ended = False
        self.end_error: BaseException | None = None  # what the engine raised before its first event
        self.sent_at = time.monotonic()  # when the last bytes went out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        try:
            async for chunk in self._chunks():
                if self.run.disconnected:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.sent_at = time.monotonic()
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away mid-send
            self.run.disconnected = True
        finally:
            self.run.close()  # cancels the generation if it is still going
            while not self.ended:  # wait for the engine to stop, for the log's figures
                self._take(await self.run.next())
            self.run.close()  # now the engine has ended: release (or delete) the images
            reason = self.assembler.finish_reason(self.finished.reason)
            _log(
                self.run,
                self.rec,
                self.started,
                self.stats,
                reason if self.finished.reason is not FinishReason.ERROR else "error",
                self.finished.error or "",
            )

    def _take(self, event) -> list[dict[str, Any]]:
        if isinstance(event, StreamEnd):
            self.ended = True
            self.run.release_images()  # before the last chunks go out
            self.end_error = event.error
            if event.error is not None:
                self.finished = Finished(FinishReason.ERROR, from_engine_error(event.error).message)
            return []
        if isinstance(event, Stats):
            self.stats = event
        elif isinstance(event, Finished):
            self.finished = event
        return _feed(self.assembler, self.run, event)

    async def _chunks(self) -> AsyncIterator[bytes]:
        run, chat, assembler = self.run, self.run.chat, self.assembler
        yield _sse(run.chunk({"role": "assistant", "content": ""}))
        event = self.first
        while True:
            if event is None:  # nothing to send for keepalive_s
                yield KEEPALIVE
            else:
                for delta in self._take(event):
                    yield _sse(run.chunk(delta))
            if self.ended:
                break
            event = await run.next(self.sent_at + run.context.config.keepalive_s - time.monotonic())
        if (
            self.end_error is not None
        ):  # refused before its first event, once the stream had started
            yield _sse(from_engine_error(self.end_error).body())
            yield b"data: [DONE]\n\n"
            return
        for delta in assembler.finish():
            yield _sse(run.chunk(delta))
        if self.finished.reason is FinishReason.ERROR:
            yield _sse(error_body(500, self.finished.error or "Generation failed."))
        else:
            yield _sse(run.chunk({}, assembler.finish_reason(self.finished.reason)))
            if chat.include_usage:
                last = run.chunk({}, None, usage=usage(self.stats))
                last["choices"] = []
                yield _sse(last)
        yield b"data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


# ---------------------------------------------------------------------------------- app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _json_error(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _json_error(
        ApiError(
            exc.status_code,
            str(exc.detail) or "Not found.",
            code="not_found" if exc.status_code == 404 else None,
        )
    )


def build_app(context: ServerContext) -> Any:
    from engine_mlx.server.completions import completions
    from engine_mlx.server.tokenize import tokenize

    app = Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/tokenize", tokenize, methods=["POST"]),  # vLLM's path: no /v1
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.state.context = context
    return GuardMiddleware(app, context)
