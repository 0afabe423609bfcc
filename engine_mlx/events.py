"""Typed events a generation yields, in order: Progress*, (ThinkingDelta | AnswerDelta | TokenLogprob)*, Stats, Finished."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any


class FinishReason(str, Enum):
    STOP = "stop"  # the model ended its turn
    LENGTH = "length"  # max_tokens reached
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class Progress:
    """Prompt processing: ``done`` of ``total`` prompt tokens are in the cache."""

    done: int
    total: int


@dataclass(frozen=True)
class ThinkingDelta:
    text: str


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str  # the token's text (a multi-byte character's part decodes to U+FFFD: see ``bytes``)
    bytes: tuple[int, ...]
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model (before any sampling or processor), with
    the most likely alternatives; yielded before the text the token completes (often in a later
    delta: a character or a tag may span tokens), only when settings ask for it."""

    token_id: int
    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[TopLogprob, ...]
    thinking: bool  # the token belongs to the thinking block


@dataclass(frozen=True)
class Stats:
    prompt_tokens: int
    reused_tokens: int  # prompt tokens restored from a cache snapshot
    prefilled_tokens: int  # prompt tokens actually run through the model this turn
    generated_tokens: int
    thinking_tokens: int
    answer_tokens: int
    prefill_tps: float
    decode_tps: float
    ttft_s: float  # request start to first generated token
    total_s: float
    peak_memory_bytes: int
    drafted_tokens: int = 0  # tokens the MTP head drafted (speculative decoding)
    accepted_tokens: int = 0  # of them, those the model kept


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    error: str | None = None


Event = Progress | ThinkingDelta | AnswerDelta | TokenLogprob | Stats | Finished

_TYPES = {
    Progress: "progress",
    ThinkingDelta: "thinking",
    AnswerDelta: "answer",
    TokenLogprob: "logprob",
    Stats: "stats",
}


def event_to_json(event: Event) -> dict[str, Any]:
    """The CLI's ``--json`` line for an event: its fields plus a ``type``."""
    if isinstance(event, Finished):
        kind = "error" if event.reason is FinishReason.ERROR else "done"
        return {"type": kind, "reason": event.reason.value, "error": event.error}
    return {"type": _TYPES[type(event)], **dataclasses.asdict(event)}
