"""Split streamed model text into thinking and answer.

Qwen3.5's chat template pre-opens ``<think>\\n`` in the generation prompt when thinking is on, so the
model's output starts *inside* the thinking block and the first tag it writes is ``</think>``.
With thinking off the template closes an empty block itself and everything is answer. Tags may
arrive split across tokens, so a possible partial tag at the end of a chunk is held back until the
next chunk decides it.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


@dataclass(frozen=True)
class Split:
    thinking: str = ""
    answer: str = ""


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkingSplitter:
    """Incremental splitter: ``feed`` text chunks, then ``flush`` at the end of the stream."""

    def __init__(self, starts_in_thinking: bool):
        self.in_thinking = starts_in_thinking
        # With thinking on the template's opener is already in the prompt; a model may still echo a
        # leading "<think>", which is dropped rather than shown as answer text.
        self._may_open = not starts_in_thinking
        self._held = ""
        self._answer_started = False
        self._thinking_started = False

    @property
    def thinking_closed(self) -> bool:
        return not self.in_thinking

    def feed(self, chunk: str) -> Split:
        text = self._held + chunk
        self._held = ""
        thinking: list[str] = []
        answer: list[str] = []
        while text:
            if self.in_thinking:
                idx = text.find(CLOSE_TAG)
                if idx >= 0:
                    thinking.append(text[:idx])
                    text = text[idx + len(CLOSE_TAG) :]
                    self.in_thinking = False
                    continue
                keep = _partial_suffix(text, CLOSE_TAG)
                thinking.append(text[: len(text) - keep])
                self._held = text[len(text) - keep :]
                break
            if self._may_open and not self._answer_started:
                stripped = text.lstrip()
                if stripped.startswith(OPEN_TAG):
                    text = stripped[len(OPEN_TAG) :]
                    self.in_thinking = True
                    self._may_open = False
                    continue
                if not stripped or OPEN_TAG.startswith(stripped):
                    self._held = text  # might still become "<think>"
                    break
            answer.append(text)
            break
        out_thinking = "".join(thinking)
        out_answer = "".join(answer)
        if not self._answer_started and out_answer:
            # The template puts "\n\n" after </think>; don't start the answer with blank lines.
            out_answer = out_answer.lstrip("\n")
            self._answer_started = bool(out_answer)
        if not self._thinking_started and out_thinking:
            out_thinking = out_thinking.lstrip("\n")
            self._thinking_started = bool(out_thinking)
        return Split(out_thinking, out_answer)

    def flush(self) -> Split:
        """End of stream: whatever is held back is plain text of the current part."""
        held, self._held = self._held, ""
        if not held:
            return Split()
        if self.in_thinking:
            return Split(thinking=held if self._thinking_started else held.lstrip("\n"))
        if not self._answer_started:
            held = held.lstrip("\n")
            self._answer_started = bool(held)
        return Split(answer=held)
