"""Token ids to streamed text, through the tokenizer's own streaming detokenizer.

Both loaders pick one from ``tokenizer.json``'s decoder (BPE, SPM or the naive fallback): mlx-lm's
``TokenizerWrapper.detokenizer`` hands out a fresh, reset copy of its pick, and mlx-vlm's
``load_processor`` sets ``processor.detokenizer``. Both paths stream through mlx-lm's classes (see
:meth:`Detokenizer.of`), token by token; multi-byte characters split across tokens come out whole;
``finalize()`` flushes what is still held back.

This module is the one place that relies on that contract (``add_token``, ``last_segment``,
``finalize``), pinned by tests/test_streaming_text.py. Two things are done here on top:

* special tokens (``<|im_end|>``, ``<|vision_pad|>``...) are dropped before the detokenizer sees
  them, as ``tokenizer.decode(..., skip_special_tokens=True)`` does: the libraries' BPE detokenizers
  would spell them out. Added tokens that are not special (``<think>``, ``</think>``, ``<tool_call>``)
  stay text, and the stream is flushed right after one, so the thinking splitter sees a tag as soon
  as the model writes it.
* ids the tokenizer has no token for (a padded embedding) are dropped, as ``decode`` drops them.

Known difference from ``decode``: mlx-lm's BPE detokenizer drops one leading space at the very start
of a stream (as ``mlx_lm.generate`` prints it); a reply that is carried on is primed with the tokens
before it (:meth:`TextStream.prime`), so its first space stays.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from engine_mlx.runtime_imports import ensure_runtime_imported


class TextStream:
    """One reply's token ids in, text deltas out."""

    def __init__(
        self, detokenizer: Any, vocab_size: int, skip_ids: frozenset[int], flush_ids: frozenset[int]
    ):
        self._detokenizer = detokenizer
        self._vocab_size = vocab_size
        self._skip_ids = skip_ids
        self._flush_ids = flush_ids

    def add(self, token: int) -> str:
        """The text that ``token`` completes (often "" while a character or word is unfinished)."""
        if token in self._skip_ids or not 0 <= token < self._vocab_size:
            return ""
        self._detokenizer.add_token(token)
        if token in self._flush_ids:
            self._detokenizer.finalize()
        return self._detokenizer.last_segment

    def prime(self, tokens: list[int]) -> None:
        """Start in the middle of a reply (one carried on), after ``tokens``, whose text is already
        out: it is decoded and dropped, so a leading space of what follows is kept, not taken for
        the start of a stream."""
        for token in tokens:
            self.add(token)
        self.finalize()

    def finalize(self) -> str:
        """End of the reply (stop, length, cancel): the text still held back."""
        self._detokenizer.finalize()
        return self._detokenizer.last_segment


@dataclass(frozen=True)
class Detokenizer:
    """A loaded model's streaming detokenizer: built once at load, a fresh :class:`TextStream` per reply."""

    new_detokenizer: Callable[[], Any]
    vocab_size: int  # ids past it (a padded embedding) have no token
    skip_ids: frozenset[int]
    flush_ids: frozenset[int]

    @classmethod
    def of(cls, processor: Any, tokenizer: Any, *, is_vision: bool) -> Detokenizer:
        """mlx-lm's ``TokenizerWrapper.detokenizer`` for text-only checkpoints. For vision ones, mlx-lm's
        detokenizer of the kind mlx-vlm's loader chose (``processor.detokenizer``): mlx-vlm's own BPE
        detokenizer holds text until a token starting with a space, so CJK text, which has none,
        would not stream at all."""
        if is_vision:
            # Built here rather than through a TokenizerWrapper, whose other inferences cost ~1 s
            # on the 248k vocabulary; a fresh stream is a reset copy, as the wrapper makes it.
            template = _mlx_lm_kind(getattr(processor, "detokenizer", None))(tokenizer)

            def new() -> Any:
                detokenizer = copy.copy(template)
                detokenizer.reset()
                return detokenizer
        else:

            def new() -> Any:
                return processor.detokenizer  # mlx-lm's TokenizerWrapper: a fresh, reset copy

        added = getattr(tokenizer, "added_tokens_decoder", {})
        return cls(
            new_detokenizer=new,
            vocab_size=len(tokenizer),
            skip_ids=frozenset(i for i, t in added.items() if t.special),
            flush_ids=frozenset(i for i, t in added.items() if not t.special),
        )

    def stream(self) -> TextStream:
        return TextStream(self.new_detokenizer(), self.vocab_size, self.skip_ids, self.flush_ids)


def _mlx_lm_kind(chosen: Any) -> Callable[[Any], Any]:
    """mlx-lm's streaming detokenizer class of the same kind as mlx-vlm's ``chosen`` one."""
    ensure_runtime_imported()
    from mlx_lm import tokenizer_utils as lm
    from mlx_vlm import tokenizer_utils as vlm

    if isinstance(chosen, vlm.BPEStreamingDetokenizer):
        return lm.BPEStreamingDetokenizer
    if isinstance(chosen, vlm.SPMStreamingDetokenizer):
        return partial(lm.SPMStreamingDetokenizer, trim_space=chosen.trim_space)
    if isinstance(chosen, vlm.NaiveStreamingDetokenizer):
        return lm.NaiveStreamingDetokenizer
    raise ValueError("mlx-vlm built no streaming detokenizer for this tokenizer")


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """A token's own bytes: a byte-level BPE token may hold part of a multi-byte character, which
    ``decode`` would turn into U+FFFD. Other tokenizers' pieces are taken as UTF-8 text."""
    from mlx_lm.tokenizer_utils import _byte_decoder  # the GPT-2 byte table, mlx-lm's one copy

    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(piece, str):
        return b""
    table = _byte_decoder()
    if all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return piece.encode("utf-8")
