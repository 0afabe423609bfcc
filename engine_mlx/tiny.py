"""A tiny random-weight Qwen3.5 checkpoint of the real architecture, for tests, benchmarks and demos.

It is a ``qwen3_5_moe`` vision checkpoint laid out exactly like an mlx-vlm conversion of the real
model: Gated-DeltaNet and full-attention layers (three to one), a few routed experts plus a shared
expert, a small vision tower, a byte-level BPE tokenizer with Qwen's special tokens, a Qwen3.5-style
chat template and preprocessor configs, quantized to 4 bits with mlx-vlm's own quantizer. It loads
through the same ``mlx_vlm.load`` path as a real checkpoint. Its output is gibberish; its token
counts, shapes, cache behaviour and timings are real.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Qwen's special tokens, in Qwen3.5's order; the vision ids in config.json point into this list.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Added but not "special": they survive decoding with skip_special_tokens, as in Qwen's tokenizer.
TEXT_CONTROL_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")

# Qwen2/3 pre-tokenizer split pattern.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A picture of a cat sitting on a mat.
What is in this image? Describe the document, the table and the chart. Summarize the video.
def main():\n    print("hello, world")\n    return 0\n
Thinking step by step: first read the question, then answer it clearly and briefly.
QwenDesk runs Qwen3.5 locally with MLX on Apple Silicon. 0123456789 + - * / = ( ) [ ] { } < >
"""
_BPE_VOCAB = 512  # learned merges on top of the 256 byte tokens (a vocab of a few hundred)

DEFAULT_PIXELS = 448 * 448

# tokenizer_config.json as Qwen's Qwen2Tokenizer settings have it (the release adds its vision tokens).
TOKENIZER_CONFIG = {
    "tokenizer_class": "Qwen2Tokenizer",
    "model_max_length": 262144,
    "bos_token": None,
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "unk_token": None,
    "clean_up_tokenization_spaces": False,
    "split_special_tokens": False,
    "add_prefix_space": False,
    "errors": "replace",
}  # the tiny vision tower's image budget (real checkpoints allow far more)


def _build_tokenizer() -> Tokenizer:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TEXT_CONTROL_TOKENS])
    return tok


def chat_template() -> str:
    return (resources.files("engine_mlx") / "templates" / "qwen3_5_chat_template.jinja").read_text()


TINY_LAYERS = 4  # three Gated-DeltaNet layers, then one full-attention layer (as the real model's)


def _configs(
    vocab_size: int, token_id: Callable[[str], int | None], num_layers: int = TINY_LAYERS
) -> tuple[dict, dict, dict]:
    """config.json, preprocessor_config.json and video_preprocessor_config.json contents."""
    text_config = {
        "model_type": "qwen3_5_moe_text",
        "hidden_size": 128,
        "num_hidden_layers": num_layers,
        "layer_types": [
            "full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(num_layers)
        ],
        "full_attention_interval": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 32,
        "linear_value_head_dim": 32,
        "linear_conv_kernel_dim": 4,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 64,
        "shared_expert_intermediate_size": 64,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab_size,
        "max_position_embeddings": 262144,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "norm_topk_prob": True,
        "rope_parameters": {
            "type": "default",
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
            "rope_theta": 10000000,
            "partial_rotary_factor": 0.25,
        },
        "eos_token_id": token_id("<|im_end|>"),
        "dtype": "float32",
    }
    vision_config = {
        "model_type": "qwen3_5_moe",
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "out_hidden_size": text_config["hidden_size"],
        "in_channels": 3,
        "patch_size": 16,
        "spatial_patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [],
        "hidden_act": "gelu_pytorch_tanh",
    }
    config = {
        "architectures": ["Qwen3_5MoeForConditionalGeneration"],
        "model_type": "qwen3_5_moe",
        "text_config": text_config,
        "vision_config": vision_config,
        "image_token_id": token_id("<|image_pad|>"),
        "video_token_id": token_id("<|video_pad|>"),
        "vision_start_token_id": token_id("<|vision_start|>"),
        "vision_end_token_id": token_id("<|vision_end|>"),
        "vocab_size": vocab_size,
        "eos_token_id": [token_id("<|im_end|>"), token_id("<|endoftext|>")],
        "tie_word_embeddings": False,
        "_qwendesk_tiny": True,
    }
    image = {
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "processor_class": "Qwen3VLProcessor",
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"shortest_edge": 32 * 32 * 4, "longest_edge": DEFAULT_PIXELS},
    }
    video = {
        "video_processor_type": "Qwen3VLVideoProcessor",
        "processor_class": "Qwen3VLProcessor",
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "fps": 2,
        "min_frames": 2,
        "max_frames": 128,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"shortest_edge": 32 * 32 * 4, "longest_edge": DEFAULT_PIXELS * 4},
    }
    return config, image, video


