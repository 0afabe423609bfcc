"""memory: the fit estimate, checked by hand on a small synthetic model and Qwen3.5-397B's shape."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from engine_mlx import platform
from engine_mlx.checkpoint import ModelInfo, inspect_checkpoint
from engine_mlx.errors import MemoryFitError
from engine_mlx.memory import (
    FitVerdict,
    MachineMemory,
    check_fit,
    estimate_fit,
    kv_bytes_per_token,
    linear_state_bytes,
    machine_memory,
    weight_bytes,
)
from engine_mlx.sizes import human_bytes

GIB = 1024**3
MIB = 1024**2

TINY = ModelInfo(
    path=Path("/models/tiny"),
    name="tiny",
    model_type="qwen3_5",
    architecture="Qwen3_5ForConditionalGeneration",
    is_vision=True,
    quant_bits=4,
    quant_group_size=64,
    param_count=1_000_000,
    weight_bytes=2 * GIB,
    context_length=262144,
    supports_thinking=True,
    num_layers=8,
    num_full_attention_layers=2,
    full_attention_interval=4,
    num_key_value_heads=2,
    head_dim=32,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    linear_conv_kernel_dim=4,
)


def linux(total: int) -> MachineMemory:
    return MachineMemory(total, total, None, is_apple_silicon=False)


def mac(total: int, wired: int | None) -> MachineMemory:
    return MachineMemory(total, total, wired, is_apple_silicon=True)


def test_cpu_backend_computes_bf16_checkpoints_in_float32() -> None:
    """The runtime casts bf16 weights to float32 on MLX's CPU backend, so the cache doubles there."""
    cpu = MachineMemory(64 * GIB, 64 * GIB, None, is_apple_silicon=False, cpu_backend=True)
    assert TINY.activation_dtype == "bfloat16"
    assert kv_bytes_per_token(TINY, cpu) == 2 * kv_bytes_per_token(TINY, linux(64 * GIB)) == 1024
    assert estimate_fit(TINY, 1000, cpu).kv_bytes == 1_024_000
    assert linear_state_bytes(TINY, cpu) == 6 * (2 * 768 + 4096)


def test_small_model_numbers_by_hand() -> None:
    # KV: K and V × 2 full-attention layers × 2 heads × 32 dims × 2 bytes = 512 bytes per token.
    assert kv_bytes_per_token(TINY) == 512
    # Per linear layer: conv 3 × (2·2·16 + 4·16) × 2 = 768, recurrent 4 × 16 × 16 × 4 = 4096.
    assert linear_state_bytes(TINY) == 6 * (768 + 4096)

    est = estimate_fit(TINY, 1000, machine=linux(64 * GIB))

    assert est.weights_bytes == 2 * GIB
    assert est.kv_bytes == 512_000
    assert est.linear_state_bytes == 29_184
    assert est.overhead_bytes == 3 * GIB // 2 + (2 * GIB) // 20
    assert est.total_bytes == 2 * GIB + 512_000 + 29_184 + est.overhead_bytes
    assert est.budget_bytes == 64 * GIB - int(64 * GIB * 0.15)
    assert est.verdict is FitVerdict.FITS
    assert est.advice == ""
    assert est.context_tokens == 1000


def test_float32_checkpoints_count_float32_keys_values_and_conv_window() -> None:
    info = replace(TINY, activation_dtype="float32")
    # The activations' dtype doubles K, V and the conv window; the recurrent state is float32 anyway.
    assert kv_bytes_per_token(info) == 2 * 2 * 2 * 32 * 4 == 1024
    assert linear_state_bytes(info) == 6 * (3 * (2 * 2 * 16 + 4 * 16) * 4 + 4096)


def test_budget_keeps_a_reserve_for_the_os() -> None:
    assert estimate_fit(TINY, 0, linux(100 * GIB)).budget_bytes == 85 * GIB  # 15% of RAM
    assert estimate_fit(TINY, 0, linux(16 * GIB)).budget_bytes == 12 * GIB  # at least 4 GiB
    assert estimate_fit(TINY, 0, mac(64 * GIB, 48 * GIB)).budget_bytes == 48 * GIB  # wired limit
    unknown = estimate_fit(TINY, 0, mac(64 * GIB, None))
    assert unknown.budget_bytes == 48 * GIB and "estimated" in unknown.budget_source


