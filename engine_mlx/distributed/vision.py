"""Images across ranks: rank 0's vision tower, and the MRoPE positions mlx-lm's split text model cannot take.

mlx-lm's ``qwen3_5`` text model (the one ``sharded_load`` splits) rotates queries and keys by their
cache offset, on one axis. Qwen3.5 places an image's tokens on three (time, height, width) and the
text after it ``rope_delta`` further on, as mlx-vlm's model does in one process. :class:`MRopeShard`
swaps the ``rope`` of each full-attention layer of this rank's shard for mlx-vlm's own MRoPE, fed the
positions of the call in progress, so every rank places each token where one process does.
:func:`load_vision_side` gives rank 0 mlx-vlm's model for its processor, position index and vision
tower, reading the vision tower's weights only (``sharded_load`` holds this rank's language layers).

This is the one module that reaches into those mlx-lm and mlx-vlm internals; every member it uses is
named in tests/test_upstream_contract.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx


class MRopeShard:
    """This rank's shard of a vision checkpoint's language model, called with explicit MRoPE
    positions (``(3, 1, tokens)``, as ``LoadedModel.prepare`` computes them)."""

    def __init__(self, model: Any):
        from mlx_vlm.models.qwen3_5.language import Qwen3_5RotaryEmbedding

        self.model = model
        self._positions: mx.array | None = None  # the positions of the call in progress
        args = model.language_model.args
        params = args.rope_parameters
        rotary = None
        for layer in model.layers:  # this rank's layers: a run of them (pipeline) or all (tensor)
            if layer.is_linear:
                continue
            attn = layer.self_attn
            if rotary is None:  # as mlx-vlm's Qwen3_5Attention builds it (one serves every layer)
                rotary = Qwen3_5RotaryEmbedding(
                    int(attn.head_dim * params["partial_rotary_factor"]),
                    max_position_embeddings=args.max_position_embeddings,
                    base=params["rope_theta"],
                    mrope_section=params["mrope_section"],
                )
            attn.rope = _PositionedRope(self, rotary)

    def embed(self, ids: mx.array) -> mx.array:
        """The token embeddings of ``ids`` (``(1, tokens)``): every rank holds the table."""
        return self.model.model.embed_tokens(ids)

    def __call__(
        self,
        ids: mx.array,
        cache: list[Any],
        positions: mx.array,
        embeddings: mx.array | None = None,
    ) -> mx.array:
        """The logits of ``ids`` (or of ``embeddings``, a prompt chunk's with its media features)."""
        self._positions = positions
        try:
            return self.model(ids, cache=cache, input_embeddings=embeddings)
        finally:
            self._positions = None

    def positions(self) -> mx.array:
        if self._positions is None:
            raise TypeError(
                "a vision checkpoint's shard runs with MRoPE positions: call MRopeShard"
            )
        return self._positions


class _PositionedRope:
    """Stands in for an attention layer's ``rope(x, offset=)``: rotates ``x`` (queries or keys) by the
    shard's current positions, ignoring the cache offset. A plain object, so no parameter of the
    model changes."""

    def __init__(self, shard: MRopeShard, rotary: Any):
        self.shard = shard
        self.rotary = rotary

    def __call__(self, x: mx.array, offset: Any = 0) -> mx.array:
        # mlx-vlm rotates queries and keys in one call, each on its own: rotating x as both is
        # the same arithmetic for x.
        return self.rotary.apply_rotary(x, x, self.shard.positions(), unsqueeze_dim=1)[0]


@dataclass(frozen=True)
class VisionSide:
    """What rank 0 holds beside its shard for a vision checkpoint."""

    model: Any  # mlx-vlm's model: its config, MRoPE index and (read) vision tower
    processor: Any  # mlx-vlm's processor: the chat template, tokenizer and image preprocessing


def load_vision_side(path: Path, *, float32: bool) -> VisionSide:
    """mlx-vlm's model and processor for the checkpoint at ``path``, with only the vision tower's
    weights read (``float32``: cast to float32 first, as one process does on MLX's CPU backend).

    The language model's weights stay lazy and unread: rank 0 uses the model for its config, its
    MRoPE index (``language_model.get_rope_index``) and its vision tower only."""
    from mlx_vlm import load as vlm_load

    from engine_mlx.runtime import _float32_on_cpu

    model, processor = vlm_load(str(path), lazy=True, trust_remote_code=False)
    tower = model.vision_tower
    if float32:
        _float32_on_cpu(tower)
    mx.eval(tower.parameters())
    return VisionSide(model, processor)
