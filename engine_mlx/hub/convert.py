"""Original-release tensors -> the layout mlx-vlm's converter writes, using mlx-vlm's own code.

``mlx_vlm.convert`` loads a release, runs ``Model.sanitize`` (names, conv layout, norm offsets), the
vision tower's ``sanitize`` (the Conv3d patch embedding to channels-last), casts floating tensors to
the release's dtype (``cast_predicate``) and leaves the vision tower unquantized. The graft runs the
same functions on the fetched tensors alone; ``Model.sanitize`` only reads ``self.config``, so it is
called on a stand-in holding the parsed config instead of a model built with hundreds of billions of
parameters. This is the one place that relies on that detail; tests/test_hub.py pins it by comparing
a graft with a real ``mlx_vlm.convert`` output tensor for tensor.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx

from engine_mlx.runtime_imports import ensure_runtime_imported


def _arch(config: dict):
    ensure_runtime_imported()
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    # never with a model_path: nothing is imported from a folder
    arch, _ = get_model_and_args(config)
    cfg = dict(config)
    cfg.setdefault("text_config", {})
    cfg.setdefault("vision_config", {})
    model_config = arch.ModelConfig.from_dict(cfg)
    model_config = update_module_configs(model_config, arch, cfg, ["text", "vision"])
    return arch, model_config


def conversion_dtype(config: dict):
    """The dtype mlx_vlm.convert casts to: the release's ``torch_dtype`` (or its text config's ``dtype``)."""
    ensure_runtime_imported()
    from mlx_vlm.utils import MODEL_CONVERSION_DTYPES

    dtype = config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return getattr(mx, dtype) if dtype in MODEL_CONVERSION_DTYPES else None


def convert_vision(raw: dict[str, mx.array], source_config: dict) -> dict[str, mx.array]:
    """``model.visual.*`` tensors of the release -> ``vision_tower.*`` as mlx_vlm.convert saves them."""
    from mlx_vlm.utils import sanitize_weights

    arch, model_config = _arch(source_config)
    weights = arch.Model.sanitize(SimpleNamespace(config=model_config), dict(raw))
    weights = sanitize_weights(arch.VisionModel, weights, model_config.vision_config)
    weights = {k: v for k, v in weights.items() if k.startswith("vision_tower.")}
    dtype = conversion_dtype(source_config)
    if dtype is not None:
        weights = {
            k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v
            for k, v in weights.items()
        }
    return weights


def split_mtp(source_dir: Path, out_dir: Path, quantization: dict | None) -> Path:
    """Write the MTP drafter as ``mlx_vlm.convert --mtp`` does, from a folder holding the release's
    ``mtp.*`` tensors and its config (mlx-vlm's own splitter; quantized like the base model)."""
    import json

    ensure_runtime_imported()
    from mlx_vlm.speculative.drafters.mtp_split import get_mtp_splitter

    config = json.loads((source_dir / "config.json").read_text())
    splitter = get_mtp_splitter(source_config=config)
    if splitter is None:
        raise ValueError(f"mlx-vlm has no MTP drafter for model type {config.get('model_type')!r}")
    q = quantization or {}
    with contextlib.redirect_stdout(io.StringIO()):
        return splitter.split(
            str(source_dir),
            str(out_dir),
            q_bits=q.get("bits") if q else None,
            q_group_size=q.get("group_size", 64),
        )