def test_verdict_thresholds() -> None:
    total = estimate_fit(TINY, 4096, linux(64 * GIB)).total_bytes

    def verdict(wired: int) -> FitVerdict:
        return estimate_fit(TINY, 4096, mac(512 * GIB, wired)).verdict

    comfortable = math.ceil(total / 0.85)
    assert verdict(comfortable) is FitVerdict.FITS
    assert verdict(comfortable - 1) is FitVerdict.TIGHT
    assert verdict(total) is FitVerdict.TIGHT
    assert verdict(total - 1) is FitVerdict.DOES_NOT_FIT


def test_context_length_drives_the_kv_cache() -> None:
    short = estimate_fit(TINY, 1024, linux(64 * GIB))
    long = estimate_fit(TINY, 262144, linux(64 * GIB))
    assert long.kv_bytes - short.kv_bytes == 512 * (262144 - 1024)
    assert long.total_bytes - short.total_bytes == long.kv_bytes - short.kv_bytes


def test_advice_when_memory_is_missing_off_mac() -> None:
    info = replace(TINY, weight_bytes=20 * GIB)

    est = estimate_fit(info, 8192, linux(16 * GIB))

    assert est.verdict is FitVerdict.DOES_NOT_FIT
    missing = est.total_bytes - est.budget_bytes
    assert est.advice.startswith(f"About {human_bytes(missing)} is missing")
    assert "quantization" in est.advice
    assert "sysctl" not in est.advice


def test_advice_suggests_the_context_that_would_fit() -> None:
    # A budget (RAM - 4 GiB) that holds everything plus exactly 1,000 tokens of KV cache.
    base = estimate_fit(TINY, 0, linux(64 * GIB))
    machine = linux(base.total_bytes + 512 * 1000 + 4 * GIB)

    est = estimate_fit(TINY, 3000, machine)

    assert est.verdict is FitVerdict.DOES_NOT_FIT
    assert "a context of at most 1,000 tokens (now 3,000)" in est.advice


def test_tight_fit_advice_off_mac() -> None:
    total = estimate_fit(TINY, 0, linux(64 * GIB)).total_bytes
    # budget = RAM - 4 GiB for small machines; choose RAM so that the total uses ~95% of the budget.
    est = estimate_fit(TINY, 0, linux(int(total / 0.95) + 4 * GIB))
    assert est.verdict is FitVerdict.TIGHT
    assert est.advice.startswith("Only ") and "shorter context" in est.advice


# ---------------------------------------------------------------------- Qwen3.5-397B-A17B, 4-bit


def write_header_only_safetensors(
    path: Path, tensors: dict[str, tuple[str, list[int], int]]
) -> None:
    """A valid safetensors file whose data is a sparse hole: a real header, no real bytes."""
    header, offset = {}, 0
    for name, (dtype, shape, itemsize) in tensors.items():
        size = math.prod(shape) * itemsize
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    probe = path.with_suffix(".probe")
    with probe.open("wb") as f:
        f.truncate(64 * MIB)
    sparse = probe.stat().st_blocks * 512 < MIB
    probe.unlink()
    if not sparse:
        pytest.skip("this filesystem has no sparse files; a 208 GiB shard would be written")
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)


