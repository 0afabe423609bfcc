"""Where a model's multi-token-prediction (MTP) head is, found without loading it.

Three places hold one, in this order:

- ``<model>/mtp/``: a drafter folder in mlx-vlm's layout (``mlx_vlm.convert --mtp``'s split output,
  what ``add-vision --mtp`` writes), a ``config.json`` of ``model_type`` ``qwen3_5_mtp`` and its
  safetensors;
- ``mtp.*`` tensors inside the checkpoint itself, where a conversion kept them;
- a drafter folder named on the command line (``--mtp-from DIR``), in the same layout as ``mtp/``.

A drafter folder is untrusted input like a model folder: the same safety rules apply (no code named
or shipped, nothing outside the folder read), its safetensors headers must be whole, and its hidden
size must be the model's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from engine_mlx.errors import CheckpointError

MTP_FOLDER = "mtp"  # what add-vision --mtp writes beside the model's weights
MTP_PREFIX = "mtp."  # the head's tensors inside a checkpoint
DRAFTER_MODEL_TYPE = "qwen3_5_mtp"  # mlx-vlm's Qwen3.5 MTP drafter


class MtpMode(str, Enum):
    """Speculative decoding with the head (engine_mlx.speculative)."""

    AUTO = "auto"  # draft while it pays, with k chosen from the measured acceptance
    ON = "on"  # draft whatever the acceptance
    OFF = "off"


class MtpSource(str, Enum):
    FOLDER = "folder"  # <model>/mtp/
    EMBEDDED = "embedded"  # mtp.* tensors in the checkpoint
    DRAFTER = "drafter"  # a standalone drafter folder (--mtp-from)


@dataclass(frozen=True)
class MtpHead:
    """A model's MTP head: where it is and what it weighs."""

    source: MtpSource
    path: Path  # the drafter folder, or the model folder for an embedded head
    layers: int  # MTP decoder layers (Qwen3.5 ships one)
    weight_bytes: int  # the head's own tensor bytes, as stored (it shares the model's embeddings)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source.value,
            "path": str(self.path),
            "layers": self.layers,
            "weight_bytes": self.weight_bytes,
        }


def _mtp_layers(text: dict[str, Any]) -> int:
    count = text.get("mtp_num_hidden_layers", text.get("num_nextn_predict_layers", 1))
    return count if isinstance(count, int) and count > 0 else 1


def embedded_head(
    folder: Path, config: dict[str, Any], tensors: list[tuple[str, int]]
) -> MtpHead | None:
    """The head in the checkpoint's own ``mtp.*`` tensors (``tensors``: (name, bytes)), if any."""
    own = [nbytes for name, nbytes in tensors if name.startswith(MTP_PREFIX)]
    if not own:
        return None
    text = config.get("text_config")
    text = text if isinstance(text, dict) else config
    return MtpHead(MtpSource.EMBEDDED, folder, _mtp_layers(text), sum(own))


def inspect_drafter(
    folder: Path, hidden_size: int | None, source: MtpSource = MtpSource.DRAFTER
) -> MtpHead:
    """A drafter folder checked without loading it; CheckpointError says what is wrong with it.

    ``hidden_size`` is the target model's: a drafter made for another model is refused.
    """
    from engine_mlx.checkpoint import (
        _read_json,
        _read_safetensors_header,
        _weight_shards,
        check_folder_safety,
    )

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise CheckpointError(
            folder, f"{what}; choose the MTP drafter's folder (the one with config.json)"
        )
    check_folder_safety(folder)
    try:
        config = _read_json(folder / "config.json")
    except FileNotFoundError:
        raise CheckpointError(
            folder, "has no config.json; it is not an MTP drafter folder"
        ) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(
            folder, f"config.json cannot be read ({e}); copy the drafter again"
        ) from None
    if not isinstance(config, dict) or config.get("model_type") != DRAFTER_MODEL_TYPE:
        shown = config.get("model_type") if isinstance(config, dict) else None
        raise CheckpointError(
            folder,
            f"is not a Qwen3.5 MTP drafter (model_type {shown!r}, not {DRAFTER_MODEL_TYPE!r}); "
            "split one with add-vision --mtp or mlx_vlm.convert --mtp",
        )
    text = config.get("text_config")
    if not isinstance(text, dict):
        raise CheckpointError(folder, "config.json has no text_config; copy the drafter again")
    own_hidden = text.get("hidden_size")
    if hidden_size is not None and own_hidden != hidden_size:
        raise CheckpointError(
            folder,
            f"is an MTP drafter for another model (hidden size {own_hidden}, the model's is "
            f"{hidden_size}); use the drafter made for this model",
        )
    shards = _weight_shards(folder, folder.resolve())
    nbytes = sum(
        t.nbytes for rel, shard in shards for t in _read_safetensors_header(folder, shard, rel)
    )
    return MtpHead(source, folder, _mtp_layers(text), nbytes)


def find_head(
    folder: Path, config: dict[str, Any], tensors: list[tuple[str, int]]
) -> MtpHead | None:
    """The model's own head: its ``mtp/`` folder first, else ``mtp.*`` tensors; None when it has
    none. A damaged ``mtp/`` folder raises CheckpointError (the model is fine, the head is not: the
    message names the folder)."""
    sub = folder / MTP_FOLDER
    if sub.is_dir():
        text = config.get("text_config")
        text = text if isinstance(text, dict) else config
        hidden = text.get("hidden_size")
        return inspect_drafter(sub, hidden if isinstance(hidden, int) else None, MtpSource.FOLDER)
    return embedded_head(folder, config, tensors)


def read_config(folder: Path) -> dict[str, Any]:
    """A drafter folder's config.json (already checked by :func:`inspect_drafter`)."""
    data = json.loads((folder / "config.json").read_text())
    return data if isinstance(data, dict) else {}
