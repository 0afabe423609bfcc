"""An MTP head for the tiny model, written as mlx-vlm's split drafter (``<model>/mtp/``).

``write_head`` writes the head with the given (or random) weights; ``train_head`` fits it to the tiny
model's own greedy continuations, so speculative decoding sees real acceptance in tests and
benchmarks: the drafter at position t sees the target's last hidden state and token t+1 and learns
token t+2, exactly what mlx-vlm's drafter is asked at run time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine_mlx.mtp_head import DRAFTER_MODEL_TYPE, MTP_FOLDER
from engine_mlx.runtime_imports import ensure_runtime_imported


def _text_config(model_dir: Path) -> dict[str, Any]:
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    return {k: v for k, v in text.items() if k not in ("quantization", "quantization_config")}


def new_head(model_dir: Path, *, seed: int = 0) -> Any:
    """A randomly initialised mlx-vlm Qwen3.5 MTP drafter shaped for the model in ``model_dir``."""
    ensure_runtime_imported()
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_vlm.speculative.drafters.qwen3_5_mtp import Qwen3_5MTPDraftModel
    from mlx_vlm.speculative.drafters.qwen3_5_mtp.config import Qwen3_5MTPConfig

    mx.random.seed(seed)
    head = Qwen3_5MTPDraftModel(Qwen3_5MTPConfig.from_dict({"text_config": _text_config(model_dir)}))
    head.update(tree_map(lambda p: p * 0.5 if p.ndim > 1 else p, head.parameters()))
    mx.eval(head.parameters())
    return head


def write_head(model_dir: Path, head: Any, out_dir: Path | None = None) -> Path:
    """Save ``head`` in mlx-vlm's drafter layout, by default as ``model_dir/mtp``; returns the folder."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    out = out_dir or (model_dir / MTP_FOLDER)
    out.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(head.parameters()))
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    text = _text_config(model_dir)
    config = {
        "model_type": DRAFTER_MODEL_TYPE,
        "text_config": text,
        "block_size": int(head.config.block_size),
        "tie_word_embeddings": bool(text.get("tie_word_embeddings", False)),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return out
