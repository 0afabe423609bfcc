"""Every mlx-vlm and mlx-lm member the engine relies on, by name, pinned to the version it was read from.

``engine_mlx/runtime.py`` drives mlx-vlm's model and processor internals directly (explicit MRoPE
positions, per-item vision features), and ``cache_protocol.py``, ``detokenize.py``,
``generation.py``, ``weight_check.py``, ``speculative.py``, ``distributed/sharded.py`` and
``distributed/vision.py`` (MRoPE positions for mlx-lm's split text model) use a few more members of
both libraries. Each row below
names one member, the engine code that uses it and the upstream release it was read from (the wheels
carry no commit id, so the pinned version is the reference); the tests check that it exists with the
parameters the engine passes, at that version. A library upgrade that breaks one fails here by name.
The greedy oracles check the behaviour: the engine's tokens for a prompt with a video equal
``mlx_vlm.stream_generate``'s (tests/test_engine.py has the image one).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from media_files import write_image, write_video

from engine_mlx.conversation import Conversation, Message, Role, VideoAttachment
from engine_mlx.events import Finished, Stats, ThinkingDelta
from engine_mlx.settings import GenerationSettings

ROOT = Path(__file__).resolve().parents[1]
# The releases every row was read from: pyproject.toml pins exactly these (checked below).
MLX_VLM = "mlx-vlm 0.7.10"
MLX_LM = "mlx-lm 0.32.2"


@dataclass(frozen=True)
class Member:
    """``module:attribute.path``; the parameters the engine passes by name (``**`` = it passes some
    through ``**kwargs``); a text the member's source must hold (what it does with such a keyword)."""

    path: str
    used_by: str
    upstream: str
    params: tuple[str, ...] = ()
    source_has: str = ""


