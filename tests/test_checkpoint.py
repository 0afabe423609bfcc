"""checkpoint: real config.json, tokenizer and safetensors files written into tmp_path."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from engine_mlx.checkpoint import (
    DiscoveredModel,
    SearchRoot,
    SourceKind,
    default_search_roots,
    discover_models,
    inspect_checkpoint,
    read_chat_template,
)
from engine_mlx.errors import CheckpointError

THINKING_TEMPLATE = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>{%- endif %}"
)

TEXT_CONFIG: dict[str, Any] = {
    "model_type": "qwen3_5_text",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 8,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "full_attention_interval": 4,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "max_position_embeddings": 262144,
    "vocab_size": 256,
    "rms_norm_eps": 1e-6,
}

# 4×8 + 8×8 + 8 = 104 parameters, all float32: 416 bytes.
TENSORS = {
    "model.embed_tokens.weight": np.zeros((4, 8), np.float32),
    "model.layers.0.mlp.down_proj.weight": np.ones((8, 8), np.float32),
    "model.norm.weight": np.ones(8, np.float32),
}


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def make_model(
    folder: Path,
    *,
    model_type: str = "qwen3_5",
    vision: bool = True,
    tensors: dict[str, np.ndarray] | None = None,
    config_extra: dict[str, Any] | None = None,
    template: str | None = THINKING_TEMPLATE,
) -> Path:
    """A checkpoint folder the way mlx-vlm writes one: config, tokenizer, template, safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "model_type": model_type,
        "text_config": dict(TEXT_CONFIG),
    }
    if vision:
        config["vision_config"] = {"model_type": "qwen3_5", "depth": 2, "hidden_size": 32}
    config.update(config_extra or {})
    write_json(folder / "config.json", config)
    write_json(folder / "tokenizer.json", {"version": "1.0", "model": {"type": "BPE"}})
    write_json(folder / "tokenizer_config.json", {"eos_token": "<|im_end|>"})
    if template is not None:
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    save_file(TENSORS if tensors is None else tensors, str(folder / "model.safetensors"))
    return folder


# ------------------------------------------------------------------------------------ valid folders
# These folders hold small made-up tensor tables, not a model's: they test what is read from the
# config and the headers, so they skip the architecture check (check_tensors=False), which
# tests/test_model_folder_safety.py runs on real converted folders.


def test_vision_checkpoint(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "Qwen3.5-Tiny")

    info = inspect_checkpoint(folder, check_tensors=False)

    assert info.path == folder
    assert info.name == "Qwen3.5-Tiny"
    assert info.model_type == "qwen3_5"
    assert info.architecture == "Qwen3_5ForConditionalGeneration"
    assert info.is_vision is True
    assert info.quant_bits is None and info.quant_group_size is None
    assert info.param_count == 104
    assert info.weight_bytes == 416
    assert info.context_length == 262144
    assert info.supports_thinking is True
    assert info.num_layers == 8
    assert info.num_full_attention_layers == 2  # layers 3 and 7
    assert info.num_linear_attention_layers == 6
    assert (info.num_key_value_heads, info.head_dim) == (2, 32)
    assert (info.linear_num_key_heads, info.linear_num_value_heads) == (2, 4)
    assert (info.linear_key_head_dim, info.linear_value_head_dim) == (16, 16)
    assert info.linear_conv_kernel_dim == 4
    assert info.layer_types is None


@pytest.mark.parametrize(
    "model_type", ["qwen3_5_text", "qwen3_5_moe_text", "qwen3_5_moe", "qwen3_5"]
)
def test_text_only_checkpoints(tmp_path: Path, model_type: str) -> None:
    folder = make_model(tmp_path / "m", model_type=model_type, vision=False, template="{{ x }}")

    info = inspect_checkpoint(folder, check_tensors=False)

    assert info.model_type == model_type
    assert info.is_vision is False  # decided by vision_config alone, not by model_type
    assert info.supports_thinking is False


