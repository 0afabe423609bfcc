"""``POST /v1/completions``: a raw prompt continued, for editors' autocomplete (OpenAI's legacy API).

No chat template and no thinking: the text comes back as the model writes it, with stop sequences
applied. It runs through ``Engine.complete``, which resumes from the same snapshots as API chats, so
each keystroke's prompt prefills only what changed near its end.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine_mlx.events import FinishReason
from engine_mlx.jobs import StreamEnd
from engine_mlx.server.app import (
    _EventStream,
    _log,
    _Run,
    _sse,
    admit,
    begin,
    check_model,
    collect,
)
from engine_mlx.server.config import ServerConfig
from engine_mlx.server.errors import ApiError, error_body, from_engine_error
from engine_mlx.server.requests import _number, _settings, _stop, _typed
from engine_mlx.server.responses import ReplyAssembler, usage
from engine_mlx.settings import GenerationSettings

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint: an autocomplete is short


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompt: str
    settings: GenerationSettings
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()


def parse_completion_request(body: dict[str, Any], config: ServerConfig) -> CompletionRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: use an id from GET /v1/models.", param="model")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(
            400, "'prompt' must be a non-empty string (one prompt per request).", param="prompt"
        )
    if body.get("n", 1) != 1:
        raise ApiError(400, "Only n=1 is supported.", param="n")
    unsupported = {
        "suffix": ("fill-in-the-middle", body.get("suffix") not in (None, "")),
        "echo": ("echoing the prompt", body.get("echo") not in (None, False)),
        "logprobs": (
            "log-probabilities here (/v1/chat/completions has them)",
            body.get("logprobs") is not None,
        ),
        "best_of": ("best_of above 1", body.get("best_of") not in (None, 1)),
    }
    for name, (what, asked) in unsupported.items():
        if asked:
            raise ApiError(400, f"'{name}': {what} is not supported.", param=name)
    stream = _typed(body, "stream", bool, False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object.", param="stream_options")
    plain = {k: v for k, v in body.items() if k not in ("max_tokens", "max_completion_tokens")}
    max_tokens = _number(body, "max_tokens", 1, 1 << 30, integer=True) or DEFAULT_MAX_TOKENS
    return CompletionRequest(
        model=model,
        prompt=prompt,
        settings=replace(
            _settings({**plain, "enable_thinking": False}, config), max_tokens=max_tokens
        ),
        stream=stream,
        include_usage=bool(options.get("include_usage")) and stream,
        stop=_stop(body.get("stop")),
    )


async def completions(request: Request) -> Response:
    context, rec, started = begin(request)
    try:
        body, model = await admit(request, context)
        req = parse_completion_request(body, context.config)
        check_model(req.model, model)
        run = _Run(
            context,
            req,
            request.receive,
            prefix="cmpl",  # type: ignore[arg-type]
            generate=lambda cancel: context.engine.complete(
                req.prompt, req.settings, cancel=cancel
            ),
        )
        await run.start()
        first = await run.next()
        if isinstance(first, StreamEnd):
            run.close()
            raise from_engine_error(first.error or RuntimeError("the request was cancelled"))
    except ApiError as err:
        context.record(
            replace(
                rec, status=err.status, error=err.message, duration_s=time.perf_counter() - started
            )
        )
        raise
    assembler = ReplyAssembler(stop=req.stop)
    if req.stream:
        return _CompletionStream(run, rec, started, first, assembler)
    stats, finished = await collect(run, assembler, first)
    reason = assembler.finish_reason(finished.reason)
    failed = finished.reason is FinishReason.ERROR
    _log(run, rec, started, stats, "error" if failed else reason, finished.error or "")
    if failed:
        return JSONResponse(
            error_body(500, finished.error or "Generation failed."), status_code=500
        )
    return JSONResponse(
        {
            "id": run.id,
            "object": "text_completion",
            "created": run.created,
            "model": req.model,
            "choices": [_choice(assembler.content, reason)],
            "usage": usage(stats),
        }
    )


def _choice(text: str, reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": reason}


class _CompletionStream(_EventStream):
    """The chat stream's machinery (logging, disconnects), with text_completion chunks."""

    def _chunk(self, text: str, reason: str | None = None) -> bytes:
        run = self.run
        return _sse(
            {
                "id": run.id,
                "object": "text_completion",
                "created": run.created,
                "model": run.chat.model,
                "choices": [_choice(text, reason)],
            }
        )

    async def _chunks(self) -> AsyncIterator[bytes]:
        run, assembler = self.run, self.assembler
        event = self.first
        while True:
            for delta in self._take(event):
                yield self._chunk(delta.get("content", ""))
            if self.ended:
                break
            event = await run.next()
        for delta in assembler.finish():
            yield self._chunk(delta.get("content", ""))
        if self.finished.reason is FinishReason.ERROR:
            yield _sse(error_body(500, self.finished.error or "Generation failed."))
        else:
            yield self._chunk("", assembler.finish_reason(self.finished.reason))
            if run.chat.include_usage:
                yield _sse(
                    {
                        "id": run.id,
                        "object": "text_completion",
                        "created": run.created,
                        "model": run.chat.model,
                        "choices": [],
                        "usage": usage(self.stats),
                    }
                )
        yield b"data: [DONE]\n\n"