@pytest.fixture
def qwen35_397b(tmp_path: Path) -> ModelInfo:
    folder = tmp_path / "Qwen3.5-397B-A17B-4bit"
    folder.mkdir()
    text_config = {
        "model_type": "qwen3_5_moe_text",
        "hidden_size": 4096,
        "num_hidden_layers": 60,
        "num_attention_heads": 32,
        "num_key_value_heads": 2,
        "head_dim": 256,
        "full_attention_interval": 4,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": 64,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4,
        "max_position_embeddings": 262144,
    }
    config = {
        "model_type": "qwen3_5_moe",
        "architectures": ["Qwen3_5MoeForConditionalGeneration"],
        "text_config": text_config,
        "vision_config": {"depth": 27},
        "quantization": {"group_size": 64, "bits": 4},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text("{}")
    # 397e9 weights at 4 bits: 49.625e9 uint32 words, one bf16 scale and bias per 64 weights.
    write_header_only_safetensors(
        folder / "model.safetensors",
        {
            "model.experts.weight": ("U32", [397_000, 125_000], 4),
            "model.experts.scales": ("BF16", [397_000, 15_625], 2),
            "model.experts.biases": ("BF16", [397_000, 15_625], 2),
        },
    )
    return inspect_checkpoint(folder, check_tensors=False)  # a header-only table of made-up tensors


def test_397b_checkpoint_from_headers(qwen35_397b: ModelInfo) -> None:
    info = qwen35_397b
    assert info.param_count == 397_000_000_000
    assert info.weight_bytes == 198_500_000_000 + 2 * 12_406_250_000  # ≈ 208 GiB
    assert (info.num_layers, info.num_full_attention_layers) == (60, 15)
    assert (info.quant_bits, info.is_vision) == (4, True)
    assert info.activation_dtype == "bfloat16"  # from the bf16 quantization scales


def test_397b_on_a_256gb_mac_needs_a_higher_wired_limit(qwen35_397b: ModelInfo) -> None:
    ram = 256 * GIB
    default_limit = 192 * GIB  # Metal's default working set: 75% of RAM

    est = estimate_fit(qwen35_397b, 32768, mac(ram, default_limit))

    # Its scales are bf16, so it computes in bf16: K, V and the conv window at 2 bytes.
    # KV: 2 × 15 layers × 2 heads × 256 × 2 bytes = 30,720 bytes/token.
    assert est.kv_bytes == 30_720 * 32_768
    # 45 linear layers × (conv 3 × (2·16·128 + 64·128) × 2 + float32 recurrent 64 × 128 × 128 × 4).
    assert est.linear_state_bytes == 45 * (73_728 + 4_194_304)
    assert est.overhead_bytes == 3 * GIB // 2 + 223_312_500_000 // 20
    assert est.total_bytes == 237_287_432_136  # ≈ 221 GiB
    assert est.verdict is FitVerdict.DOES_NOT_FIT
    # 221 GiB / 0.85 would be 260 GiB; capped to leave macOS 8 GiB: 248 GiB = 253,952 MiB.
    assert "sudo sysctl iogpu.wired_limit_mb=253952" in est.advice
    assert "resets when the Mac restarts" in est.advice
    with pytest.raises(MemoryFitError, match="Qwen3.5-397B-A17B-4bit does not fit") as info:
        check_fit(est, force=False)
    assert "iogpu.wired_limit_mb=253952" in str(info.value)

    raised = estimate_fit(qwen35_397b, 32768, mac(ram, 253_952 * MIB))

    assert raised.verdict is not FitVerdict.DOES_NOT_FIT
    assert raised.budget_bytes == 248 * GIB
    check_fit(raised, force=False)  # loads


def test_397b_does_not_fit_a_128gb_mac_and_no_sysctl_advice(qwen35_397b: ModelInfo) -> None:
    est = estimate_fit(qwen35_397b, 8192, mac(128 * GIB, 96 * GIB))
    assert est.verdict is FitVerdict.DOES_NOT_FIT
    assert "sysctl" not in est.advice and "quantization" in est.advice


def test_no_sysctl_advice_once_the_limit_is_at_the_ceiling(qwen35_397b: ModelInfo) -> None:
    tight = estimate_fit(qwen35_397b, 200_000, mac(256 * GIB, 248 * GIB))
    assert tight.verdict is FitVerdict.TIGHT
    assert "sysctl" not in tight.advice and tight.advice.startswith("Only ")

    bigger = replace(qwen35_397b, weight_bytes=230 * GIB)
    over = estimate_fit(bigger, 200_000, mac(256 * GIB, 248 * GIB))
    assert over.verdict is FitVerdict.DOES_NOT_FIT
    assert "sysctl" not in over.advice and "context of at most" in over.advice


# ------------------------------------------------------------- the activation dtype, from the headers


@pytest.mark.parametrize(
    ("tensors", "config_dtype", "expected"),
    [
        # A bf16 release: its vision tower and the float32 A_log (mlx_lm.convert keeps it in float32)
        # do not change what the language model computes in.
        (
            {
                "language_model.model.embed_tokens.weight": "BF16",
                "language_model.model.layers.0.linear_attn.A_log": "F32",
                "language_model.model.layers.0.linear_attn.dt_bias": "F32",
                "vision_tower.blocks.0.norm1.weight": "F32",
                "mtp.norm.weight": "F32",
            },
            "float32",
            "bfloat16",
        ),
        # One float32 norm promotes bf16 activations to float32 in MLX; so do fp16 with bf16.
        (
            {
                "language_model.model.embed_tokens.scales": "BF16",
                "language_model.model.norm.weight": "F32",
            },
            None,
            "float32",
        ),
        (
            {
                "model.language_model.embed_tokens.weight": "F16",
                "model.language_model.norm.weight": "BF16",
            },
            None,
            "float32",
        ),
        # No floating-point tensor to go by (microscaling scales are U8): config.json decides.
        ({"language_model.model.embed_tokens.scales": "U8"}, "float16", "float16"),
        ({"language_model.model.embed_tokens.scales": "U8"}, None, "bfloat16"),
    ],
)
def test_activation_dtype_from_the_language_models_float_tensors(
    tmp_path: Path, tensors: dict[str, str], config_dtype: str | None, expected: str
) -> None:
    text_config = {
        "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 2,
        "num_key_value_heads": 2, "head_dim": 32,
    }  # fmt: skip
    if config_dtype:
        text_config["dtype"] = config_dtype
    config = {"model_type": "qwen3_5_moe", "text_config": text_config}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "tokenizer.json").write_text("{}")
    sizes = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1}
    write_header_only_safetensors(
        tmp_path / "model.safetensors",
        {name: (dtype, [64], sizes[dtype]) for name, dtype in tensors.items()},
    )
    assert inspect_checkpoint(tmp_path, check_tensors=False).activation_dtype == expected


