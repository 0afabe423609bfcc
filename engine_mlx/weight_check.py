"""Do a checkpoint's tensors fit the architecture its config.json describes? Checked without reading them.

The loader that will load the folder (mlx-vlm for vision checkpoints, mlx-lm for text-only ones)
builds the model from config.json, sanitizes and quantizes it as it would for a real load, and
attaches the shards lazily: ``mx.load`` reads only their headers. Its strict ``load_weights`` names
missing, unexpected and wrongly shaped tensors exactly as the real load would; this module turns
those into one sentence naming the tensor and its file. That wording is mlx's own
(``mlx.nn.Module.load_weights``), parsed only here and pinned by tests/test_model_folder_safety.py.
Dtypes are checked on the lazily attached arrays: packed quantized weights must be uint32, and every
other tensor floating point (micro-scaling formats keep uint8 scales).

Call only after :func:`engine_mlx.checkpoint.check_folder_safety` (the loaders import a
``model_file`` the folder names) and the shard header checks (a truncated shard would fail later).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from .errors import CheckpointError
from .runtime_imports import ensure_runtime_imported

# mlx.nn.Module.load_weights(strict=True) messages.
_EXTRA = re.compile(r"Received (\d+) parameters not in model: \n(.*)\.\Z", re.DOTALL)
_MISSING = re.compile(r"Missing (\d+) parameters: \n(.*)\.\Z", re.DOTALL)
_SHAPE = re.compile(r"Expected shape \((.*)\) but received shape \((.*)\) for parameter (\S+)\Z")


def _lazy_model(folder: Path, is_vision: bool) -> Any:
    ensure_runtime_imported()
    if is_vision:
        from mlx_vlm.utils import load_model

        return load_model(folder, lazy=True)
    from mlx_lm.utils import load_model as lm_load_model

    model, _config = lm_load_model(folder, lazy=True, strict=True)
    return model


def shard_for(name: str, shard_of: Mapping[str, str]) -> str | None:
    """The shard holding ``name``: stored under that name, or under the name the loader's sanitize
    renamed it from (``model.language_model.x`` -> ``language_model.model.x``): the stored name
    with the longest common dotted suffix, if only one has it."""
    if name in shard_of:
        return shard_of[name]
    parts = name.split(".")
    for start in range(1, len(parts) - 1):  # suffixes of at least two parts, longest first
        suffix = "." + ".".join(parts[start:])
        hits = {shard for stored, shard in shard_of.items() if stored.endswith(suffix)}
        if hits:
            return hits.pop() if len(hits) == 1 else None
    return None


def _listed(names: str, count: int) -> tuple[str, str]:
    first = names.split(",\n")[0].strip()
    more = f" ({count - 1} more like it)" if count > 1 else ""
    return first, more


def _reason(message: str, shard_of: Mapping[str, str]) -> str:
    if m := _MISSING.match(message):
        first, more = _listed(m.group(2), int(m.group(1)))
        return (
            f"tensor {first} is missing from the weight files{more}; the checkpoint is incomplete "
            "or does not match its config.json"
        )
    if m := _EXTRA.match(message):
        first, more = _listed(m.group(2), int(m.group(1)))
        where = shard_for(first, shard_of)
        holder = f"weight file {where}" if where else "the weight files"
        return (
            f"{holder} holds tensor {first}, which the architecture in config.json does not "
            f"have{more}; the weights do not match config.json"
        )
    if m := _SHAPE.match(message):
        want, got, name = m.groups()
        where = shard_for(name, shard_of) or "the weight files"
        return (
            f"tensor {name} in {where} has shape ({got}), but config.json needs ({want}); "
            "the weights do not match config.json"
        )
    first_line = message.strip().splitlines()[0] if message.strip() else "no detail"
    if "not supported" in first_line:  # e.g. "Model type qwen3_5_text not supported."
        return f"the installed loader cannot build the model config.json describes ({first_line})"
    return f"its weights do not match config.json ({first_line})"


def _quantized_modules(model: Any) -> dict[str, str]:
    """Module path -> quantization mode, for every module the loader quantized."""
    return {
        path: str(getattr(module, "mode", "affine"))
        for path, module in model.named_modules()
        if isinstance(getattr(module, "bits", None), int) and hasattr(module, "group_size")
    }


def _dtype_problem(model: Any) -> tuple[str, str, str] | None:
    """(tensor, stored dtype, what it must be) for the first tensor of a wrong dtype."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    quantized = _quantized_modules(model)
    for name, value in cast("list[tuple[str, Any]]", tree_flatten(model.parameters())):
        module, _, leaf = name.rpartition(".")
        mode = quantized.get(module)
        if mode is not None and leaf == "weight":
            need, ok = "uint32 (packed quantized weights)", value.dtype == mx.uint32
        elif mode is not None and mode != "affine" and leaf == "scales":
            need, ok = f"uint8 ({mode} scales)", value.dtype == mx.uint8
        else:
            need, ok = "floating point", mx.issubdtype(value.dtype, mx.floating)
        if not ok:
            return name, str(value.dtype).removeprefix("mlx.core."), need
    return None


def check_tensors(folder: Path, is_vision: bool, shard_of: Mapping[str, str]) -> None:
    """Raise CheckpointError if the shards' tensors do not fit the architecture of config.json.

    ``shard_of`` maps each stored tensor name to the shard that holds it (for the messages).
    """
    try:
        model = _lazy_model(folder, is_vision)
    except ValueError as e:
        raise CheckpointError(folder, _reason(str(e), shard_of)) from None
    except KeyError as e:
        key = e.args[0] if e.args else None
        if isinstance(key, str) and "." in key:  # a tensor name (config keys have no dots)
            reason = _reason(f"Missing 1 parameters: \n{key}.", shard_of)
        else:
            reason = f"config.json does not describe a model the loader can build (missing {key!r})"
        raise CheckpointError(folder, reason) from None
    except (RuntimeError, OSError) as e:
        raise CheckpointError(folder, f"the loader could not read its weights ({e})") from None
    except (TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(
            folder,
            f"config.json does not describe a model the loader can build ({type(e).__name__}: {e})",
        ) from None
    if is_vision and getattr(model, "vision_tower", None) is None:
        raise CheckpointError(
            folder,
            "config.json has a vision_config but the weight files hold no vision tower "
            "(model.visual.* / vision_tower.*); the checkpoint is incomplete",
        )
    if problem := _dtype_problem(model):
        name, stored, need = problem
        where = shard_for(name, shard_of) or "the weight files"
        raise CheckpointError(
            folder,
            f"tensor {name} in {where} is stored as {stored}, but it must be {need}; "
            "the file is damaged or from an incompatible converter",
        )