def test_flat_text_config_and_defaults(tmp_path: Path) -> None:
    """A text-only conversion may keep the text fields at the top level and omit head_dim."""
    folder = tmp_path / "flat"
    make_model(folder, model_type="qwen3_5_text", vision=False)
    dropped = ("head_dim", "full_attention_interval")
    flat = {k: v for k, v in TEXT_CONFIG.items() if k not in dropped}
    write_json(folder / "config.json", {**flat, "model_type": "qwen3_5_text"})

    info = inspect_checkpoint(folder, check_tensors=False)

    assert info.architecture == "qwen3_5_text"
    assert info.head_dim == 64 // 4
    assert info.full_attention_interval == 4
    assert info.context_length == 262144


def test_layer_types_decide_full_attention_layers(tmp_path: Path) -> None:
    types = ["full_attention", "linear_attention", "full_attention"] + ["linear_attention"] * 5
    folder = make_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["layer_types"] = types
    write_json(folder / "config.json", config)

    info = inspect_checkpoint(folder, check_tensors=False)

    assert info.num_full_attention_layers == 2 and info.layer_types == tuple(types)
    assert info.num_linear_attention_layers == 6


def test_quantized_param_count(tmp_path: Path) -> None:
    tensors = {
        # 4-bit: each uint32 holds 8 values, so 8 rows × 4 words = 8 × 32 logical weights.
        "model.layers.0.mlp.up_proj.weight": np.zeros((8, 4), np.uint32),
        "model.layers.0.mlp.up_proj.scales": np.ones((8, 1), np.float16),
        "model.layers.0.mlp.up_proj.biases": np.zeros((8, 1), np.float16),
        # An 8-bit override for the router: 4 values per uint32, 2 rows × 8 words = 2 × 32.
        "model.layers.0.mlp.gate.weight": np.zeros((2, 8), np.uint32),
        "model.layers.0.mlp.gate.scales": np.ones((2, 1), np.float16),
        "model.layers.0.mlp.gate.biases": np.zeros((2, 1), np.float16),
        "model.norm.weight": np.ones(32, np.float32),
    }
    quant = {"group_size": 32, "bits": 4, "model.layers.0.mlp.gate": {"group_size": 32, "bits": 8}}
    folder = make_model(tmp_path / "q4", tensors=tensors, config_extra={"quantization": quant})

    info = inspect_checkpoint(folder, check_tensors=False)

    assert (info.quant_bits, info.quant_group_size) == (4, 32)
    assert info.param_count == 8 * 32 + 2 * 32 + 32
    packed = (8 * 4 + 2 * 8) * 4  # uint32
    scales_and_biases = 2 * (8 + 2) * 2  # float16
    assert info.weight_bytes == packed + scales_and_biases + 32 * 4


def test_sharded_checkpoint_with_index(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "sharded")
    (folder / "model.safetensors").unlink()
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    save_file({"a.weight": np.zeros((10, 10), np.float16)}, str(folder / first))
    save_file({"b.weight": np.zeros(6, np.float32)}, str(folder / second))
    write_json(
        folder / "model.safetensors.index.json",
        {
            "metadata": {"total_size": 224},
            "weight_map": {"a.weight": first, "b.weight": second},
        },
    )

    info = inspect_checkpoint(folder, check_tensors=False)

    assert info.param_count == 106
    assert info.weight_bytes == 200 + 24


