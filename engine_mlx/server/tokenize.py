"""``POST /tokenize``: a prompt's tokens, in vLLM's shape, for clients that show how full the context is.

The body is a chat request's (``model``, ``messages`` and the chat options: tools, thinking,
``continue_final_message``) or a raw prompt's (``model``, ``prompt``), and the reply is
``{"count", "max_model_len", "tokens"}``: the ids ``/v1/chat/completions`` (or ``/v1/completions``)
would start from, images as their runs of image tokens. Like a chat it passes the key, Host and Origin
checks and the body's limits, a prompt whose text alone cannot fit the context is refused unread, and
the tokenizing runs on the engine's job thread, in turn with generations. Images are kept as a chat's
are, so the chat that follows the count finds them (and their decoded pixels) already there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine_mlx.server.app import admit, begin, check_model
from engine_mlx.server.config import ServerConfig
from engine_mlx.server.errors import ApiError, from_engine_error
from engine_mlx.server.media import ImageBatch
from engine_mlx.server.requests import ChatRequest, _typed, parse_chat_request
from engine_mlx.settings import GenerationSettings


@dataclass(frozen=True)
class TokenizeRequest:
    model: str
    chat: ChatRequest | None  # a chat's prompt, or
    prompt: str | None  # a raw prompt (no chat template)


def parse_tokenize_request(
    body: dict[str, Any], images: ImageBatch, config: ServerConfig = ServerConfig()
) -> TokenizeRequest:
    """vLLM's TokenizeChatRequest or TokenizeCompletionRequest, typed (a 400 names the field)."""
    has_messages, has_prompt = body.get("messages") is not None, body.get("prompt") is not None
    if has_messages == has_prompt:
        raise ApiError(
            400,
            "Send either 'messages' (a chat, counted as /v1/chat/completions renders it) or "
            "'prompt' (raw text), not both or neither.",
            param="messages",
        )
    _typed(body, "add_special_tokens", bool, False)  # Qwen3.5's tokenizer adds none either way
    if _typed(body, "return_token_strs", bool, False):
        raise ApiError(
            400,
            "'return_token_strs' is not supported; leave it out (the token ids are returned).",
            param="return_token_strs",
        )
    if not has_messages:
        model, prompt = body.get("model"), body.get("prompt")
        if not isinstance(model, str) or not model:
            raise ApiError(
                400, "'model' is required: use an id from GET /v1/models.", param="model"
            )
        if not isinstance(prompt, str):
            raise ApiError(400, "'prompt' must be a string.", param="prompt")
        return TokenizeRequest(model, None, prompt)
    continuing = _typed(body, "continue_final_message", bool, False)
    if not continuing and not _typed(body, "add_generation_prompt", bool, True):
        raise ApiError(
            400,
            "'add_generation_prompt': false is not supported: the count is of the prompt a chat "
            "request starts from, which ends with the generation prompt; leave it out.",
            param="add_generation_prompt",
        )
    chat = parse_chat_request(body, images, config)
    return TokenizeRequest(chat.model, chat, None)


async def tokenize(request: Request) -> Response:
    context, rec, started = begin(request)
    images = context.media.batch()
    try:
        body, model = await admit(request, context)
        req = parse_tokenize_request(body, images, context.config)
        check_model(req.model, model)
        engine, chat = context.engine, req.chat
        settings = (
            chat.settings
            if chat is not None
            else GenerationSettings(context_limit=context.config.context_tokens)
        )
        if chat is not None:  # before it is queued, as a chat (off the event loop)
            await asyncio.to_thread(engine.check_prompt_size, chat.conversation, chat.settings)

        def count() -> list[int]:
            if chat is not None:
                return engine.prompt_ids(chat.conversation, chat.settings)
            return engine.text_ids(req.prompt or "")

        ids = await asyncio.wrap_future(context.jobs.submit(count))
    except Exception as exc:  # noqa: BLE001 - each as its status (an unexpected one as a 500)
        images.refuse()
        err = from_engine_error(exc)
        context.record(
            replace(
                rec, status=err.status, error=err.message, duration_s=time.perf_counter() - started
            )
        )
        raise err from None
    except BaseException:
        images.refuse()
        raise
    images.done()
    context.record(replace(rec, prompt_tokens=len(ids), duration_s=time.perf_counter() - started))
    return JSONResponse(
        {"count": len(ids), "max_model_len": engine.context_limit(settings), "tokens": ids}
    )
