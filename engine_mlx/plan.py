"""A turn planned before it runs: what to prefill from where, and which snapshots to take.

``Engine.generate`` plans a turn (``TurnPlan``: the prompt, where it resumes from, where to take
snapshots, any cut turn it carries on) and then runs it; the generation loop gets the part it needs
(``PrefillPlan``). Both are plain data: planning decides, running does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine_mlx.continuation import CutTurn
from engine_mlx.settings import GenerationSettings
from engine_mlx.snapshots import Restored


@dataclass
class PrefillPlan:
    """Where this turn's prefill starts and where to take snapshots for the next turns."""

    cache: list[Any]
    start: int  # prompt tokens already in ``cache``
    # take a snapshot after each of these numbers of prompt tokens
    snapshot_at: tuple[int, ...] = ()
    # The next-token logits when ``cache`` already holds the whole prompt (a turn carried on from
    # where it was cut): decoding starts from them, nothing is prefilled.
    logits: Any = None
    # Cut short by the token limit or a cancel: snapshot the cache with everything generated, so
    # carrying the turn on needs no prefill.
    keep_end: bool = False
    # Finished normally: snapshot the end too (the reply's tokens included). A turn with tools keeps
    # it, so the tool loop's next step, whose prompt is this one plus the reply and the tool results,
    # prefills only the results.
    keep_reply: bool = False
    # The prompt ends inside the reply (a turn carried on): its text goes on from the last tokens.
    continues_reply: bool = False


@dataclass(frozen=True)
class TurnPlan:
    """One turn of a conversation, decided: run it with ``Engine._run_turn``."""

    prompt: str  # the rendered prompt text
    inputs: Any  # runtime.PromptInputs of ``prompt`` (a carried-on turn: its very tokens)
    settings: GenerationSettings  # fitted to the context, thinking as the turn resumes
    # where this assistant turn starts in ``inputs`` (== len(inputs) unless carried on)
    turn_start: int
    # ``inputs``' ids with media marked by their pixels: the snapshots' key
    reuse_ids: tuple[int, ...]
    key: str  # the conversation the turn's snapshots are kept under ("" keeps none)
    restored: Restored | None  # the snapshot the turn resumes from (a fresh copy), if any
    snapshot_at: tuple[int, ...]  # prompt lengths to take snapshots at, past the restored one
    earlier: CutTurn  # the cut turn it carries on (empty when it is a new turn)
    template_thinking: bool  # the thinking mode the template rendered the prompt with
    continues_reply: bool  # the prompt ends inside the reply (Continue)
    keep_reply: bool = False  # also snapshot the end of a finished reply (a turn with tools)

    def prefill(self, make_cache: Callable[[], list[Any]]) -> PrefillPlan:
        """The generation loop's part: ``make_cache`` gives a fresh cache when nothing is restored."""
        restored = self.restored
        return PrefillPlan(
            cache=restored.cache if restored else make_cache(),
            start=restored.length if restored else 0,
            snapshot_at=self.snapshot_at,
            logits=restored.logits if restored else None,
            keep_end=bool(self.key),
            keep_reply=bool(self.key) and self.keep_reply,
            continues_reply=self.continues_reply,
        )
