"""Test fixture: the tiny release converted and laid out the ways users get a model.

The real converters (``mlx_vlm.convert``, ``mlx_lm.convert``) write one shard for a tiny model;
``convert_release`` patches their ``make_shards`` to split at a byte limit, so the conversions get a
real index. That patch of a library internal is why this lives with the tests, not in ``engine_mlx``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine_mlx.hf_cache import BLOBS, REFS, SNAPSHOTS, repo_folder
from engine_mlx.tiny_release import write_json, write_shards


def prune_experts(release_dir: Path | str, out_dir: Path | str, keep: int) -> Path:
    """A copy of a release that keeps only the first ``keep`` routed experts of every MoE layer (and router rows).

    This is what expert-pruned community builds do before converting (e.g. 397 of 512 experts).
    """
    import mlx.core as mx

    src, out = Path(release_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text())
    have = config["text_config"]["num_experts"]
    if not 0 < keep < have:
        raise ValueError(f"keep must be between 1 and {have - 1}, got {keep}")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    weights: dict = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(mx.load(str(src / shard)))
    for key, value in list(weights.items()):
        if key.endswith((".experts.gate_up_proj", ".experts.down_proj", ".mlp.gate.weight")):
            weights[key] = value[:keep]
    config["text_config"]["num_experts"] = keep
    config["text_config"]["num_experts_per_tok"] = min(
        config["text_config"]["num_experts_per_tok"], keep
    )
    write_shards(out, weights, len(set(index["weight_map"].values())))
    for item in src.iterdir():
        if item.name != "config.json" and not item.name.startswith("model"):
            shutil.copy2(item, out / item.name)
    write_json(out / "config.json", config)
    return out


# --- conversions and layouts, made the way users get them -----------------------------------------


def _shards_by_bytes(max_bytes: int):
    """The converters' ``make_shards`` with a byte limit instead of whole gigabytes."""

    def make_shards(weights: dict, max_file_size_gb: int = 5) -> list:
        shards: list[dict] = []
        size = 0
        for key, value in weights.items():
            if not shards or size + value.nbytes > max_bytes:
                shards.append({})
                size = 0
            shards[-1][key] = value
            size += value.nbytes
        return shards

    return make_shards


def convert_release(
    release_dir: Path | str,
    out_dir: Path | str,
    *,
    vision: bool,
    dtype: str | None = None,
    q_mode: str | None = None,
    q_bits: int | None = None,
    q_group_size: int | None = None,
    recipe: str | Callable | None = None,
    shard_bytes: int | None = None,
) -> Path:
    """Convert a release with the real converter users run: ``mlx_vlm.convert`` or (text-only) ``mlx_lm.convert``.

    ``dtype`` None keeps the release's (bfloat16); ``q_mode`` None leaves the weights unquantized;
    ``recipe`` is an mlx-lm/mlx-vlm mixed-precision recipe (``mixed_4_6``...) or a quantization
    predicate ``(path, module) -> bool | {"bits": .., "group_size": ..}`` as community builds use. ``shard_bytes`` makes the
    converter split its output at that many bytes instead of 5 GB, so a tiny model gets a real index.
    """
    import contextlib
    import io
    from unittest import mock

    out = Path(out_dir)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if q_mode is not None or recipe is not None:
        kwargs.update(quantize=True, q_mode=q_mode or "affine", quant_predicate=recipe)
        if q_bits is not None:
            kwargs["q_bits"] = q_bits
        if q_group_size is not None:
            kwargs["q_group_size"] = q_group_size
    if vision:
        import mlx_vlm.utils as lib
        from mlx_vlm.convert import convert

        kwargs["trust_remote_code"] = False
    else:
        import mlx_lm.utils as lib
        from mlx_lm.convert import convert
    patch = (
        mock.patch.object(lib, "make_shards", _shards_by_bytes(shard_bytes))
        if shard_bytes
        else contextlib.nullcontext()
    )
    with patch, contextlib.redirect_stdout(io.StringIO()):  # the converters print [INFO] lines
        convert(str(release_dir), str(out), **kwargs)
    return out


def place_in_hf_cache(
    folder: Path | str, hub_dir: Path | str, repo_id: str, revision: str | None = None
) -> Path:
    """Lay ``folder``'s files out as ``huggingface_hub`` downloads them; returns the snapshot folder.

    ``hub_dir/models--org--name/`` gets ``blobs/<sha256>`` for every file, ``snapshots/<revision>/``
    with relative symlinks into ``../../blobs`` and ``refs/main`` naming the revision.
    """
    src = Path(folder)
    repo = repo_folder(repo_id, Path(hub_dir))
    revision = revision or hashlib.sha1(repo_id.encode()).hexdigest()
    blobs, snapshot = repo / BLOBS, repo / SNAPSHOTS / revision
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.rglob("*")):
        if not item.is_file():
            continue
        digest = hashlib.sha256(item.read_bytes()).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            shutil.copy2(item, blob)
        link = snapshot / item.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / REFS).mkdir(exist_ok=True)
    (repo / REFS / "main").write_text(revision)
    return snapshot


def place_in_lmstudio(
    folder: Path | str, models_dir: Path | str, publisher: str, name: str
) -> Path:
    """Copy ``folder`` to LM Studio's ``models/<publisher>/<name>/`` layout; returns the model folder."""
    target = Path(models_dir) / publisher / name
    shutil.copytree(folder, target)
    return target