def build_tiny_model(
    out_dir: Path | str,
    *,
    seed: int = 0,
    bits: int | None = 4,
    vision: bool = True,
    vocab_multiple: int = 1,
    layers: int = TINY_LAYERS,
) -> Path:
    """Write the tiny checkpoint into ``out_dir`` (created if needed) and return its path.

    ``vision=False`` writes a text-only conversion (no vision tower, no ``vision_config``), laid out
    as mlx-lm converts one, to exercise the text-only loading path. ``bits=None`` leaves the weights
    unquantized, and ``vocab_multiple`` pads the embedding rows to a multiple of it (as the real
    release pads its vocabulary): tensor parallelism needs both to split the model over ranks.
    ``layers`` (a multiple of 4) deepens it in the real model's pattern, for benchmarks whose costs
    should stand in proportion as the real model's do (an MTP draft against a whole step).
    """
    import mlx.core as mx
    from mlx.utils import tree_map

    from .runtime_imports import ensure_runtime_imported

    ensure_runtime_imported()  # the app builds the demo model on a pool thread
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = _build_tokenizer()
    vocab_size = -(-tok.get_vocab_size(with_added_tokens=True) // vocab_multiple) * vocab_multiple
    config, image_cfg, video_cfg = _configs(vocab_size, tok.token_to_id, layers)
    if not vision:
        config = {
            "architectures": config["architectures"],
            "model_type": config["model_type"],
            "text_config": config["text_config"],
            "eos_token_id": config["eos_token_id"],
            "tie_word_embeddings": False,
        }

    mx.random.seed(seed)
    model: Any
    if vision:
        from mlx_vlm.models import qwen3_5_moe as vlm_qwen3_5_moe

        model = vlm_qwen3_5_moe.Model(
            vlm_qwen3_5_moe.ModelConfig.from_dict(json.loads(json.dumps(config)))
        )
    else:
        from mlx_lm.models import qwen3_5_moe as lm_qwen3_5_moe

        model = lm_qwen3_5_moe.Model(
            lm_qwen3_5_moe.ModelArgs.from_dict(json.loads(json.dumps(config)))
        )
    # Random init gives unit-scale weights; scale them down so activations stay finite through the
    # layers and sampling sees a spread of tokens rather than one saturated logit.
    model.update(tree_map(lambda p: p * 0.5 if p.ndim > 1 else p, model.parameters()))
    mx.eval(model.parameters())

    with contextlib.redirect_stdout(io.StringIO()):  # the converters print an [INFO] line
        if vision:
            from mlx_vlm.quant_utils import quantize_model as vlm_quantize_model
            from mlx_vlm.utils import save_config, save_weights, skip_multimodal_module

            model_predicate = model.quant_predicate

            def predicate(path: str, module: Any) -> bool | dict[str, Any]:
                if skip_multimodal_module(path):
                    return False
                return model_predicate(path, module) if model_predicate else True

            model, config = vlm_quantize_model(model, config, 64, bits, quant_predicate=predicate)
            save_weights(out, model)
        else:
            from mlx_lm.utils import quantize_model as lm_quantize_model
            from mlx_lm.utils import save_config, save_model

            if bits is not None:
                model, config = lm_quantize_model(model, config, 64, bits)
            save_model(out, model)
    save_config(config, out / "config.json")

    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    (out / "chat_template.jinja").write_text(chat_template())
    if vision:
        (out / "preprocessor_config.json").write_text(json.dumps(image_cfg, indent=2))
        (out / "video_preprocessor_config.json").write_text(json.dumps(video_cfg, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "do_sample": True,
                "temperature": 1.0,
                "top_p": 0.95,
                "top_k": 20,
                "eos_token_id": config["eos_token_id"],
                "pad_token_id": tok.token_to_id("<|endoftext|>"),
            },
            indent=2,
        )
    )
    (out / "README.md").write_text(
        "# QwenDesk tiny model\n\nRandom weights of the Qwen3.5 (qwen3_5_moe) architecture, "
        f"{f'{bits}-bit' if bits is not None else 'unquantized'}. For trying the interface and for tests: "
        "its output is gibberish.\n"
    )
    return out
