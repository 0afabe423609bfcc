"""A loaded checkpoint and the model calls the generation loop needs.

Vision checkpoints run through mlx-vlm's model classes, text-only ones through mlx-lm's; both are
wrapped so the loop sees one interface: turn a prompt into :class:`PromptInputs`, run a range of
prompt tokens into a cache, run one decode step.

For vision models the engine computes positions (Qwen's 3-axis MRoPE) for the whole prompt itself
and passes them explicitly on every call, and builds input embeddings per prefill chunk from the
token embeddings plus the vision features of only those media whose tokens fall in the chunk. This
keeps each call independent of mlx-vlm's hidden per-model position state, so a prefill can resume
from any cache snapshot and media before the resume point are never re-encoded.

Every mlx-vlm and mlx-lm member used here is named, with the release it was read from, in
tests/test_upstream_contract.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import mlx.core as mx
import numpy as np

from engine_mlx import platform
from engine_mlx.cancel import CancelToken
from engine_mlx.checkpoint import ModelInfo
from engine_mlx.detokenize import Detokenizer, TextStream
from engine_mlx.errors import CheckpointError, EngineError
from engine_mlx.mtp_head import MtpHead, MtpMode
from engine_mlx.prompt import LoadedMedia
from engine_mlx.prompt_size import max_token_bytes
from engine_mlx.runtime_imports import ensure_runtime_imported
from engine_mlx.speculative import Speculation


@dataclass
class _MediaRows:
    """Vision inputs of one kind (images or videos) for the whole prompt, encoded lazily per item."""

    token_id: int
    pixels: Any = None  # mx.array of patches, items concatenated
    grid_thw: Any = None  # mx.array (n_items, 3)
    row_starts: list[int] = field(default_factory=list)  # patch-row offset of each item
    feature_starts: list[int] = field(default_factory=list)  # feature-row offset of each item
    features: dict[int, Any] = field(default_factory=dict)  # item index -> encoded features

    @property
    def count(self) -> int:
        return 0 if self.grid_thw is None else int(self.grid_thw.shape[0])


@dataclass
class PromptInputs:
    """A tokenized prompt: ids, and for vision models positions and the media to encode on demand."""

    ids: list[int]
    positions: Any = None  # mx.array (3, 1, T) for vision models
    rope_delta: int = 0  # decode position = token index + rope_delta
    images: _MediaRows | None = None
    videos: _MediaRows | None = None
    _pad_cumsum: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def extended(self, more: list[int]) -> PromptInputs:
        """These inputs followed by text tokens ``more`` (a turn's own generated tokens), placed as
        decoding placed them: at position index + rope_delta on every MRoPE axis."""
        ids = self.ids + list(more)
        positions = self.positions
        if positions is not None and more:
            n = len(self.ids)
            tail = mx.arange(n, n + len(more)).astype(positions.dtype) + self.rope_delta
            positions = mx.concatenate(
                [positions, mx.broadcast_to(tail[None, None], (3, 1, len(more)))], axis=2
            )
        out = PromptInputs(ids, positions, self.rope_delta, self.images, self.videos)
        arr = np.asarray(ids)
        for token_id in self._pad_cumsum:
            out._pad_cumsum[token_id] = np.concatenate([[0], np.cumsum(arr == token_id)])
        return out

    def reuse_ids(self) -> list[int]:
        """The ids with each image or video marked by a digest of its pixels: what snapshots key on.

        Two images of the same size give the same run of pad tokens; replacing an earlier image must
        not resume from a state that saw the old one, so the first pad token of every item becomes a
        negative number (no real token id) derived from its pixels.
        """
        ids = list(self.ids)
        arr = None
        for rows in (self.images, self.videos):
            if rows is None or not rows.count:
                continue
            if arr is None:
                arr = np.asarray(self.ids)
            where = np.nonzero(arr == rows.token_id)[0]
            for item in range(rows.count):
                first = rows.feature_starts[item]
                if first >= len(where):
                    break
                pixels = np.asarray(rows.pixels[rows.row_starts[item] : rows.row_starts[item + 1]])
                h = hashlib.blake2b(pixels.tobytes(), digest_size=7)
                h.update(np.asarray(rows.grid_thw[item]).tobytes())
                ids[int(where[first])] = -1 - int.from_bytes(h.digest(), "big")
        return ids

    def media_token_ids(self) -> set[int]:
        return {rows.token_id for rows in (self.images, self.videos) if rows and rows.count}

    def media_token_ranges(self) -> list[tuple[int, int]]:
        """Token ranges [start, end) of every run of image/video pad tokens (restore points avoid them)."""
        pad_ids = self.media_token_ids()
        ranges: list[tuple[int, int]] = []
        start = None
        for i, tok in enumerate(self.ids + [-1]):
            if tok in pad_ids and start is None:
                start = i
            elif tok not in pad_ids and start is not None:
                ranges.append((start, i))
                start = None
        return ranges


class LoadedModel:
    """A checkpoint in memory: model, processor/tokenizer, and the calls the generation loop uses."""

    def __init__(self, info: ModelInfo, model: Any, processor: Any, *, is_vision: bool):
        self.info = info
        self.model = model
        self.processor = processor
        self.is_vision = is_vision
        self.tokenizer = processor.tokenizer if is_vision else processor
        self.speculation: Speculation | None = None  # the MTP head, when one is used (use_head)
        self.eos_ids = self._eos_ids()
        self.max_token_bytes = max_token_bytes(self.tokenizer)  # for prompt_size's floor
        try:
            self.detokenizer = Detokenizer.of(processor, self.tokenizer, is_vision=is_vision)
        except ValueError as e:
            raise CheckpointError(info.path, f"could not be loaded ({e})") from e

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        info: ModelInfo,
        *,
        progress: Callable[[float], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> LoadedModel:
        """Load lazily, then read the weights in slices so progress can be shown and cancelled.

        The folder is checked again first (the load boundary trusts no earlier check, and the folder
        may have changed since): nothing in it is imported and nothing outside it is read, and
        broken weights are refused with the tensor and file named, before either loader runs.
        """
        from engine_mlx.checkpoint import inspect_checkpoint

        ensure_runtime_imported()  # before the check: it imports them too
        inspect_checkpoint(info.path)
        path = str(info.path)
        processor: Any  # mlx-vlm's processor, or mlx-lm's tokenizer wrapper
        try:
            if info.is_vision:
                # mlx_vlm.load installs its own torch-free Qwen processor; never trust_remote_code.
                from mlx_vlm import load as vlm_load

                model, processor = vlm_load(path, lazy=True, trust_remote_code=False)
            else:
                from mlx_lm import load as lm_load

                model, processor = lm_load(path, lazy=True, trust_remote_code=False)[:2]
            if platform.cpu_backend():
                _float32_on_cpu(model)
            _materialize(model, progress, cancel)
        except EngineError:
            raise
        except (ValueError, RuntimeError, OSError, KeyError) as e:
            raise CheckpointError(
                info.path,
                f"could not be loaded ({type(e).__name__}: {e}); the files may be damaged",
            ) from e
        return cls(info, model, processor, is_vision=info.is_vision)

    def use_head(self, head: MtpHead | None, mode: MtpMode) -> None:
        """Decode speculatively with ``head`` (None or mode off: plain decoding)."""
        from engine_mlx.speculative import load_drafter

        self.speculation = None
        if head is None or mode is MtpMode.OFF:
            return
        drafter = load_drafter(self.model, head, float32=platform.cpu_backend())
        self.speculation = Speculation(self.model, self.is_vision, drafter, mode, head)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        config_eos = getattr(getattr(self.model, "config", None), "eos_token_id", None)
        if config_eos is None and hasattr(self.model, "args"):
            config_eos = getattr(self.model.args, "eos_token_id", None)
        if isinstance(config_eos, int):
            ids.add(config_eos)
        elif config_eos:
            ids.update(int(i) for i in config_eos)
        for name in ("<|im_end|>", "<|endoftext|>"):
            tok_id = self.tokenizer.convert_tokens_to_ids(name)
            if (
                isinstance(tok_id, int)
                and tok_id >= 0
                and tok_id != getattr(self.tokenizer, "unk_token_id", None)
            ):
                ids.add(tok_id)
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    # ------------------------------------------------------------------ prompts

    @property
    def vision_model(self) -> Any:
        """mlx-vlm's model whose config, MRoPE index and vision tower ``prepare`` and the media
        features use: the whole model in one process (a split one keeps its own on rank 0)."""
        return self.model

    def apply_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        if self.is_vision:
            return self.processor.apply_chat_template(messages, **kwargs)
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    @property
    def think_close_id(self) -> int | None:
        """The ``</think>`` token's id (one added token in Qwen3.5's vocabulary)."""
        ids = self.encode("</think>")
        return ids[0] if len(ids) == 1 else None

    def text_stream(self) -> TextStream:
        """A fresh streaming detokenizer for one reply."""
        return self.detokenizer.stream()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prepare(self, prompt: str, loaded: LoadedMedia) -> PromptInputs:
        if not self.is_vision:
            return PromptInputs(ids=self.encode(prompt))
        kwargs: dict[str, Any] = {}
        if loaded.images:
            kwargs["images"] = loaded.images
        if loaded.videos:
            kwargs["videos"] = [np.stack(v.frames) for v in loaded.videos]
            kwargs["fps"] = [v.source_fps for v in loaded.videos]
            kwargs["video_metadata"] = [
                {
                    "frames_indices": [round(t * v.source_fps) for t in v.timestamps_s],
                    "fps": v.source_fps,
                }
                for v in loaded.videos
            ]
        batch = self.processor(text=[prompt], padding=False, **kwargs)
        ids_mx = batch["input_ids"]
        config = self.vision_model.config
        images = self._rows(
            config.image_token_id, batch.get("pixel_values"), batch.get("image_grid_thw")
        )
        videos = self._rows(
            config.video_token_id, batch.get("pixel_values_videos"), batch.get("video_grid_thw")
        )
        positions, deltas = self.vision_model.language_model.get_rope_index(
            ids_mx,
            images.grid_thw if images.count else None,
            videos.grid_thw if videos.count else None,
            None,
        )
        if positions.ndim == 2:  # text-only prompt: the three MRoPE axes coincide
            positions = mx.broadcast_to(positions[None], (3, *positions.shape))
        ids = [int(t) for t in np.array(ids_mx)[0]]
        inputs = PromptInputs(
            ids=ids,
            positions=positions,
            rope_delta=int(np.array(deltas).reshape(-1)[0]),
            images=images,
            videos=videos,
        )
        arr = np.asarray(ids)
        for rows in (images, videos):
            inputs._pad_cumsum[rows.token_id] = np.concatenate(
                [[0], np.cumsum(arr == rows.token_id)]
            )
        return inputs

    def _rows(self, token_id: int, pixels: Any, grid_thw: Any) -> _MediaRows:
        rows = _MediaRows(token_id=token_id)
        if grid_thw is None or pixels is None:
            return rows
        merge = self.vision_model.config.vision_config.spatial_merge_size**2
        sizes = [int(t * h * w) for t, h, w in np.array(grid_thw).tolist()]
        rows.pixels, rows.grid_thw = pixels, grid_thw
        rows.row_starts = [0, *np.cumsum(sizes).tolist()]
        rows.feature_starts = [0, *np.cumsum([s // merge for s in sizes]).tolist()]
        return rows

    # ------------------------------------------------------------------ model calls

    def check_usable(self) -> None:
        """Raise an EngineError when the model can no longer run (a model split over machines that
        lost one); a model in this process always can."""

    def make_cache(self) -> list[Any]:
        if self.is_vision:
            return self.model.language_model.make_cache()
        from mlx_lm.models.cache import make_prompt_cache

        return make_prompt_cache(self.model)

    def run_prompt(self, inputs: PromptInputs, start: int, end: int, cache: list[Any]) -> mx.array:
        """Run prompt tokens [start, end) into ``cache``; returns the (lazy) logits of the last one."""
        ids = mx.array(inputs.ids[start:end])[None]
        if not self.is_vision:
            return self.model(ids, cache=cache)[:, -1, :]
        lm = self.model.language_model
        embeds = self.with_media(lm.model.embed_tokens(ids), inputs, start, end)
        out = lm(
            ids, inputs_embeds=embeds, cache=cache, position_ids=inputs.positions[:, :, start:end]
        )
        return out.logits[:, -1, :]

    def step(self, token: mx.array, index: int, inputs: PromptInputs, cache: list[Any]) -> mx.array:
        """One decode step for ``token`` (mx.array, shape (1,)) at sequence position ``index``."""
        ids = token.reshape(1, 1)
        if not self.is_vision:
            return self.model(ids, cache=cache)[:, -1, :]
        pos = mx.full((3, 1, 1), index + inputs.rope_delta, dtype=mx.int32)
        return self.model.language_model(ids, cache=cache, position_ids=pos).logits[:, -1, :]

    def with_media(self, embeds: mx.array, inputs: PromptInputs, start: int, end: int) -> mx.array:
        """The token embeddings ``embeds`` of prompt tokens [start, end), each image or video pad
        token's replaced by its vision features."""
        for rows in (inputs.images, inputs.videos):
            if rows is not None and rows.count:
                embeds = self._merge_features(embeds, inputs, rows, start, end)
        return embeds

    def _merge_features(
        self, embeds: mx.array, inputs: PromptInputs, rows: _MediaRows, start: int, end: int
    ) -> mx.array:
        cumsum = inputs._pad_cumsum[rows.token_id]
        first, last = int(cumsum[start]), int(cumsum[end])  # feature rows needed by this chunk
        if first == last:
            return embeds
        pieces = []
        for item in range(rows.count):
            lo, hi = rows.feature_starts[item], rows.feature_starts[item + 1]
            if hi <= first or lo >= last:
                continue
            feats = self._features(rows, item)
            pieces.append(feats[max(first, lo) - lo : min(last, hi) - lo])
        features = mx.concatenate(pieces, axis=0).astype(embeds.dtype)
        positions = mx.array(np.nonzero(np.asarray(inputs.ids[start:end]) == rows.token_id)[0])
        flat = embeds[0]
        flat[positions] = features
        return flat[None]

    def _features(self, rows: _MediaRows, item: int) -> mx.array:
        """Vision-tower features of one image or video, encoded once per prompt and only if needed."""
        if item not in rows.features:
            tower = self.vision_model.vision_tower
            pixels = rows.pixels[rows.row_starts[item] : rows.row_starts[item + 1]]
            pixels = pixels.astype(tower.patch_embed.proj.weight.dtype)
            hidden, _ = tower(pixels, rows.grid_thw[item : item + 1])
            mx.eval(hidden)
            rows.features[item] = hidden
        return rows.features[item]


