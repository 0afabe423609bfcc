"""Render a typed conversation with the checkpoint's own chat template, and load its media.

Every image, PDF page and video of the whole conversation is rendered into the prompt on every turn:
the template places one vision block per item and the processor needs exactly one input per block
(mlx-vlm otherwise degrades silently or raises a feature/token mismatch).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_mlx import media
from engine_mlx.conversation import (
    Attachment,
    Conversation,
    ImageAttachment,
    Message,
    PdfAttachment,
    Role,
    TextAttachment,
    VideoAttachment,
)
from engine_mlx.errors import UnsupportedInputError
from engine_mlx.text_files import fenced_block, load_text


@dataclass
class LoadedMedia:
    """Decoded media in prompt order: images (PDF pages included) and videos."""

    images: list[Any] = field(default_factory=list)  # PIL images
    videos: list[media.SampledVideo] = field(default_factory=list)


@dataclass(frozen=True)
class MediaLimits:
    image_max_side: int = media.DEFAULT_MAX_SIDE
    video_max_side: int = 768


def template_messages(conversation: Conversation, *, text_only: bool) -> list[dict[str, Any]]:
    """Chat-template messages: attachments become ``image``/``video`` parts before the text.

    Assistant reasoning goes in ``reasoning_content`` so that the template, not the engine, decides
    whether the model sees it (Qwen3.5's drops it from turns before the latest user message).
    """
    out: list[dict[str, Any]] = []
    for message in conversation.messages:
        if text_only:
            if any(not isinstance(a, TextAttachment) for a in message.attachments):
                raise UnsupportedInputError(
                    "This model is text-only: it cannot read images, PDF pages or videos. "
                    "Load a Qwen3.5 checkpoint that includes the vision tower."
                )
            entry: dict[str, Any] = {"role": message.role.value, "content": message_text(message)}
        else:
            entry = {"role": message.role.value, "content": _content_parts(message)}
        if message.role is Role.ASSISTANT and message.thinking:
            entry["reasoning_content"] = message.thinking
        if message.tool_calls:
            entry["tool_calls"] = [
                {
                    "type": "function",
                    "id": c.id,
                    "function": {"name": c.name, "arguments": json.loads(c.arguments or "{}")},
                }
                for c in message.tool_calls
            ]
        out.append(entry)
    return out


def template_tools(conversation: Conversation) -> list[dict[str, Any]] | None:
    """The conversation's tools as the chat template's ``tools`` (OpenAI's function-tool shape)."""
    if not conversation.tools:
        return None
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": json.loads(t.parameters),
            },
        }
        for t in conversation.tools
    ]


def message_text(message: Message) -> str:
    """The message's text, after a fenced block per attached text file (read now, capped in size)."""
    blocks = [
        fenced_block(a.display_name, load_text(a.path))
        for a in message.attachments
        if isinstance(a, TextAttachment)
    ]
    return "\n\n".join([*blocks, message.text]) if blocks else message.text


