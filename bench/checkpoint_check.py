"""What checking a Qwen3.5-397B-A17B folder costs: the safety, shard-header and architecture checks.

Writes a header-only 4-bit 397B checkpoint (router gates at 8 bits, vision tower unquantized, bf16,
split into 5 GB shards as the converters do; the tensor bytes are holes in sparse files, so it
takes no disk) with the real tensor table of mlx-vlm's qwen3_5_moe model, then times
``inspect_checkpoint`` with and without the architecture check, after importing the loader once
(the app and the CLI pay that import for loading anyway). Nothing here reads a tensor.

Goal: about a second per 397B folder, once: the picker rescans when the context changes, and then
``InspectionCache`` answers an unchanged folder from its directory listing (also timed here).
Run: .venv/bin/python bench/checkpoint_check.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHARD_BYTES = 5 << 30
TEXT_397B = {
    "hidden_size": 4096,
    "num_hidden_layers": 60,
    "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 15,
    "num_attention_heads": 32,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 64,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "num_experts": 512,
    "num_experts_per_tok": 10,
    "moe_intermediate_size": 1024,
    "shared_expert_intermediate_size": 1024,
    "vocab_size": 248320,
    "dtype": "bfloat16",
}
VISION_397B = {
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_heads": 16,
    "out_hidden_size": 4096,
    "num_position_embeddings": 2304,
}


def _tensor_table(config: dict) -> tuple[list[tuple[str, str, list[int]]], dict]:
    """(name, dtype, shape) of every tensor a 4-bit mlx-vlm conversion holds, and its quantization."""
    import mlx.core as mx
    from mlx import nn
    from mlx.utils import tree_flatten
    from mlx_vlm.models import qwen3_5_moe
    from mlx_vlm.utils import skip_multimodal_module, update_module_configs

    model_config = qwen3_5_moe.ModelConfig.from_dict(json.loads(json.dumps(config)))
    model_config = update_module_configs(model_config, qwen3_5_moe, config, ["text", "vision"])
    model = qwen3_5_moe.Model(model_config)  # lazy: nothing is allocated
    quantization: dict = {"group_size": 64, "bits": 4, "mode": "affine"}

    def predicate(path, module):
        if skip_multimodal_module(path) or not hasattr(module, "to_quantized"):
            return False
        chosen = model.quant_predicate(path, module) if model.quant_predicate else True
        if isinstance(chosen, dict):
            quantization[path] = chosen
        return chosen

    nn.quantize(model, 64, 4, class_predicate=predicate)
    names = {mx.uint32: "U32", mx.uint8: "U8"}
    table = [
        (k, names.get(v.dtype, "BF16"), list(v.shape)) for k, v in tree_flatten(model.parameters())
    ]
    return table, quantization


def _write_header_only_shards(folder: Path, table) -> int:
    size = {"U32": 4, "U8": 1, "BF16": 2}
    shards: list[list] = [[]]
    used = 0
    for name, dtype, shape in table:
        nbytes = size[dtype]
        for d in shape:
            nbytes *= d
        if used + nbytes > SHARD_BYTES and shards[-1]:
            shards.append([])
            used = 0
        shards[-1].append((name, dtype, shape, nbytes))
        used += nbytes
    weight_map = {}
    for i, entries in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "mlx"}}, 0
        for name, dtype, shape, nbytes in entries:
            header[name] = {
                "dtype": dtype,
                "shape": shape,
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
            weight_map[name] = file
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with (folder / file).open("wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            f.truncate(8 + len(raw) + offset)  # the tensor bytes: a hole
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return len(shards)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, one round: CI checks it runs (figures not meaningful)",
    )
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1

    from engine_mlx.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="qwendesk-bench-"))
    try:
        folder = build_tiny_model(tmp / "Qwen3.5-397B-A17B-4bit")
        for stale in folder.glob("model*.safetensors*"):
            stale.unlink()
        config = json.loads((folder / "config.json").read_text())
        config["text_config"].update(TEXT_397B)
        config["vision_config"].update(VISION_397B)
        config.pop("_qwendesk_tiny", None)
        config["vocab_size"] = TEXT_397B["vocab_size"]

        start = time.perf_counter()  # the loader's import, paid once per process (a fresh one here)
        subprocess.run([sys.executable, "-c", "import mlx_vlm.utils"], check=True)
        import_s = time.perf_counter() - start
        table, quantization = _tensor_table(config)
        config["quantization"] = config["quantization_config"] = quantization
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        shards = _write_header_only_shards(folder, table)

        from engine_mlx.checkpoint import inspect_checkpoint

        headers, full = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            info = inspect_checkpoint(folder, check_tensors=False)
            headers.append(time.perf_counter() - start)
            start = time.perf_counter()
            inspect_checkpoint(folder)
            full.append(time.perf_counter() - start)
        print(
            f"397B 4-bit (gates 8-bit): {len(table)} tensors in {shards} shards, "
            f"{info.weight_bytes / 2**30:.1f} GiB, {info.param_count / 1e9:.1f} B parameters"
        )
        print(f"a process importing mlx-vlm (once):         {import_s:6.2f} s")
        print(
            f"safety + shard headers (median of {args.rounds}):     {statistics.median(headers):6.3f} s"
        )
        print(
            f"... + architecture check (median of {args.rounds}):   {statistics.median(full):6.3f} s"
        )
        print(
            f"architecture check alone:                   "
            f"{statistics.median(full) - statistics.median(headers):6.3f} s"
        )

        # What the model picker pays per rescan once the folder was inspected (InspectionCache).
        from engine_mlx.inspections import InspectionCache

        cache = InspectionCache()
        cache.inspect(folder)
        again = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            cache.inspect(folder)
            again.append(time.perf_counter() - start)
        print(
            f"a rescan of the unchanged folder (median):  {statistics.median(again) * 1000:6.2f} ms "
            f"(×{statistics.median(again) / statistics.median(full):.4f} of a full inspection)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
