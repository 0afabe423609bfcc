"""The context meter's cheap token estimate, made on the GUI thread without a tokenizer.

Characters over a fixed ratio for text, and a per-attachment cost from what the vision processor makes of
it (one token per 32×32 pixels after the engine's resize; PDF pages as page images; videos as sampled
frames, two per temporal patch). The engine's exact count replaces the estimate as soon as it arrives.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .store import AttachmentKind, StoredAttachment, StoredMessage

CHARS_PER_TOKEN = 3.5
MESSAGE_OVERHEAD = 5  # <|im_start|>role\n … <|im_end|>\n
PIXELS_PER_TOKEN = 32 * 32  # 16-pixel patches, merged 2×2
IMAGE_MAX_SIDE = 1344  # engine_mlx.media.DEFAULT_MAX_SIDE
VIDEO_MAX_SIDE = 768  # engine_mlx.prompt.MediaLimits.video_max_side
PAGE_ASPECT = 1.414  # A4: a page renders 1344 high and 950 wide
TYPICAL_IMAGE = (1024, 768)
TYPICAL_VIDEO = (1280, 720)
TEXT_FILE_BYTES_PER_LINE = 40


@dataclass(frozen=True)
class Sized:
    """An attachment with what the composer knows of it: an image's or video's size, a text file's lines."""

    attachment: StoredAttachment
    width: int = 0
    height: int = 0
    lines: int = 0


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _image_tokens(width: int, height: int, max_side: int) -> int:
    scale = min(1.0, max_side / max(width, height, 1))
    return math.ceil(width * scale * height * scale / PIXELS_PER_TOKEN) + 2  # + vision start/end


def attachment_tokens(item: Sized) -> int:
    att = item.attachment
    if att.kind is AttachmentKind.IMAGE:
        return _image_tokens(
            *((item.width, item.height) if item.width else TYPICAL_IMAGE), IMAGE_MAX_SIDE
        )
    if att.kind is AttachmentKind.PDF:
        last = att.last_page or att.page_count or att.first_page
        pages = max(1, last - att.first_page + 1)
        return pages * _image_tokens(
            round(IMAGE_MAX_SIDE / PAGE_ASPECT), IMAGE_MAX_SIDE, IMAGE_MAX_SIDE
        )
    if att.kind is AttachmentKind.VIDEO:
        end = att.end_s if att.end_s is not None else (att.duration_s or 0.0)
        frames = max(2, math.ceil(max(0.0, end - att.start_s) * att.fps))
        size = (item.width, item.height) if item.width else TYPICAL_VIDEO
        return math.ceil(frames / 2) * (_image_tokens(*size, VIDEO_MAX_SIDE) - 2) + 2
    # fenced block
    return math.ceil(max(1, item.lines) * TEXT_FILE_BYTES_PER_LINE / CHARS_PER_TOKEN) + 8


def message_tokens(message: StoredMessage) -> int:
    """A stored message's estimate (its attachments without their sizes: typical ones)."""
    return (
        MESSAGE_OVERHEAD
        + text_tokens(message.text)
        + sum(attachment_tokens(Sized(a)) for a in message.attachments)
    )


def draft_tokens(text: str, attachments: Iterable[Sized]) -> int:
    """The message being written, as the next user turn (with the answer's opening tag)."""
    return MESSAGE_OVERHEAD + 4 + text_tokens(text) + sum(attachment_tokens(a) for a in attachments)
