"""A short summary of a chat to carry into a new one: a plain extract of its turns, not written by the model.

An extract, because the chat it summarizes is the one that no longer fits the model's context: asking the
model to summarize it would itself overflow, and an extract is instant and works with any model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .store import StoredMessage

MAX_SUMMARY_CHARS = 1500
_USER_CHARS = 200
_ANSWER_CHARS = 300


def clip(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary before ``limit`` characters (with "…" when cut)."""
    line = re.sub(r"\s+", " ", text).strip()
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,.;:") + "…"


def turns(messages: Sequence[StoredMessage]) -> list[list[StoredMessage]]:
    """The chat as turns: a user message and the answers after it (a leading answer is a turn alone)."""
    out: list[list[StoredMessage]] = []
    for message in messages:
        if message.role == "user" or not out:
            out.append([message])
        else:
            out[-1].append(message)
    return out


def _turn_lines(turn: list[StoredMessage]) -> str:
    lines = []
    for message in turn:
        text = message.text
        if message.attachments:
            text = f"[attached: {', '.join(a.name for a in message.attachments)}] {text}"
        if message.role == "user":
            lines.append(f"- You: {clip(text, _USER_CHARS)}")
        elif message.text.strip():
            lines.append(f"  Qwen: {clip(text, _ANSWER_CHARS)}")
    return "\n".join(lines)


def extract_summary(
    title: str, messages: Sequence[StoredMessage], max_chars: int = MAX_SUMMARY_CHARS
) -> str:
    """The chat's turns, each user message and the start of its answer, under a heading; when they are
    longer than ``max_chars`` the newest turns are kept (an omission line says how many were left out)."""
    heading = (
        f"Summary of the earlier chat “{title}” (an extract of its messages made by QwenDesk, "
        "not by the model):"
    )
    kept: list[str] = []
    used = len(heading) + 32  # and room for the line that says how many turns were left out
    all_turns = [t for t in (_turn_lines(turn) for turn in turns(messages)) if t]
    for block in reversed(all_turns):
        if kept and used + len(block) + 1 > max_chars:
            break
        kept.append(block)
        used += len(block) + 1
    left_out = len(all_turns) - len(kept)
    lines = [heading]
    if left_out:
        lines.append(f"- ({left_out} earlier turn{'s' if left_out != 1 else ''} left out)")
    lines.extend(reversed(kept))
    return "\n".join(lines)
