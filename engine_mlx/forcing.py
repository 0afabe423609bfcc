"""Forced text: a logits processor that makes the model write given tokens, through the real sampler.

Tests (and tool-call or grounding checks) need a reply the tiny random model would never write.
Rather than a stand-in engine, the text is tokenized with the real tokenizer and forced one token at
a time by masking every other token, so the reply still goes through the model's cache, the
detokenizer, the thinking splitter and the server's parsers. The same processor forces the opening
of a tool call (``tool_choice``) once the thinking block has closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ForcedText:
    """Make the model write ``text``; then end the turn (``end_turn``) or let the model go on.

    With ``after_thinking`` the text starts once the thinking block has closed (the model's own
    ``</think>`` or the one the thinking budget writes), and the tokens of the close that follow
    ``</think>`` count as the text's start when they match it; in a turn without thinking it starts
    at once, without its leading blank lines (the template's, already in the prompt)."""

    text: str
    end_turn: bool = True
    after_thinking: bool = False


class ForcedTokens:
    """mlx-lm logits-processor shape: ``(tokens generated this turn, logprobs) -> logprobs``.

    Before its start it leaves the logits alone; then it allows only the next forced token, until
    all are written. With a ``trigger`` token it starts after the first one it sees (reading the
    tokens, so it waits for each step: only requests that force after thinking pay for that)."""

    def __init__(self, ids: list[int], trigger: int | None = None):
        self.ids = list(ids)
        self.trigger = trigger
        self._seen = 0  # tokens checked for the trigger so far
        self._start: int | None = None if trigger is not None else 0

    @property
    def speculation_safe(self) -> bool:
        """Whether its answer depends only on the tokens given (once started: it then reads only
        their count), so speculative decoding may ask it about drafts."""
        return self._start is not None

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        n = int(tokens.shape[0])
        if self._start is None:
            new = tokens[self._seen :].tolist() if n > self._seen else []
            if self.trigger in new:
                self._start = self._seen + new.index(self.trigger) + 1
            self._seen = n
            if self._start is None:
                return logits
        k = n - self._start
        if not 0 <= k < len(self.ids):
            return logits
        allowed = mx.arange(logits.shape[-1]) == self.ids[k]
        return mx.where(allowed, logits, mx.array(-float("inf"), dtype=logits.dtype))


def forced_tokens(
    forced: ForcedText,
    encode: Callable[[str], list[int]],
    end_id: int,
    think_close_id: int | None,
    thinking: bool,
) -> ForcedTokens:
    """The processor for ``forced``: its text's token ids (``encode``, the real tokenizer) and, to end
    the turn, ``end_id``; started after ``think_close_id`` when it waits for a thinking block that
    this turn opens."""
    trigger = think_close_id if forced.after_thinking and thinking else None
    text = forced.text
    if forced.after_thinking and trigger is None:
        # no thinking this turn: the prompt already ends with the blank line
        text = text.lstrip("\n")
    ids = encode(text) + ([end_id] if forced.end_turn else [])
    return ForcedTokens(ids, trigger)