VLM_QWEN = "mlx_vlm.models.qwen3_5_moe"
MEMBERS = [
    # ---- runtime.py, vision checkpoints (mlx-vlm)
    Member(
        "mlx_vlm:load",
        "LoadedModel.load: load(path, lazy=True, trust_remote_code=False)",
        MLX_VLM,
        ("path_or_hf_repo", "lazy", "**"),
    ),
    # With any keyword, the image processor's config is read without trust_remote_code=True.
    Member(
        "mlx_vlm.utils:load_image_processor",
        "LoadedModel.load (through load)",
        MLX_VLM,
        ("model_path", "**"),
        "if not kwargs:",
    ),
    Member(
        f"{VLM_QWEN}.language:LanguageModel.get_rope_index",
        "LoadedModel.prepare: MRoPE positions",
        MLX_VLM,
        ("input_ids", "image_grid_thw", "video_grid_thw", "attention_mask"),
    ),
    Member(
        f"{VLM_QWEN}.language:LanguageModel.__call__",
        "LoadedModel.run_prompt/step: explicit positions",
        MLX_VLM,
        ("inputs", "inputs_embeds", "cache", "**"),
        'kwargs.pop("position_ids", None)',
    ),
    Member(f"{VLM_QWEN}.language:LanguageModel.make_cache", "LoadedModel.make_cache", MLX_VLM),
    Member(
        f"{VLM_QWEN}.vision:VisionModel.__call__",
        "LoadedModel._features: tower(pixels, grid_thw)",
        MLX_VLM,
        ("hidden_states", "grid_thw"),
    ),
    Member(
        f"{VLM_QWEN}.config:ModelConfig",
        "LoadedModel.prepare/_eos_ids: config fields",
        MLX_VLM,
        ("image_token_id", "video_token_id", "vision_config", "eos_token_id"),
    ),
    Member(
        f"{VLM_QWEN}.config:VisionConfig",
        "LoadedModel._rows: spatial_merge_size",
        MLX_VLM,
        ("spatial_merge_size",),
    ),
    Member(
        "mlx_vlm.models.qwen3_vl.processing_qwen3_vl:Qwen3VLProcessor.__call__",
        "LoadedModel.prepare: processor(text=, images=, videos=, fps=, video_metadata=, padding=)",
        MLX_VLM,
        ("text", "images", "videos", "fps", "video_metadata", "**"),
    ),
    Member(
        "mlx_vlm.models.qwen3_vl.processing_qwen3_vl:Qwen3VLProcessor.apply_chat_template",
        "LoadedModel.apply_template",
        MLX_VLM,
    ),
    # ---- runtime.py, text-only checkpoints (mlx-lm)
    Member(
        "mlx_lm:load",
        "LoadedModel.load: load(path, lazy=True, trust_remote_code=False)",
        MLX_LM,
        ("path_or_hf_repo", "lazy", "trust_remote_code"),
    ),
    Member("mlx_lm.models.cache:make_prompt_cache", "LoadedModel.make_cache", MLX_LM, ("model",)),
    Member(
        "mlx_lm.models.qwen3_5_moe:Model.__call__",
        "LoadedModel.run_prompt/step: model(ids, cache=)",
        MLX_LM,
        ("inputs", "cache"),
    ),
    # ---- cache_protocol.py: where cache classes live, and how an entry is rebuilt
    Member(
        "mlx_vlm.models.cache:KVCache.from_state",
        "cache_protocol._rebuild: from_state(state, meta_state)",
        MLX_VLM,
        ("state", "meta_state"),
    ),
    Member(
        "mlx_vlm.models.cache:ArraysCache.from_state",
        "cache_protocol._rebuild",
        MLX_VLM,
        ("state", "meta_state"),
    ),
    Member(
        "mlx_vlm.models.cache:KVCache.meta_state",
        "cache_protocol: scalars saved beside the arrays",
        MLX_VLM,
    ),
    Member("mlx_vlm.models.cache:KVCache.trim", "cache_protocol.trim_cache", MLX_VLM, ("n",)),
    Member(
        "mlx_lm.models.cache:KVCache.from_state",
        "cache_protocol._rebuild: from_state(state)",
        MLX_LM,
        ("state",),
    ),
    Member(
        "mlx_lm.models.cache:ArraysCache.from_state", "cache_protocol._rebuild", MLX_LM, ("state",)
    ),
    Member("mlx_lm.models.cache:KVCache.trim", "cache_protocol.trim_cache", MLX_LM, ("n",)),
    # ---- generation.py, detokenize.py, weight_check.py
    Member(
        "mlx_lm.sample_utils:make_sampler",
        "generation: make_sampler(temp=, top_p=, top_k=)",
        MLX_LM,
        ("temp", "top_p", "top_k"),
    ),
    Member("mlx_vlm.tokenizer_utils:BPEStreamingDetokenizer", "detokenize._mlx_lm_kind", MLX_VLM),
    Member(
        "mlx_vlm.tokenizer_utils:SPMStreamingDetokenizer",
        "detokenize._mlx_lm_kind: .trim_space",
        MLX_VLM,
        ("tokenizer", "trim_space"),
    ),
    Member("mlx_vlm.tokenizer_utils:NaiveStreamingDetokenizer", "detokenize._mlx_lm_kind", MLX_VLM),
    Member(
        "mlx_lm.tokenizer_utils:BPEStreamingDetokenizer",
        "detokenize: the vision stream",
        MLX_LM,
        ("tokenizer",),
    ),
    Member(
        "mlx_lm.tokenizer_utils:SPMStreamingDetokenizer",
        "detokenize: the vision stream",
        MLX_LM,
        ("tokenizer", "trim_space"),
    ),
    Member(
        "mlx_lm.tokenizer_utils:NaiveStreamingDetokenizer",
        "detokenize: the vision stream",
        MLX_LM,
        ("tokenizer",),
    ),
    Member(
        "mlx_lm.tokenizer_utils:TokenizerWrapper.detokenizer",
        "detokenize: the text-only stream",
        MLX_LM,
    ),
    Member(
        "mlx_vlm.utils:load_model",
        "weight_check: load_model(folder, lazy=True)",
        MLX_VLM,
        ("model_path", "lazy"),
    ),
    Member(
        "mlx_lm.utils:load_model",
        "weight_check: load_model(folder, lazy=True, strict=True)",
        MLX_LM,
        ("model_path", "lazy", "strict"),
    ),
    # ---- speculative.py, vision checkpoints: a round verified by mlx-vlm's exact speculative verifier,
    # whose caches record the state after every token fed, then a prefix kept without a re-run
    Member(
        f"{VLM_QWEN}.language:LanguageModel.__call__",
        "TargetForward.verify: lm(ids, cache=, position_ids=, speculative_verify=True, return_hidden=True)",
        MLX_VLM,
        ("inputs", "cache", "**"),
        'speculative_verify = bool(kwargs.pop("speculative_verify", False))',
    ),
    Member(
        "mlx_vlm.models.qwen3_5.speculative_verifier:Qwen3_5BatchInvariantForward.verify",
        "TargetForward.verify: the output's gdn_states is the round's cache transaction",
        MLX_VLM,
        ("language_model", "inputs", "cache", "**"),
        "output.gdn_states = transaction",
    ),
    Member(
        "mlx_vlm.models.qwen3_5.gated_delta:gated_delta_update",
        "the verifier's recurrence: the cache records the state after each token",
        MLX_VLM,
        ("cache",),
        "cache.update_recurrent(",
    ),
    Member(
        "mlx_vlm.models.cache:ArraysCache.start_speculation",
        "the verifier's transaction over the recurrent caches",
        MLX_VLM,
        ("length",),
    ),
    Member(
        "mlx_vlm.models.cache:ArraysCache.commit_speculation",
        "commit_speculative_round: keep a prefix",
        MLX_VLM,
        ("lengths", "generation"),
    ),
    Member(
        "mlx_vlm.speculative.cache_state:commit_speculative_round",
        "TargetForward.commit: commit_speculative_round(lm, cache, transaction, kept - 1, fed)",
        MLX_VLM,
        ("model", "caches", "state", "accepted", "block_size"),
        "state.commit([value + 1 for value in values])",
    ),
    Member(
        "mlx_vlm.speculative.cache_state:abort_speculative_round",
        "TargetForward.abort: an error inside a round",
        MLX_VLM,
        ("state",),
    ),
    # ---- speculative.py, text-only checkpoints: a round run layer by layer as the model's own forward
    # runs them (each Gated-DeltaNet layer's input recorded), and a refused draft's recurrence re-run
    Member(
        "mlx_lm.models.qwen3_5:Qwen3_5TextModel.__call__",
        "TargetForward.record: embed_tokens, the two masks, layer(h, mask=, cache=) per layer, norm",
        MLX_LM,
        ("inputs", "cache"),
        "hidden_states = layer(hidden_states, mask=mask, cache=c)",
    ),
    Member(
        "mlx_lm.models.qwen3_5:TextModel.__call__",
        "TargetForward.logits: language_model(ids, cache=), a paused plain step",
        MLX_LM,
        ("inputs", "cache"),
    ),
    Member(
        "mlx_lm.models.base:create_attention_mask", "TargetForward.record", MLX_LM, ("h", "cache")
    ),
    Member("mlx_lm.models.base:create_ssm_mask", "TargetForward.record", MLX_LM, ("h", "cache")),
    Member(
        "mlx_lm.models.qwen3_5:DecoderLayer.__call__",
        "TargetForward.keep_recorded: linear_attn(input_layernorm(x), mask, cache) is the layer's recurrence",
        MLX_LM,
        ("x", "mask", "cache"),
        "r = self.linear_attn(self.input_layernorm(x), mask, cache)",
    ),
    Member(
        "mlx_lm.models.qwen3_5:GatedDeltaNet.__call__",
        "TargetForward.keep_recorded: the conv and recurrent state written to the cache",
        MLX_LM,
        ("inputs", "mask", "cache"),
        "cache[1] = state",
    ),
    # ---- distributed/sharded.py: one model over several ranks
    Member(
        "mlx_lm.utils:sharded_load",
        "sharded.load_shard: sharded_load(path, pipeline, tensor, tokenizer_config={trust_remote_code: False})",
        MLX_LM,
        ("repo", "pipeline_group", "tensor_group", "tokenizer_config"),
        source_has="tokenizer_config or {",
    ),
    Member(
        "mlx_lm.models.qwen3_5:Model.shard",
        "sharded_load with a tensor group (qwen3_5_moe's too)",
        MLX_LM,
        ("group",),
    ),
    Member(
        "mlx_lm.models.pipeline:PipelineMixin.pipeline",
        "sharded_load with a pipeline group",
        MLX_LM,
        ("group",),
    ),
    # Every rank ends a forward pass with a gather of the hidden states: the followers evaluate the
    # whole output, or rank 0 would wait for them in that gather.
    Member(
        "mlx_lm.models.qwen3_5:Qwen3_5TextModel.__call__",
        "sharded.follow",
        MLX_LM,
        ("inputs", "cache"),
        source_has="mx.distributed.all_gather(hidden_states)",
    ),
    Member(
        "mlx_lm.models.cache:make_prompt_cache",
        "ShardedModel.make_cache and follow: this rank's layers",
        MLX_LM,
        ("model",),
    ),
    # ---- distributed/vision.py: images across ranks
    Member(
        "mlx_lm.models.qwen3_5:Model.__call__",
        "MRopeShard: model(ids, cache=, input_embeddings=) with a chunk's media features",
        MLX_LM,
        ("inputs", "cache", "input_embeddings"),
    ),
    Member("mlx_lm.models.qwen3_5:Model.layers", "MRopeShard: this rank's layers", MLX_LM),
    Member("mlx_lm.models.qwen3_5:Model.model", "MRopeShard.embed: model.embed_tokens", MLX_LM),
    # The attention rotates queries and keys each by one call of its ``rope``: MRopeShard's stands in.
    Member(
        "mlx_lm.models.qwen3_next:Qwen3NextAttention.__call__",
        "MRopeShard: layer.self_attn.rope(x, offset=)",
        MLX_LM,
        ("x", "mask", "cache"),
        source_has="queries = self.rope(queries, offset=cache.offset)",
    ),
    Member(
        "mlx_vlm.models.qwen3_5.language:Qwen3_5RotaryEmbedding",
        "MRopeShard: the MRoPE of mlx-vlm's Qwen3_5Attention",
        MLX_VLM,
        ("dim", "max_position_embeddings", "base", "mrope_section"),
    ),
    Member(
        "mlx_vlm.models.qwen3_5.language:Qwen3_5Attention.__init__",
        "MRopeShard builds the rotary as this does",
        MLX_VLM,
        ("args",),
        source_has='int(self.head_dim * args.rope_parameters["partial_rotary_factor"])',
    ),
    Member(
        "mlx_vlm.models.rope_utils:MRoPERotaryEmbedding.apply_rotary",
        "MRopeShard: apply_rotary(x, x, positions, unsqueeze_dim=1)",
        MLX_VLM,
        ("q", "k", "position_ids", "unsqueeze_dim"),
    ),
]