# ------------------------------------------------ the estimate against the cache of a real load


@pytest.fixture(scope="module")
def tiny_text_bf16_dir(tiny_text_model_dir, tmp_path_factory) -> Path:
    """The text-only tiny model cast to bf16 by mlx_lm.convert --dtype bfloat16 (config unchanged)."""
    import contextlib
    import io

    from mlx_lm import convert

    out = tmp_path_factory.mktemp("tiny-text-bf16") / "model"
    with contextlib.redirect_stdout(io.StringIO()):
        convert(str(tiny_text_model_dir), mlx_path=str(out), dtype="bfloat16")
    return out


@pytest.mark.parametrize(
    ("model", "dtype"),
    [("vision", "float32"), ("text-only", "float32"), ("text-only bf16", "bfloat16")],
)
def test_estimate_equals_the_cache_a_real_load_holds(model: str, dtype: str, request) -> None:
    """KV bytes per token and the fixed linear-attention state, against the loaders' own caches.

    The caches' own ``nbytes`` after 256 and 512 tokens (KV caches grow in steps of 256, so no
    slack): the entries that grow hold keys and values, the others the conv window and the
    recurrent state.
    """
    import mlx.core as mx

    from engine_mlx.runtime import LoadedModel, PromptInputs

    if model == "vision":
        loaded = request.getfixturevalue("engine")._loaded
        info = inspect_checkpoint(loaded.info.path)
    else:
        folder = request.getfixturevalue(
            "tiny_text_bf16_dir" if model.endswith("bf16") else "tiny_text_model_dir"
        )
        info = inspect_checkpoint(folder)
        loaded = LoadedModel.load(info)
    assert info.activation_dtype == dtype

    n1, n2 = 256, 512
    ids = list(range(200, 200 + n2))
    positions = None
    if loaded.is_vision:  # text only: the three MRoPE axes coincide
        positions = mx.broadcast_to(mx.arange(n2)[None, None], (3, 1, n2))
    inputs = PromptInputs(ids=ids, positions=positions)
    cache = loaded.make_cache()
    sizes = []
    for start, end in ((0, n1), (n1, n2)):
        loaded.run_prompt(inputs, start, end, cache)
        mx.eval([entry.state for entry in cache])
        sizes.append([entry.nbytes for entry in cache])
    grows = [b > a for a, b in zip(*sizes)]
    kv_at_n1 = sum(a for a, g in zip(sizes[0], grows) if g)
    kv_at_n2 = sum(b for b, g in zip(sizes[1], grows) if g)
    fixed = [b for b, g in zip(sizes[1], grows) if not g]

    assert sum(grows) == info.num_full_attention_layers
    assert len(fixed) == info.num_linear_attention_layers
    here = machine_memory()  # on the CPU backend a bf16 checkpoint computes in float32
    assert kv_at_n1 == n1 * kv_bytes_per_token(info, here)
    assert kv_at_n2 == n2 * kv_bytes_per_token(info, here)
    assert sum(fixed) == linear_state_bytes(info, here)
    estimate = estimate_fit(info, n2, here)
    assert (estimate.kv_bytes, estimate.linear_state_bytes) == (kv_at_n2, sum(fixed))
    from mlx.utils import tree_flatten

    held = sum(p.nbytes for _, p in tree_flatten(loaded.model.parameters()))
    # bf16 weights and scales doubled where the CPU backend casts
    assert estimate.weights_bytes == held
    assert fixed == [a for a, g in zip(sizes[0], grows) if not g]  # it stays put