def test_chat_template_sources(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m", template=None)
    assert read_chat_template(folder) is None
    assert inspect_checkpoint(folder, check_tensors=False).supports_thinking is False

    write_json(
        folder / "tokenizer_config.json",
        {
            "chat_template": [
                {"name": "tool_use", "template": "t"},
                {"name": "default", "template": "<think>"},
            ]
        },
    )
    assert read_chat_template(folder) == "<think>"
    assert inspect_checkpoint(folder, check_tensors=False).supports_thinking is True

    write_json(folder / "chat_template.json", {"chat_template": "from json"})
    assert read_chat_template(folder) == "from json"

    (folder / "chat_template.jinja").write_text("from jinja {{ enable_thinking }}")
    assert read_chat_template(folder) == "from jinja {{ enable_thinking }}"


# ------------------------------------------------------------------------------------------- errors


def reason_for(folder: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        inspect_checkpoint(folder)
    assert info.value.path == folder
    return info.value.reason


def test_not_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    assert "is not a folder" in reason_for(file)
    assert "does not exist" in reason_for(tmp_path / "nowhere")


def test_missing_config(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    (folder / "config.json").unlink()
    assert "has no config.json" in reason_for(folder)


def test_invalid_config_json(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    (folder / "config.json").write_text('{"model_type": "qwen3_5",')
    assert "config.json is not valid JSON" in reason_for(folder)


def test_pickle_weights_only(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")

    reason = reason_for(folder)

    assert "pytorch_model.bin" in reason and "only .safetensors" in reason


def test_no_weights(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    assert "has no .safetensors weight files" in reason_for(folder)


def test_shard_missing_from_index(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    write_json(
        folder / "model.safetensors.index.json",
        {"weight_map": {"x": "model.safetensors", "y": "model-00002-of-00002.safetensors"}},
    )

    reason = reason_for(folder)

    assert "model-00002-of-00002.safetensors" in reason and "missing" in reason


def test_truncated_shard(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    shard = folder / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])

    reason = reason_for(folder)

    assert "weight shard model.safetensors is truncated" in reason


def test_shard_shorter_than_its_header(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    shard = folder / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:20])
    assert "model.safetensors is truncated" in reason_for(folder)


def test_no_tokenizer(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    assert "has no tokenizer" in reason_for(folder)

    (folder / "vocab.json").write_text("{}")  # tokenizer_config.json + vocab is enough
    assert inspect_checkpoint(folder, check_tensors=False).name == "m"


def test_other_architecture_is_rejected(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "llama", model_type="llama")
    assert reason_for(folder) == (
        "architecture llama is not a Qwen3.5-family model; "
        "QwenDesk runs qwen3_5 / qwen3_5_moe checkpoints"
    )


# ---------------------------------------------------------------------------------------- discovery


def make_hf_repo(hub: Path, repo_id: str, revision: str, **kwargs: Any) -> Path:
    """A repo in the hub cache layout: files in blobs/, relative links in snapshots/<rev>/."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    staging = make_model(hub.parent / "staging" / repo_id.replace("/", "_") / revision, **kwargs)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in sorted(staging.iterdir()):
        blob = repo / "blobs" / f"{revision}-{file.name}".replace(".", "")
        file.rename(blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_discovery_in_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    old = make_hf_repo(hub, "Qwen/Qwen3.5-Tiny", "a" * 40, template="old")
    current = make_hf_repo(hub, "Qwen/Qwen3.5-Tiny", "b" * 40)
    os.utime(old, (time.time() + 100, time.time() + 100))  # newest on disk, but refs/main wins
    make_hf_repo(hub, "meta-llama/Llama-3-8B", "c" * 40, model_type="llama")
    assert (current / "model.safetensors").is_symlink()

    found = {m.path: m for m in discover_models(check_tensors=False)}

    llama_snapshot = hub / "models--meta-llama--Llama-3-8B" / "snapshots" / ("c" * 40)
    assert set(found) == {current, llama_snapshot}
    qwen = found[current]
    assert qwen.ok and qwen.source is SourceKind.HF_CACHE and qwen.error is None
    assert qwen.info is not None and qwen.info.name == "Qwen/Qwen3.5-Tiny"
    assert qwen.info.weight_bytes == 416  # sizes of the blobs behind the links
    assert qwen.info.supports_thinking is True
    llama = found[llama_snapshot]
    assert not llama.ok and "not a Qwen3.5-family model" in (llama.error or "")


def test_hf_cache_without_refs_takes_newest_snapshot(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    older = make_hf_repo(hub, "org/model", "1" * 40)
    newer = make_hf_repo(hub, "org/model", "2" * 40)
    (hub / "models--org--model" / "refs" / "main").unlink()
    os.utime(older, (1_000_000, 1_000_000))

    found = discover_models(roots=[SearchRoot(hub, SourceKind.HF_CACHE)], check_tensors=False)

    assert [m.path for m in found] == [newer]


def test_incomplete_hf_download_is_listed_with_its_error(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    snapshot = make_hf_repo(hub, "org/partial", "d" * 40)
    write_json(
        hub / "models--org--partial" / "blobs" / "index",
        {"weight_map": {"x": "model.safetensors", "y": "model-00002-of-00002.safetensors"}},
    )
    (snapshot / "model.safetensors.index.json").symlink_to(Path("..", "..", "blobs", "index"))
    (snapshot / "model-00002-of-00002.safetensors").symlink_to(Path("..", "..", "blobs", "never"))

    [model] = discover_models(roots=[SearchRoot(hub, SourceKind.HF_CACHE)], check_tensors=False)

    assert model.info is None
    error = model.error or ""
    assert "model-00002-of-00002.safetensors" in error and "missing" in error


def test_discovery_in_lmstudio_and_user_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    lm = make_model(home / ".lmstudio" / "models" / "mlx-community" / "Qwen3.5-Tiny-4bit")
    lm_old = make_model(home / ".cache" / "lm-studio" / "models" / "lmstudio-community" / "Old")
    direct = make_model(tmp_path / "mine" / "direct")
    nested = make_model(tmp_path / "collection" / "group" / "deep")
    make_model(tmp_path / "collection" / "group" / "deeper" / "too-deep")
    (tmp_path / "collection" / "notes").mkdir()

    found = discover_models(extra_dirs=[direct, tmp_path / "collection"], check_tensors=False)

    by_path = {m.path: m for m in found}
    assert set(by_path) == {lm, lm_old, direct, nested}
    assert by_path[lm].source is SourceKind.LMSTUDIO and by_path[lm].ok
    assert by_path[direct].source is SourceKind.USER
    assert all(isinstance(m, DiscoveredModel) and m.info is not None for m in found)


def test_discovery_lists_each_folder_once(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "models" / "one")
    root = SearchRoot(tmp_path / "models", SourceKind.USER)

    found = discover_models(extra_dirs=[folder], roots=[root], check_tensors=False)

    assert [m.path for m in found] == [folder]


def test_default_search_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))

    roots = default_search_roots()

    assert roots == [
        SearchRoot(tmp_path / "hf" / "hub", SourceKind.HF_CACHE),
        SearchRoot(tmp_path / ".lmstudio" / "models", SourceKind.LMSTUDIO),
        SearchRoot(tmp_path / ".cache" / "lm-studio" / "models", SourceKind.LMSTUDIO),
    ]
    monkeypatch.delenv("HF_HOME")
    assert default_search_roots()[0].path == tmp_path / ".cache" / "huggingface" / "hub"


def test_inspection_cache_reuses_a_folder_until_one_of_its_files_changes(tiny_model_dir, tmp_path):
    """The picker's rescans (every context-length change) inspect a folder again only when it changed."""
    import shutil

    from engine_mlx.inspections import InspectionCache

    shelf = tmp_path / "shelf"
    model = shutil.copytree(tiny_model_dir, shelf / "Qwen3.5-tiny")
    cache = InspectionCache()

    def scan():
        return discover_models(roots=[SearchRoot(shelf, SourceKind.USER)], inspect=cache.inspect)

    first = scan()
    assert [f.ok for f in first] == [True] and (cache.hits, cache.misses) == (0, 1)
    again = scan()
    assert again[0].info == first[0].info and (cache.hits, cache.misses) == (1, 1)
    # A shard rewritten in place (same name): inspected again, and its damage is found.
    shard = next(model.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-10])
    broken = scan()
    assert not broken[0].ok and "safetensors" in broken[0].error and cache.misses == 2
    assert scan()[0].error == broken[0].error and cache.hits == 2  # the refusal is remembered too
    shutil.copy(tiny_model_dir / shard.name, shard)
    os.utime(shard, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert scan()[0].ok and cache.misses == 3
    (model / "extra.py").write_text("print('hi')\n")  # a file added: inspected again, and refused
    assert ".py" in scan()[0].error and cache.misses == 4