def _resolve(path: str) -> Any:
    module, _, attributes = path.partition(":")
    value: Any = importlib.import_module(module)
    for name in attributes.split("."):
        value = inspect.getattr_static(value, name)
    return value.__func__ if isinstance(value, classmethod | staticmethod) else value


def test_the_named_releases_are_the_pinned_and_installed_ones():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for release in (MLX_VLM, MLX_LM):
        name, version = release.split()
        assert f"{name}=={version}" in deps, (
            f"pyproject.toml pins another {name}: re-read every {name} row"
        )
        assert importlib.metadata.version(name) == version


@pytest.mark.parametrize("member", MEMBERS, ids=[m.path for m in MEMBERS])
def test_each_member_the_engine_uses_exists_with_its_parameters(member: Member):
    value = _resolve(member.path)
    if isinstance(value, property):
        assert not member.params
        return
    assert callable(value), f"{member.path} ({member.upstream}) is not callable"
    params = inspect.signature(value).parameters
    for name in member.params:
        if name == "**":
            assert any(p.kind is p.VAR_KEYWORD for p in params.values()), (
                f"{member.path} takes no **kwargs"
            )
        else:
            assert name in params, f"{member.path} ({member.upstream}) has no parameter {name!r}"
    if member.source_has:
        assert member.source_has in inspect.getsource(value), (
            f"{member.path}: {member.source_has!r}"
        )