_SLICE_BYTES = 256 << 20


def _float32_on_cpu(model: Any) -> None:
    """Cast a lazily loaded model's bfloat16/float16 parameters to float32, on MLX's CPU backend only.

    Checkpoints as released (and their MLX conversions) hold bfloat16 weights and quantization
    scales. MLX's CPU backend cannot run unquantized MoE experts in anything but float32
    (``GatherMM``), and its bfloat16 matmuls are several times slower than float32 ones. Metal
    runs bfloat16 natively, so Macs keep the checkpoint's dtype.
    """
    from mlx.utils import tree_map

    def to_float32(p: Any) -> Any:
        if isinstance(p, mx.array) and p.dtype in (mx.bfloat16, mx.float16):
            return p.astype(mx.float32)
        return p

    model.update(tree_map(to_float32, model.parameters()))


def _materialize(
    model: Any, progress: Callable[[float], None] | None, cancel: CancelToken | None
) -> None:
    """Evaluate a lazily loaded model's parameters slice by slice, reporting the fraction read."""
    from mlx.utils import tree_flatten

    params = [v for _, v in cast("list[tuple[str, Any]]", tree_flatten(model.parameters()))]
    total = sum(p.nbytes for p in params) or 1
    done = 0
    batch: list[Any] = []
    batch_bytes = 0
    for p in params:
        batch.append(p)
        batch_bytes += p.nbytes
        if batch_bytes >= _SLICE_BYTES or p is params[-1]:
            if cancel is not None and cancel.cancelled:
                raise EngineError("Loading was cancelled.")
            mx.eval(batch)
            done += batch_bytes
            batch, batch_bytes = [], 0
            if progress is not None:
                progress(done / total)
