"""What a turn's prefill resumes from: a snapshot of the model cache, and the plan of where prefill starts.

Shared by the generation loop, which takes snapshots, and the snapshot store, which keeps them; the
store never imports the loop (an import-linter contract in pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Snapshot:
    """A copy of the model cache after the first ``length`` tokens: prompt tokens, or (the end of a
    turn cut short) the prompt and then ``generated``, with the ``logits`` for the token after them."""

    length: int
    cache: list[Any]
    generated: tuple[int, ...] = ()
    logits: Any = None


@dataclass
class PrefillPlan:
    """Where this turn's prefill starts and where to take a snapshot for the next turn."""

    cache: list[Any]
    start: int  # prompt tokens already in ``cache``
    snapshot_at: int | None = None  # take a snapshot after this many prompt tokens
    # The next-token logits when ``cache`` already holds the whole prompt (a turn carried on from
    # where it was cut): decoding starts from them, nothing is prefilled.
    logits: Any = None
    # Cut short by the token limit or a cancel: snapshot the cache with everything generated, so
    # carrying the turn on needs no prefill.
    keep_end: bool = False
    # The prompt ends inside the reply (a turn carried on): its text goes on from the last tokens.
    continues_reply: bool = False