def test_the_loaded_vision_model_has_what_runtime_reads(engine, tmp_path):
    """The attributes runtime.py reads on the objects mlx-vlm's loader returns for Qwen3.5, and the
    keys of the processor's output for an image and for a video."""
    from mlx_vlm.models.qwen3_5_moe.language import LanguageModel
    from mlx_vlm.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from PIL import Image

    loaded = engine._loaded
    model = loaded.model
    assert isinstance(model.language_model, LanguageModel) and isinstance(
        loaded.processor, Qwen3VLProcessor
    )
    assert callable(model.language_model.model.embed_tokens)
    assert model.vision_tower.patch_embed.proj.weight.dtype is not None
    assert loaded.processor.tokenizer is loaded.tokenizer
    frames = np.zeros((4, 64, 64, 3), np.uint8)
    batch = loaded.processor(
        text=[
            "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|video_pad|><|vision_end|>"
        ],
        images=[Image.open(write_image(tmp_path / "a.png", size=(64, 64)))],
        videos=[frames],
        fps=[2.0],
        video_metadata=[{"frames_indices": [0, 1, 2, 3], "fps": 2.0}],
        padding=False,
    )
    for key in (
        "input_ids",
        "pixel_values",
        "image_grid_thw",
        "pixel_values_videos",
        "video_grid_thw",
    ):
        assert key in batch, key


