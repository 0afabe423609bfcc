"""The engine's typed input as an OpenAI chat-completions body, and the server's streamed chunks back
as the engine's typed events (the inverse of engine_mlx.server.requests / responses).

Attachments travel as the server takes them: images, PDF pages and video frames as base64 ``data:``
URIs (decoded here exactly as the local engine decodes them, so the server sees the same pixels),
text files as fenced blocks in the message text. A chunk is an untrusted HTTP body: every field is
type-checked, and what is not understood is left out, never trusted.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

from engine_mlx.conversation import (
    Conversation,
    Message,
    Role,
    TextAttachment,
)
from engine_mlx.errors import UnsupportedInputError
from engine_mlx.events import AnswerDelta, Event, FinishReason, Stats, ThinkingDelta
from engine_mlx.media import SampledVideo
from engine_mlx.prompt import DecodedMedia, MediaLimits, message_text, template_tools
from engine_mlx.settings import GenerationSettings
from engine_mlx.tool_calls import call_markup

VIDEO_FRAME_JPEG_QUALITY = 90  # frames are many and photographic: JPEG keeps the body small


def _data_uri(image: Any, video_frame: bool) -> str:
    """A PIL image as a data: URI: PNG (lossless, and the same bytes every turn, so the server's
    file and its snapshot match), JPEG for video frames."""
    buffer = io.BytesIO()
    if video_frame:
        image.save(buffer, format="JPEG", quality=VIDEO_FRAME_JPEG_QUALITY)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _media_parts(message: Message, limits: MediaLimits, decoded: DecodedMedia) -> list[dict]:
    from PIL import Image

    parts: list[dict[str, Any]] = []
    for attachment in message.attachments:
        if isinstance(attachment, TextAttachment):
            continue  # in the text (message_text)
        value = decoded.get(attachment, limits)  # MediaError names the file
        if isinstance(value, SampledVideo):
            uris = [_data_uri(Image.fromarray(frame), True) for frame in value.frames]
        else:
            uris = [_data_uri(image, False) for image in value]
        parts += [{"type": "image_url", "image_url": {"url": uri}} for uri in uris]
    return parts


def chat_body(
    model: str,
    conversation: Conversation,
    settings: GenerationSettings,
    *,
    vision: bool,
    limits: MediaLimits = MediaLimits(),
    decoded: DecodedMedia | None = None,
) -> dict[str, Any]:
    """The streamed request for the next turn of ``conversation`` (UnsupportedInputError or
    MediaError for input that cannot go)."""
    decoded = decoded or DecodedMedia()
    if (
        settings.forced is not None
        or settings.response_format is not None
        or settings.tool_call is not None
    ):
        raise UnsupportedInputError(
            "Forced text, JSON answers and forced tool calls run on this Mac's engine only."
        )
    messages = []
    for message in conversation.messages:
        media = any(not isinstance(a, TextAttachment) for a in message.attachments)
        if media and not vision:
            raise UnsupportedInputError(
                "The server's model is text-only: it cannot read images, PDF pages or videos. "
                "Serve a Qwen3.5 checkpoint that includes the vision tower."
            )
        text = message_text(message)
        entry: dict[str, Any] = {"role": message.role.value}
        if media:
            entry["content"] = [
                *_media_parts(message, limits, decoded),
                {"type": "text", "text": text},
            ]
        else:
            entry["content"] = text
        if message.role is Role.ASSISTANT and message.thinking:
            entry["reasoning_content"] = message.thinking
        if message.tool_calls:
            entry["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments or "{}"},
                }
                for c in message.tool_calls
            ]
        messages.append(entry)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "enable_thinking": settings.thinking,
        "max_tokens": settings.max_tokens,
    }
    if settings.thinking and settings.thinking_budget is not None:
        body["thinking_budget"] = settings.thinking_budget
    for name in ("temperature", "top_p", "top_k", "presence_penalty", "seed"):
        value = getattr(settings, name)
        if value is not None:
            body[name] = value
    if conversation.continue_last:
        body["continue_final_message"] = True
    tools = template_tools(conversation)
    if tools:
        body["tools"] = tools
    return body


# ---------------------------------------------------------------------------------- the stream


def _count(data: Any, name: str) -> int:
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def stats_from_usage(usage: Any, ttft_s: float, total_s: float) -> Stats:
    """The server's ``usage`` as the engine's Stats; times are measured here, at the client, so
    they include the network (the server sends none). Peak memory is the server's, and unknown."""
    prompt = _count(usage, "prompt_tokens")
    cached = min(_count(usage.get("prompt_tokens_details"), "cached_tokens"), prompt)
    generated = _count(usage, "completion_tokens")
    details = usage.get("completion_tokens_details")
    thinking = min(_count(details, "reasoning_tokens"), generated)
    accepted = _count(details, "accepted_prediction_tokens")
    rejected = _count(details, "rejected_prediction_tokens")
    decode_s = total_s - ttft_s
    return Stats(
        prompt_tokens=prompt,
        reused_tokens=cached,
        prefilled_tokens=prompt - cached,
        generated_tokens=generated,
        thinking_tokens=thinking,
        answer_tokens=generated - thinking,
        prefill_tps=(prompt - cached) / ttft_s if ttft_s > 0 else 0.0,
        decode_tps=(generated - 1) / decode_s if generated > 1 and decode_s > 0 else 0.0,
        ttft_s=ttft_s,
        total_s=total_s,
        peak_memory_bytes=0,
        drafted_tokens=accepted + rejected,
        accepted_tokens=accepted,
    )


_FINISH = {
    "stop": FinishReason.STOP,
    "tool_calls": FinishReason.STOP,
    "length": FinishReason.LENGTH,
}


@dataclass
class StreamReader:
    """Feed each SSE ``data`` payload; it returns the events it holds. ``usage`` and the finish
    reason are kept for the end (``closing``)."""

    finish: FinishReason | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False  # ``[DONE]`` arrived
    delivered: bool = False  # a thinking or answer delta arrived (the first token's time)
    _calls: dict[int, dict[str, str]] = field(default_factory=dict)

    def feed(self, data: str) -> list[Event]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            self.error = "The server sent a reply QwenDesk cannot read (not JSON)."
            return []
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            self.error = message if isinstance(message, str) and message else "The server failed."
            return []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return []
        choice = choices[0]
        events: list[Event] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            thinking, answer = delta.get("reasoning_content"), delta.get("content")
            if isinstance(thinking, str) and thinking:
                events.append(ThinkingDelta(thinking))
            if isinstance(answer, str) and answer:
                events.append(AnswerDelta(answer))
            self._take_calls(delta.get("tool_calls"))
        if events:
            self.delivered = True
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            self.finish = _FINISH.get(reason, FinishReason.STOP)
        return events

    def _take_calls(self, calls: Any) -> None:
        """Tool calls (the server sends each whole, at the end): kept to be handed on as the model's
        own call markup, which the tool loop reads as it reads a local answer."""
        if not isinstance(calls, list):
            return
        for position, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict):
                continue
            index = call.get("index", position)
            index = index if isinstance(index, int) else position
            entry = self._calls.setdefault(index, {"name": "", "arguments": ""})
            if isinstance(fn.get("name"), str):
                entry["name"] += fn["name"]
            if isinstance(fn.get("arguments"), str):
                entry["arguments"] += fn["arguments"]

    def call_text(self) -> str:
        """The reply's tool calls, written as the model writes them."""
        out = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if call["name"]:
                out.append(call_markup(call["name"], call["arguments"] or "{}"))
        return "\n".join(out)
