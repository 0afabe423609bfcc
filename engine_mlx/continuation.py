"""Turns cut short (token limit, Stop), remembered so that carrying one on resumes it exactly.

Re-encoding a turn's text does not always give back the tokens the model wrote (a model may pick a
tokenization the tokenizer would not), and a cache with recurrent state cannot go back a token. So
the engine keeps, for the newest cut turn of each conversation, the prompt it answered, the tokens it
generated and the text it streamed. A Continue whose turn reads exactly that text resumes from those
very tokens: from the end-of-turn snapshot without any prefill, or, once that snapshot is gone,
by prefilling the same tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MAX_CUT_TURNS = 8


@dataclass(frozen=True)
class CutTurn:
    prompt_ids: tuple[int, ...]  # the prompt the turn answered (the engine's reuse ids)
    generated: tuple[int, ...]  # every token of the turn so far, in order
    thinking: str  # the thinking and answer text streamed for them
    answer: str
    template_thinking: bool  # the prompt was rendered with thinking on


class CutTurns:
    """The newest cut turn per conversation key, for the few most recent conversations."""

    def __init__(self, limit: int = MAX_CUT_TURNS):
        self.limit = limit
        self._turns: OrderedDict[str, CutTurn] = OrderedDict()

    def remember(self, key: str, turn: CutTurn) -> None:
        self._turns[key] = turn
        self._turns.move_to_end(key)
        while len(self._turns) > self.limit:
            self._turns.popitem(last=False)

    def forget(self, key: str) -> None:
        self._turns.pop(key, None)

    def clear(self) -> None:
        self._turns.clear()

    def matching_text(self, thinking: str, answer: str, template_thinking: bool) -> list[CutTurn]:
        """Turns that streamed exactly this text (the caller then checks their prompt)."""
        return [
            t
            for t in reversed(self._turns.values())
            if (t.thinking, t.answer, t.template_thinking) == (thinking, answer, template_thinking)
        ]