def test_speculative_verify_keeps_a_prefix_as_plain_steps_leave_it(engine):
    """mlx-vlm's exact verifier over three tokens, then a commit of two, leaves the vision model's
    cache (attention and Gated-DeltaNet state) as two plain decode steps leave it; an abort leaves it
    as it was."""
    import mlx.core as mx

    from engine_mlx.speculative import TargetForward

    loaded = engine._loaded
    forward = TargetForward(loaded.model, True)
    ids = mx.array([11, 12, 13], dtype=mx.int32)
    stepped = loaded.make_cache()
    for i in range(2):
        _, plain_logits = forward(ids[i : i + 1], i, 0, stepped)
    verified = loaded.make_cache()
    _, logits, transaction = forward.verify(ids, 0, 0, verified)
    forward.commit(verified, transaction, 2, 3)
    # equal up to the rounding of a multi-row product in the model's bfloat16 weights
    close = {"rtol": 2e-2, "atol": 2e-3}
    np.testing.assert_allclose(
        np.array(logits[0, 1].astype(mx.float32)),
        np.array(plain_logits[0, -1].astype(mx.float32)),
        **close,
    )
    for plain, spec in zip(stepped, verified, strict=True):
        if plain.is_trimmable():
            assert spec.offset == plain.offset == 2
        for a, b in zip(plain.state, spec.state, strict=True):
            a, b = (x[..., : plain.offset, :] if plain.is_trimmable() else x for x in (a, b))
            assert a.shape == b.shape
            np.testing.assert_allclose(
                np.array(b.astype(mx.float32)), np.array(a.astype(mx.float32)), **close
            )
    before = [list(c.state) for c in verified]
    _, _, transaction = forward.verify(ids[2:], 2, 0, verified)
    forward.abort(transaction)
    for entry, state in zip(verified, before, strict=True):
        if entry.is_trimmable():
            assert entry.offset == 2
        else:
            assert all(a is b for a, b in zip(entry.state, state, strict=True))