# ------------------------------------------------------------------------------- check_fit, machine


def test_check_fit() -> None:
    over = estimate_fit(replace(TINY, weight_bytes=40 * GIB), 1024, linux(32 * GIB))
    assert over.verdict is FitVerdict.DOES_NOT_FIT
    with pytest.raises(MemoryFitError) as info:
        check_fit(over, force=False)
    message = str(info.value)
    assert message.startswith("tiny does not fit: needs ") and "GiB usable RAM." in message
    check_fit(over, force=True)  # forced: no error
    check_fit(estimate_fit(TINY, 1024, linux(64 * GIB)), force=False)


def test_summary_is_one_line_with_gib_numbers() -> None:
    line = estimate_fit(TINY, 4096, linux(64 * GIB)).summary()
    assert "\n" not in line
    assert line.startswith(
        "fits: needs 3.6 GiB (weights 2.0 GiB, KV cache 2.0 MiB for 4,096 tokens"
    )
    assert line.endswith("of 54.4 GiB usable RAM")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/meminfo")
def test_machine_memory_on_linux() -> None:
    machine = machine_memory()
    assert machine.total_bytes == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < machine.available_bytes <= machine.total_bytes
    assert machine.wired_limit_bytes is None and machine.is_apple_silicon is False


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-Mac behaviour")
def test_platform_is_inert_off_mac() -> None:
    assert platform.is_macos() is False
    assert platform.is_apple_silicon() is False
    assert platform.metal_available() is False
    assert platform.metal_device_info() == {}
    assert platform.sysctl_int("iogpu.wired_limit_mb") is None
    assert platform.set_wired_limit(GIB) is None
    platform.restore_wired_limit(GIB)  # nothing to restore, and no error


def test_the_mtp_heads_weights_and_cache_count() -> None:
    """A head in an mtp/ folder adds its weights; its attention layer adds to the cache per token. An
    embedded head's tensors are already in the checkpoint's weight bytes."""
    from engine_mlx.mtp_head import MtpHead, MtpSource

    folder = replace(TINY, mtp=MtpHead(MtpSource.FOLDER, Path("/models/tiny/mtp"), 1, 300 * MIB))
    embedded = replace(TINY, mtp=MtpHead(MtpSource.EMBEDDED, TINY.path, 1, 300 * MIB))
    assert weight_bytes(folder) == weight_bytes(TINY) + 300 * MIB
    assert weight_bytes(embedded) == weight_bytes(TINY)
    # 2 layers + the head's 1
    assert kv_bytes_per_token(folder) == kv_bytes_per_token(TINY) * 3 // 2
    assert estimate_fit(folder, 4096).weights_bytes > estimate_fit(TINY, 4096).weights_bytes