def _content_parts(message: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for attachment in message.attachments:
        if isinstance(attachment, TextAttachment):
            continue
        if isinstance(attachment, VideoAttachment):
            parts.append({"type": "video"})
        elif isinstance(attachment, PdfAttachment):
            pages = _pdf_page_numbers(attachment)
            parts.extend({"type": "image"} for _ in pages)
        else:
            parts.append({"type": "image"})
    parts.append({"type": "text", "text": message_text(message)})
    return parts


def _pdf_page_numbers(attachment: PdfAttachment) -> range:
    last = attachment.last_page or media.pdf_page_count(attachment.path)
    return range(attachment.first_page, last + 1)


def render_text(
    conversation: Conversation,
    apply_template: Callable[..., str],
    *,
    thinking: bool,
    text_only: bool,
) -> str:
    """The prompt string: the checkpoint's template, generation prompt added, thinking passed explicitly.

    mlx-vlm's ``apply_chat_template`` defaults ``enable_thinking`` to False, so it is always given.
    A conversation that continues its last turn renders the turns before it and then that turn's
    text, as the model wrote it after the generation prompt.
    """
    unfinished = conversation.unfinished
    if unfinished is not None:
        conversation = before_unfinished(conversation)
    prompt = apply_template(
        template_messages(conversation, text_only=text_only),
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=thinking,
        tools=template_tools(conversation),
    )
    return prompt + (written_so_far(unfinished, thinking) if unfinished is not None else "")


def before_unfinished(conversation: Conversation) -> Conversation:
    """The conversation without the turn it continues."""
    return Conversation(conversation.messages[:-1], conversation.id, conversation.tools)


def written_so_far(unfinished: Message, thinking: bool) -> str:
    """What the model had written of ``unfinished`` after the generation prompt (which, with thinking
    on, already opens ``<think>\n``; with it off, holds an empty think block)."""
    if not thinking:
        return unfinished.text
    if not unfinished.text:
        return unfinished.thinking
    return f"{unfinished.thinking}\n</think>\n\n{unfinished.text}"


def continues_in_thinking(conversation: Conversation, thinking: bool) -> tuple[bool, bool]:
    """``(template_thinking, resumes_in_thinking)`` for a generation with ``thinking`` asked for: a
    continued turn that already thought is rendered with thinking on, and resumes inside its thinking
    until it has answer text."""
    unfinished = conversation.unfinished
    if unfinished is None:
        return thinking, thinking
    template_thinking = thinking or bool(unfinished.thinking)
    return template_thinking, template_thinking and not unfinished.text


class DecodedMedia:
    """Decoded attachments kept between turns, so a follow-up doesn't decode images, render PDF pages
    or seek through a video again. Keyed by the attachment (path, pages, sampling), the limits and
    the file's size and modification time; least recently used first out, by bytes."""

    def __init__(self, budget_bytes: int = 1 << 30):
        self.budget_bytes = budget_bytes
        self.hits = self.misses = 0
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()

    def get(self, attachment: Attachment, limits: MediaLimits) -> Any:
        stat = Path(attachment.path).stat() if Path(attachment.path).is_file() else None
        key = (attachment, limits, stat and (stat.st_size, stat.st_mtime_ns))
        if stat is not None and key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key][0]
        self.misses += 1
        value = _decode(attachment, limits)  # raises MediaError naming the file
        if stat is not None:
            self._items[key] = (value, _nbytes(value))
            while (
                sum(n for _, n in self._items.values()) > self.budget_bytes and len(self._items) > 1
            ):
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()


def _nbytes(value: Any) -> int:
    if isinstance(value, media.SampledVideo):
        return sum(frame.nbytes for frame in value.frames)
    return sum(img.width * img.height * len(img.getbands()) for img in value)


def _decode(attachment: Attachment, limits: MediaLimits) -> Any:
    """A list of images (an image, PDF pages) or a SampledVideo."""
    if isinstance(attachment, ImageAttachment):
        return [media.load_image(attachment.path, max_side=limits.image_max_side)]
    if isinstance(attachment, PdfAttachment):
        return media.load_pdf_pages(
            attachment.path,
            first_page=attachment.first_page,
            last_page=attachment.last_page,
            max_side=limits.image_max_side,
        )
    if isinstance(attachment, VideoAttachment):
        return media.sample_video(
            attachment.path,
            fps=attachment.fps,
            start_s=attachment.start_s,
            end_s=attachment.end_s,
            max_side=limits.video_max_side,
        )
    raise TypeError(
        f"{attachment.path} is a text attachment: it goes into the prompt, not the media"
    )


def load_media(
    attachments: tuple[Attachment, ...], limits: MediaLimits, cache: DecodedMedia | None = None
) -> LoadedMedia:
    """Decode every attachment in order; raises MediaError naming the file that failed."""
    loaded = LoadedMedia()
    for attachment in attachments:
        if isinstance(attachment, TextAttachment):
            continue  # part of the prompt's text
        value = cache.get(attachment, limits) if cache is not None else _decode(attachment, limits)
        if isinstance(value, media.SampledVideo):
            loaded.videos.append(value)
        else:
            loaded.images.extend(value)
    return loaded