def test_a_recorded_text_round_keeps_a_prefix_as_plain_steps_leave_it(tiny_text_model_dir):
    """A text-only (mlx-lm) round run layer by layer gives the model's own hidden states and logits;
    keeping two of its three tokens (attention trimmed, the recurrence re-run over the recorded
    inputs) leaves the cache, and the next step's logits, as two plain steps leave them."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from engine_mlx.engine import Engine
    from engine_mlx.speculative import TargetForward, _mark

    eng = Engine()
    eng.load(tiny_text_model_dir)
    loaded = eng._loaded
    forward = TargetForward(loaded.model, False)
    ids = mx.array([11, 12, 13], dtype=mx.int32)
    whole = loaded.make_cache()
    hidden, logits = forward(ids, 0, 0, whole)
    recorded = loaded.make_cache()
    r_hidden, r_logits, inputs = forward.record(ids, recorded)
    assert np.array_equal(np.array(r_hidden), np.array(hidden))
    assert np.array_equal(np.array(r_logits), np.array(logits))
    assert [h is not None for h in inputs] == [not c.is_trimmable() for c in recorded]

    stepped = loaded.make_cache()
    for i in range(2):
        forward(ids[i : i + 1], i, 0, stepped)
    kept = loaded.make_cache()
    mark = _mark(kept)
    forward.record(ids, kept)
    forward.keep_recorded(kept, mark, inputs, 2)
    close = {"rtol": 1e-4, "atol": 1e-5}
    for plain, spec in zip(stepped, kept, strict=True):
        if plain.is_trimmable():
            assert spec.offset == plain.offset == 2
        for (_, a), (_, b) in zip(tree_flatten(plain.state), tree_flatten(spec.state), strict=True):
            if not isinstance(a, mx.array):  # e.g. a recurrent cache's lengths: none here
                assert a == b
                continue
            a, b = (x[..., : plain.offset, :] if plain.is_trimmable() else x for x in (a, b))
            np.testing.assert_allclose(np.array(b), np.array(a), **close)
    _, after_plain = forward(ids[2:], 2, 0, stepped)
    _, after_kept = forward(ids[2:], 2, 0, kept)
    np.testing.assert_allclose(np.array(after_kept), np.array(after_plain), **close)


def test_the_loaded_text_model_has_what_runtime_reads(tiny_text_model_dir):
    from mlx_lm.models.qwen3_5_moe import Model
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from engine_mlx.engine import Engine

    eng = Engine()
    eng.load(tiny_text_model_dir)
    loaded = eng._loaded
    assert isinstance(loaded.model, Model) and isinstance(loaded.processor, TokenizerWrapper)
    # runtime reads model.args.eos_token_id where a model has it (this one does not): the stop ids
    # then come from the tokenizer.
    assert loaded.model.args is not None
    assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in loaded.eos_ids


def test_engine_matches_mlx_vlm_greedy_output_with_a_video(engine, tmp_path):
    """Own prefill/decode loop (explicit MRoPE positions, per-item vision features) == mlx-vlm's
    ``stream_generate`` for a prompt with a real video, given the same sampled frames."""
    from mlx_vlm import stream_generate

    from engine_mlx.prompt import MediaLimits, load_media, render_text

    video = write_video(tmp_path / "clip.avi", seconds=2.0)
    convo = Conversation(
        (Message(Role.USER, "Describe the clip.", (VideoAttachment(video, fps=2.0),)),)
    )
    settings = GenerationSettings(
        thinking=True, prefill_chunk=16, temperature=0.0, presence_penalty=0.0, max_tokens=16
    )
    events = list(engine.generate(convo, settings))
    assert isinstance(events[-1], Finished) and isinstance(events[-2], Stats)
    ours, stats = "".join(e.text for e in events if isinstance(e, ThinkingDelta)), events[-2]

    loaded = engine._loaded
    prompt = render_text(convo, loaded.apply_template, thinking=True, text_only=False)
    clip = load_media(convo.attachments, MediaLimits()).videos[0]
    # mlx-vlm spreads its own frames evenly over the file; the engine samples at the asked rate, so
    # both get the engine's frames, described as the engine describes them to the processor.
    metadata = {
        "frames_indices": [round(t * clip.source_fps) for t in clip.timestamps_s],
        "fps": clip.source_fps,
        "total_num_frames": round(clip.duration_s * clip.source_fps),
    }
    results = list(
        stream_generate(
            loaded.model,
            loaded.processor,
            prompt,
            video=[np.stack(clip.frames)],
            fps=[clip.source_fps],
            video_metadata=[metadata],
            max_tokens=16,
            temperature=0.0,
        )
    )
    ids = [r.token for r in results]
    raw = loaded.tokenizer.decode(ids[: stats.generated_tokens], skip_special_tokens=True)
    # the streaming detokenizer (mlx-lm's) trims the reply's first space
    raw = raw.removeprefix(" ")
    # the video's tokens, as mlx-vlm counts them
    assert stats.prompt_tokens == results[-1].prompt_tokens > 60
    assert stats.generated_tokens == 16
    assert ours.replace("\ufffd", "") == raw.replace("\ufffd", "")


def test_a_split_text_model_with_mrope_positions_decodes_as_mlx_vlm_does(engine, tiny_model_dir):
    """distributed/vision.py's contract: mlx-lm's text model of a vision checkpoint, its attention's
    rope swapped for MRoPE (MRopeShard), fed one process's embeddings and positions for a prompt with
    an image, gives mlx-vlm's logits (to float rounding: the two libraries' linear-attention kernels
    differ) and greedy tokens; its rope is what the attention calls."""
    import mlx.core as mx
    from mlx_lm.utils import load_model
    from PIL import Image

    from engine_mlx import platform
    from engine_mlx.distributed.vision import MRopeShard
    from engine_mlx.prompt import LoadedMedia
    from engine_mlx.runtime import _float32_on_cpu

    loaded = engine._loaded
    model, _ = load_model(Path(tiny_model_dir), lazy=True, strict=False)
    if platform.cpu_backend():
        _float32_on_cpu(model)
    shard = MRopeShard(model)
    image = Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype("uint8"))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
    prompt = loaded.apply_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = loaded.prepare(prompt, LoadedMedia(images=[image]))
    assert inputs.rope_delta != 0  # the image's tokens take fewer positions than tokens

    def greedy(cache, prefill, step) -> tuple[mx.array, list[int]]:
        """The prompt's last logits, and eight greedy tokens."""
        first = logits = prefill(cache)
        tokens = []
        for i in range(8):
            token = mx.argmax(logits, axis=-1)
            tokens.append(int(token.item()))
            logits = step(token, len(inputs) + i, cache)
        return first, tokens

    ids = mx.array(inputs.ids)[None]
    embeds = loaded.with_media(shard.embed(ids), inputs, 0, len(inputs))
    ours = greedy(
        model.make_cache(),
        lambda cache: shard(ids, cache, inputs.positions, embeds)[:, -1, :],
        lambda token, index, cache: shard(
            token.reshape(1, 1), cache, mx.full((3, 1, 1), index + inputs.rope_delta, mx.int32)
        )[:, -1, :],
    )
    theirs = greedy(
        loaded.make_cache(),
        lambda cache: loaded.run_prompt(inputs, 0, len(inputs), cache),
        lambda token, index, cache: loaded.step(token, index, inputs, cache),
    )
    assert ours[1] == theirs[1]
    if platform.cpu_backend():  # float32 (Metal's bfloat16 rounds the two kernels apart more)
        # One axis of positions (mlx-lm's own rope) is off by about 2e-2 here.
        assert mx.allclose(ours[0], theirs[0], atol=1e-5).item()
    # Called without positions (not through the shard), the attention asks for them.
    with pytest.raises(TypeError, match="MRoPE positions"):
        model(ids, cache=model.make_cache())
