"""mtp_head: a model's MTP head found in its mtp/ folder, in its own mtp.* tensors, or in a drafter
folder named with --mtp-from; real folders (the tiny model, mlx-vlm's drafter layout) in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from engine_mlx.checkpoint import inspect_checkpoint
from engine_mlx.errors import CheckpointError
from engine_mlx.mtp_head import MtpSource, inspect_drafter
from engine_mlx.tiny_mtp import new_head, write_head
from tests.test_checkpoint import TEXT_CONFIG, make_model

TINY_HIDDEN = 128


@pytest.fixture(scope="module")
def drafter_dir(tiny_text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random head for the tiny model in mlx-vlm's split-drafter layout."""
    return write_head(
        tiny_text_model_dir, new_head(tiny_text_model_dir), tmp_path_factory.mktemp("drafter")
    )


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("mtp"))
    return dst


def test_a_model_without_a_head(tiny_text_model_dir: Path) -> None:
    info = inspect_checkpoint(tiny_text_model_dir)
    assert info.mtp is None and info.mtp_error is None


def test_head_in_the_mtp_folder(
    tiny_text_model_dir: Path, drafter_dir: Path, tmp_path: Path
) -> None:
    model = _copy(tiny_text_model_dir, tmp_path / "model")
    shutil.copytree(drafter_dir, model / "mtp")

    info = inspect_checkpoint(model)

    assert info.mtp is not None
    assert info.mtp.source is MtpSource.FOLDER
    assert info.mtp.path == model / "mtp"
    assert info.mtp.layers == 1
    assert info.mtp.weight_bytes == (drafter_dir / "model.safetensors").stat().st_size - _header(
        drafter_dir
    )


def _header(folder: Path) -> int:
    with (folder / "model.safetensors").open("rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def test_head_inside_the_checkpoint(tmp_path: Path) -> None:
    tensors = {
        "model.embed_tokens.weight": np.zeros((4, 8), np.float32),
        "mtp.fc.weight": np.zeros((8, 16), np.float32),
        "mtp.norm.weight": np.ones(8, np.float32),
    }
    folder = make_model(
        tmp_path / "m",
        tensors=tensors,
        config_extra={"text_config": {**TEXT_CONFIG, "mtp_num_hidden_layers": 1}},
    )

    info = inspect_checkpoint(folder, check_tensors=False)

    assert info.mtp is not None and info.mtp.source is MtpSource.EMBEDDED
    assert info.mtp.path == folder
    assert info.mtp.weight_bytes == (8 * 16 + 8) * 4


def test_a_damaged_mtp_folder_leaves_the_model_usable(
    tiny_text_model_dir: Path, tmp_path: Path
) -> None:
    model = _copy(tiny_text_model_dir, tmp_path / "model")
    (model / "mtp").mkdir()
    (model / "mtp" / "config.json").write_text(
        json.dumps({"model_type": "qwen3_5_mtp", "text_config": {"hidden_size": TINY_HIDDEN}})
    )
    (model / "mtp" / "model.safetensors").write_bytes(b"\x10\x00")

    info = inspect_checkpoint(model)

    assert info.mtp is None
    assert info.mtp_error is not None and "model.safetensors is truncated" in info.mtp_error


def test_standalone_drafter(drafter_dir: Path) -> None:
    head = inspect_drafter(drafter_dir, TINY_HIDDEN)
    assert head.source is MtpSource.DRAFTER and head.path == drafter_dir and head.layers == 1


def test_drafter_for_another_model_is_refused(drafter_dir: Path) -> None:
    with pytest.raises(
        CheckpointError, match=r"for another model \(hidden size 128, the model's is 64\)"
    ):
        inspect_drafter(drafter_dir, 64)


def test_a_model_folder_is_not_a_drafter(tiny_text_model_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="is not a Qwen3.5 MTP drafter"):
        inspect_drafter(tiny_text_model_dir, TINY_HIDDEN)


def test_missing_drafter_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist; choose the MTP drafter's folder"):
        inspect_drafter(tmp_path / "nope", TINY_HIDDEN)


def test_drafter_folder_with_code_is_refused(drafter_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(drafter_dir, tmp_path / "d")
    (folder / "modeling.py").write_text("print('owned')\n")
    with pytest.raises(CheckpointError, match="holds Python code"):
        inspect_drafter(folder, TINY_HIDDEN)


def test_drafter_folder_linking_outside_is_refused(drafter_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    shutil.copy(drafter_dir / "config.json", folder)
    outside = tmp_path / "elsewhere.safetensors"
    save_file({"fc.weight": np.zeros((2, 2), np.float32)}, str(outside))
    os.symlink(outside, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="links outside the model folder"):
        inspect_drafter(folder, TINY_HIDDEN)


def test_models_json_shows_the_head(
    tiny_text_model_dir: Path, drafter_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    with_head = _copy(tiny_text_model_dir, root / "with-head")
    shutil.copytree(drafter_dir, with_head / "mtp")
    _copy(tiny_text_model_dir, root / "without")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "HOME": str(tmp_path)}

    out = subprocess.run(
        [sys.executable, "-m", "engine_mlx", "models", "--json", "--dir", str(root)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )

    rows = {Path(r["path"]).name: r for r in json.loads(out.stdout)}
    assert rows["with-head"]["mtp"]["source"] == "folder"
    assert rows["with-head"]["mtp"]["path"] == str(with_head / "mtp")
    assert rows["without"]["mtp"] is None
