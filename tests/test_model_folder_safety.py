"""A model folder never runs code, nothing outside it is read, and broken weights are named precisely.

Every folder here starts as a real conversion of the tiny model (mlx-vlm's for vision, mlx-lm's for
text-only), in the layouts users have (plain, split over 3 shards, the Hugging Face cache), and is
then damaged. Each damage goes through ``inspect_checkpoint``, ``python -m engine_mlx models --json``
(a real process) and the load path (``Engine.load``, and ``LoadedModel.load`` on its own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from engine_mlx.checkpoint import containment_root, discover_models, inspect_checkpoint
from engine_mlx.errors import CheckpointError

KINDS = ("vision", "text")
QKV = "language_model.model.layers.0.linear_attn.in_proj_qkv.weight"  # U32 [256, 16], 4-bit
NORM = "language_model.model.layers.0.input_layernorm.weight"  # F32 [128]
PATCH = "vision_tower.blocks.0.norm1.weight"  # F32 [64] in the vision tower
PATCH_SHAPE = [8, 8]
INDEX = "model.safetensors.index.json"
# Python that leaves a trace if anything ever imports it.
EVIL = "from pathlib import Path\nPath({marker!r}).write_text('code from the model folder ran')\n"


# ----------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Clean tiny conversions: mlx-vlm's vision checkpoint and mlx-lm's text-only one."""
    from engine_mlx.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("converted")
    return {
        "vision": build_tiny_model(root / "vision"),
        "text": build_tiny_model(root / "text", vision=False),
    }


def read_header(shard: Path) -> dict:
    data = shard.read_bytes()
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])


def rewrite_header(shard: Path, edit: Callable[[dict], None]) -> None:
    """Edit a shard's JSON header in place, keeping its tensor bytes."""
    data = shard.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    shard.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + size :])


def split_into_shards(folder: Path, count: int = 3) -> None:
    """Re-save the weights as the converters do for big models: count shards and an index."""
    tensors = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i in range(count):
        shard = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::count]}
        save_file(part, str(folder / shard), metadata={"format": "mlx"})
        weight_map.update(dict.fromkeys(part, shard))
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def shard_holding(folder: Path, tensor: str) -> Path:
    return folder / json.loads((folder / INDEX).read_text())["weight_map"][tensor]


def hf_cache_repo(source: Path, hub: Path, repo_id: str, revision: str = "0" * 40) -> Path:
    """``source`` laid out as huggingface_hub caches it: blobs/, snapshots/<rev>/ of relative links."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, file in enumerate(sorted(p for p in source.iterdir() if p.is_file())):
        blob = repo / "blobs" / f"{i:040x}"
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------ damage


@dataclass(frozen=True)
class Damage:
    """One way to damage a clean folder; ``expect`` are the parts of the one-line refusal."""

    name: str
    apply: Callable[[Path, Path], None]  # (folder, marker file) -> None
    expect: tuple[str, ...]
    sharded: bool = False  # applied to the 3-shard layout
    kinds: tuple[str, ...] = KINDS


def _model_file_beside(folder: Path, marker: Path) -> None:
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    edit_json(folder / "config.json", lambda c: c.update(model_file="evil.py"))


def _model_file_in_subfolder(folder: Path, marker: Path) -> None:
    (folder / "code").mkdir()
    (folder / "code" / "evil.py").write_text(EVIL.format(marker=str(marker)))
    edit_json(folder / "config.json", lambda c: c.update(model_file="code/evil.py"))


def _auto_map_config(folder: Path, marker: Path) -> None:
    (folder / "code").mkdir()
    (folder / "code" / "configuration_evil.py").write_text(EVIL.format(marker=str(marker)))
    edit_json(
        folder / "config.json",
        lambda c: c.update(auto_map={"AutoConfig": "code.configuration_evil.EvilConfig"}),
    )


def _auto_map_tokenizer(folder: Path, marker: Path) -> None:
    edit_json(
        folder / "tokenizer_config.json",
        lambda c: c.update(auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}),
    )


def _auto_map_processor(folder: Path, marker: Path) -> None:
    edit_json(
        folder / "preprocessor_config.json",
        lambda c: c.update(auto_map={"AutoImageProcessor": "image_processing_evil.Evil"}),
    )


def _foreign_tool_parser(folder: Path, marker: Path) -> None:
    edit_json(folder / "tokenizer_config.json", lambda c: c.update(tool_parser_type="evil"))


def _stray_python(folder: Path, marker: Path) -> None:
    (folder / "modeling_qwen3_5_moe.py").write_text(EVIL.format(marker=str(marker)))


def _index_points_outside(folder: Path, marker: Path) -> None:
    outside = folder.parent / f"{folder.name}-elsewhere.safetensors"
    (folder / "model.safetensors").rename(outside)
    edit_json(
        folder / INDEX,
        lambda i: i.update(weight_map=dict.fromkeys(i["weight_map"], f"../{outside.name}")),
    )


def _shard_links_outside(folder: Path, marker: Path) -> None:
    outside = folder.parent / f"{folder.name}-linked.safetensors"
    (folder / "model.safetensors").rename(outside)
    (folder / "model.safetensors").symlink_to(outside)


def _tensor_missing(folder: Path, marker: Path) -> None:
    shard = shard_holding(folder, QKV)
    tensors = load_file(str(shard))
    del tensors[QKV]
    save_file(tensors, str(shard), metadata={"format": "mlx"})
    edit_json(folder / INDEX, lambda i: i["weight_map"].pop(QKV))


def _tensor_missing_from_its_shard(folder: Path, marker: Path) -> None:
    shard = shard_holding(folder, QKV)
    tensors = load_file(str(shard))
    del tensors[QKV]
    save_file(tensors, str(shard), metadata={"format": "mlx"})


def _tensor_extra(folder: Path, marker: Path) -> None:
    shard = shard_holding(folder, NORM)
    tensors = load_file(str(shard))
    tensors["language_model.model.layers.0.stowaway.weight"] = tensors[NORM]
    save_file(tensors, str(shard), metadata={"format": "mlx"})
    edit_json(
        folder / INDEX,
        lambda i: i["weight_map"].update(
            {"language_model.model.layers.0.stowaway.weight": shard.name}
        ),
    )


def _packed_weight_as_float(folder: Path, marker: Path) -> None:
    rewrite_header(shard_holding(folder, QKV), lambda h: h[QKV].update(dtype="F32"))


def _norm_as_integer(folder: Path, marker: Path) -> None:
    rewrite_header(shard_holding(folder, NORM), lambda h: h[NORM].update(dtype="I32"))


def _wrong_shape(folder: Path, marker: Path) -> None:
    rewrite_header(shard_holding(folder, QKV), lambda h: h[QKV].update(shape=[16, 256]))


def _vision_shape(folder: Path, marker: Path) -> None:
    """A shape the loader itself compares (a float tensor, not inferred from the packing)."""
    rewrite_header(shard_holding(folder, PATCH), lambda h: h[PATCH].update(shape=PATCH_SHAPE))


def _offsets_gap(folder: Path, marker: Path) -> None:
    def shift(header: dict) -> None:
        begin, end = header[QKV]["data_offsets"]
        header[QKV]["data_offsets"] = [begin + 4, end + 4]

    rewrite_header(shard_holding(folder, QKV), shift)


def _truncated(folder: Path, marker: Path) -> None:
    shard = shard_holding(folder, QKV)
    shard.write_bytes(shard.read_bytes()[:-100])


def _unknown_dtype(folder: Path, marker: Path) -> None:
    rewrite_header(shard_holding(folder, NORM), lambda h: h[NORM].update(dtype="F8_E5M2"))


def _no_vision_tower(folder: Path, marker: Path) -> None:
    """A vision config over text-only weights: mlx-vlm would quietly drop the tower."""
    weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
    for shard in sorted(set(weight_map.values())):
        tensors = load_file(str(folder / shard))
        kept = {k: v for k, v in tensors.items() if not k.startswith("vision_tower.")}
        save_file(kept, str(folder / shard), metadata={"format": "mlx"})
    edit_json(
        folder / INDEX,
        lambda i: i.update(
            weight_map={
                k: v for k, v in i["weight_map"].items() if not k.startswith("vision_tower.")
            }
        ),
    )


def _stray_shard(folder: Path, marker: Path) -> None:
    """A leftover shard the index does not name: mlx-lm loads every model*.safetensors anyway."""
    shard = folder / "model-leftover.safetensors"
    save_file(load_file(str(shard_holding(folder, NORM))), str(shard), metadata={"format": "mlx"})
    shard.write_bytes(shard.read_bytes()[:-8])


DAMAGES = [
    Damage("model_file", _model_file_beside, ("config.json", "model_file", "never runs code")),
    Damage("model_file_subfolder", _model_file_in_subfolder, ("config.json", "model_file")),
    Damage("auto_map_config", _auto_map_config, ("config.json", "auto_map", "never runs code")),
    Damage("auto_map_tokenizer", _auto_map_tokenizer, ("tokenizer_config.json", "auto_map")),
    Damage(
        "auto_map_processor",
        _auto_map_processor,
        ("preprocessor_config.json", "auto_map"),
        kinds=("vision",),
    ),
    Damage("tool_parser_module", _foreign_tool_parser, ("tool_parser_type", "'evil'")),
    Damage("stray_python", _stray_python, ("holds Python code (modeling_qwen3_5_moe.py)",)),
    Damage(
        "index_outside",
        _index_points_outside,
        ("names weight file ../", "outside the model folder"),
    ),
    Damage("shard_link_outside", _shard_links_outside, ("model.safetensors links outside",)),
    Damage(
        "tensor_missing",
        _tensor_missing,
        (f"tensor {QKV} is missing from the weight files",),
        sharded=True,
    ),
    Damage(
        "tensor_missing_from_shard",
        _tensor_missing_from_its_shard,
        (f"tensor {QKV} is missing from model-0000", f"({INDEX} puts it there)"),
        sharded=True,
    ),
    Damage(
        "tensor_extra",
        _tensor_extra,
        ("holds tensor language_model.model.layers.0.stowaway.weight", "does not have"),
        sharded=True,
    ),
    Damage(
        "packed_weight_dtype",
        _packed_weight_as_float,
        (f"tensor {QKV} in model-0000", "stored as float32", "must be uint32"),
        sharded=True,
    ),
    Damage(
        "float_weight_dtype",
        _norm_as_integer,
        (f"tensor {NORM} in model-0000", "stored as int32", "must be floating point"),
        sharded=True,
    ),
    Damage(
        "wrong_shape",
        _wrong_shape,
        (f"tensor {QKV} in model-0000", "has shape [16, 256]", "its scales [256, 2]"),
        sharded=True,
    ),
    Damage(
        "vision_shape",
        _vision_shape,
        (f"tensor {PATCH} in model-0000", "has shape (8, 8), but config.json needs ("),
        sharded=True,
        kinds=("vision",),
    ),
    Damage(
        "no_vision_tower",
        _no_vision_tower,
        ("has a vision_config but", "no vision tower"),
        sharded=True,
        kinds=("vision",),
    ),
    Damage("offsets", _offsets_gap, (f"tensor {QKV} in model-0000", "has offsets"), sharded=True),
    Damage("truncated", _truncated, ("is truncated", "download it again"), sharded=True),
    Damage(
        "stray_shard",
        _stray_shard,
        ("weight shard model-leftover.safetensors is truncated",),
        sharded=True,
    ),
    Damage(
        "unknown_dtype",
        _unknown_dtype,
        (f"tensor {NORM} in model-0000", "dtype F8_E5M2, which MLX cannot load"),
        sharded=True,
    ),
]
CASES = [(d, kind) for d in DAMAGES for kind in d.kinds]


@dataclass(frozen=True)
class Damaged:
    folder: Path
    marker: Path
    damage: Damage


@pytest.fixture(scope="module")
def damaged(converted, tmp_path_factory) -> dict[str, Damaged]:
    """Every damage applied to a fresh copy of a clean conversion, all under one folder."""
    root = tmp_path_factory.mktemp("damaged")
    markers = tmp_path_factory.mktemp("markers")
    out = {}
    for damage, kind in CASES:
        case = f"{damage.name}-{kind}"
        folder = root / case
        shutil.copytree(converted[kind], folder)
        if damage.sharded:
            split_into_shards(folder)
        marker = markers / case
        damage.apply(folder, marker)
        out[case] = Damaged(folder, marker, damage)
    return out


CASE_IDS = [f"{d.name}-{kind}" for d, kind in CASES]


def assert_refusal(reason: str, case: Damaged) -> None:
    assert "\n" not in reason
    for part in case.damage.expect:
        assert part in reason, (part, reason)
    assert not case.marker.exists(), "code from the model folder ran"


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_inspect_refuses(damaged, case_id: str) -> None:
    case = damaged[case_id]
    with pytest.raises(CheckpointError) as error:
        inspect_checkpoint(case.folder)
    assert error.value.path == case.folder
    assert str(error.value) == f"{case.folder}: {error.value.reason}"
    assert_refusal(error.value.reason, case)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_engine_load_refuses(damaged, case_id: str, tmp_path: Path) -> None:
    from engine_mlx.engine import Engine

    case = damaged[case_id]
    engine = Engine(state_dir=tmp_path)
    with pytest.raises(CheckpointError) as error:
        engine.load(case.folder)
    assert error.value.path == case.folder
    assert_refusal(error.value.reason, case)
    assert engine.model_info is None


def test_models_json_lists_every_refusal(damaged, converted, tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MLX_DISABLE_COMPILE": "1",
        "HOME": str(tmp_path / "home"),
        "HF_HUB_CACHE": str(tmp_path / "no-hub"),
    }
    root = next(iter(damaged.values())).folder.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine_mlx",
            "models",
            "--json",
            "--dir",
            str(root),
            "--dir",
            str(converted["vision"]),
            "--dir",
            str(converted["text"]),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = {Path(r["path"]): r for r in json.loads(result.stdout)}
    for case in damaged.values():
        row = rows[case.folder]
        assert row["error"] and "name" not in row, row
        assert_refusal(row["error"], case)
    for kind in KINDS:  # the clean conversions are offered
        assert rows[converted[kind]]["error"] is None and rows[converted[kind]]["params"] > 0


def test_chat_refuses_in_one_line(damaged) -> None:
    case = damaged["model_file-vision"]
    result = subprocess.run(
        [sys.executable, "-m", "engine_mlx", "chat", "--model", str(case.folder), "Hello"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MLX_DISABLE_COMPILE": "1"},
    )
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {case.folder}: config.json names Python code to import")
    assert_refusal(line, case)


def test_load_boundary_refuses_a_folder_changed_after_inspection(converted, tmp_path: Path) -> None:
    """LoadedModel.load checks again: the folder may have changed since it was inspected."""
    from engine_mlx.runtime import LoadedModel

    folder = shutil.copytree(converted["text"], tmp_path / "m")
    info = inspect_checkpoint(folder)
    marker = tmp_path / "ran"
    _model_file_beside(folder, marker)

    with pytest.raises(CheckpointError) as error:
        LoadedModel.load(info)

    assert error.value.path == folder and "model_file" in error.value.reason
    assert not marker.exists()


# ------------------------------------------------------------------- the holes are real (contract)


def test_mlx_vlm_would_run_a_model_file(converted, tmp_path: Path) -> None:
    """Pins why the refusal exists: the pinned mlx-vlm imports config.json's model_file."""
    from mlx_vlm.utils import get_model_and_args

    folder = shutil.copytree(converted["vision"], tmp_path / "m")
    marker = tmp_path / "ran"
    _model_file_beside(folder, marker)

    get_model_and_args(json.loads((folder / "config.json").read_text()), folder)

    assert marker.exists()


def test_mlx_vlm_would_read_weights_outside_the_folder(converted, tmp_path: Path) -> None:
    """Pins why the index is checked: the pinned mlx-vlm follows an index entry to ../x."""
    from mlx.utils import tree_flatten
    from mlx_vlm.utils import load_model

    folder = shutil.copytree(converted["vision"], tmp_path / "m")
    _index_points_outside(folder, tmp_path / "unused")

    model = load_model(folder, lazy=True)

    assert not (folder / "model.safetensors").exists()
    assert len(tree_flatten(model.parameters())) > 100  # every tensor came from outside


# -------------------------------------------------------------------------------- accepted folders


@pytest.mark.parametrize("kind", KINDS)
def test_clean_conversions_and_three_shards_are_accepted(
    converted, kind: str, tmp_path: Path
) -> None:
    info = inspect_checkpoint(converted[kind])
    sharded = shutil.copytree(converted[kind], tmp_path / "sharded")
    split_into_shards(sharded)
    # Template and tool-parser modules the pinned mlx-lm ships are its own code, not the folder's.
    edit_json(sharded / "tokenizer_config.json", lambda c: c.update(tool_parser_type="qwen3_coder"))

    again = inspect_checkpoint(sharded)

    assert info.is_vision is (kind == "vision")
    assert (again.param_count, again.weight_bytes) == (info.param_count, info.weight_bytes)


@pytest.mark.parametrize("kind", KINDS)
def test_hf_cache_layout_is_accepted(converted, kind: str, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    snapshot = hf_cache_repo(converted[kind], hub, f"mlx-community/Qwen3.5-Tiny-{kind}")
    assert (snapshot / "model.safetensors").is_symlink()
    assert containment_root(snapshot) == snapshot.parent.parent.resolve()

    [found] = discover_models(roots=[], extra_dirs=[hub / snapshot.parent.parent.name])

    assert found.ok, found.error
    assert found.info.name == f"mlx-community/Qwen3.5-Tiny-{kind}"


def test_hf_cache_snapshot_loads(converted, tmp_path: Path) -> None:
    from engine_mlx.engine import Engine

    snapshot = hf_cache_repo(converted["text"], tmp_path / "hub", "org/tiny-text")
    engine = Engine(state_dir=tmp_path / "state")

    info = engine.load(snapshot)

    assert info.name == "org/tiny-text" and engine.model_info == info
    engine.unload()


def test_hf_cache_link_into_another_repo_is_refused(converted, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    other = hf_cache_repo(converted["text"], hub, "org/other")
    snapshot = hf_cache_repo(converted["text"], hub, "org/tiny")
    (snapshot / "model.safetensors").unlink()
    target = os.path.relpath(other / "model.safetensors", snapshot)
    (snapshot / "model.safetensors").symlink_to(target)

    with pytest.raises(CheckpointError) as error:
        inspect_checkpoint(snapshot)

    assert "model.safetensors links outside the model folder" in error.value.reason


# ----------------------------------------------------------------------------------- the app's picker


def test_model_picker_lists_refused_folders_with_the_reason(
    qtbot, qt_wait, damaged, converted, tmp_path, monkeypatch, request
) -> None:
    """The picker shows a refused folder (greyed, not loadable) and the engine's reason; Add folder…
    on a refused folder reports the same line."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QFileDialog, QPushButton

    from app.controllers.models import ModelsController
    from app.paths import app_paths
    from app.store import Store
    from app.views.model_picker import ModelPicker
    from app.workers import EngineClient

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    library = tmp_path / "library"
    library.mkdir()
    refused = damaged["model_file-text"].folder
    (library / refused.name).symlink_to(refused, target_is_directory=True)
    (library / "tiny-text").symlink_to(converted["text"], target_is_directory=True)
    paths = app_paths(tmp_path / "data").ensure()
    store = Store(paths.database, paths.attachments)
    engine = EngineClient(paths.engine_state)
    request.addfinalizer(lambda: (engine.shutdown(), store.close()))
    store.set_pref("model_folders", json.dumps([str(library)]))
    models = ModelsController(store, engine, paths)
    started: list[str] = []
    models.loadStarted.connect(started.append)

    picker = ModelPicker(models)
    qtbot.addWidget(picker)
    qt_wait(lambda: picker.table.rowCount() == 2, 120)

    names = [picker.table.item(r, 0).text() for r in range(2)]
    row = names.index(refused.name)
    assert picker.table.item(row, 4).text().startswith("Refused: ")  # with the reason, in view
    rect = picker.table.visualItemRect(picker.table.item(row, 0))
    qtbot.mouseClick(picker.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    details = picker.details.text()
    assert (
        details.startswith("Refused: ")
        and "config.json names Python code to import (model_file)" in details
    )
    assert not picker.load_button.isEnabled()
    qtbot.mouseDClick(picker.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert started == [] and not damaged["model_file-text"].marker.exists()

    errors: list[str] = []
    models.errorOccurred.connect(errors.append)
    broken = damaged["packed_weight_dtype-text"].folder
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(broken))
    add = next(b for b in picker.findChildren(QPushButton) if b.text() == "Add folder…")
    qtbot.mouseClick(add, Qt.MouseButton.LeftButton)
    qt_wait(lambda: errors, 120)
    assert errors[0].startswith(str(broken)) and f"tensor {QKV}" in errors[0]
    # Remembered, so the picker lists it with the reason (as the README says), and never loads it.
    assert str(broken) in json.loads(store.get_pref("model_folders", "[]"))
    qt_wait(
        lambda: any(
            picker.table.item(r, 0).text() == broken.name for r in range(picker.table.rowCount())
        ),
        120,
    )
    row = next(
        r for r in range(picker.table.rowCount()) if picker.table.item(r, 0).text() == broken.name
    )
    assert f"tensor {QKV}" in picker.table.item(row, 4).text()
    assert started == []


def test_hf_cache_snapshot_that_links_out_of_its_repo_is_refused(converted, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    elsewhere = shutil.copytree(converted["text"], tmp_path / "elsewhere")
    repo = hub / "models--org--tiny"
    (repo / "snapshots").mkdir(parents=True)
    snapshot = repo / "snapshots" / ("1" * 40)
    snapshot.symlink_to(elsewhere, target_is_directory=True)

    with pytest.raises(CheckpointError) as error:
        inspect_checkpoint(snapshot)

    assert "links outside the model folder" in error.value.reason


def test_hf_cache_refs_main_cannot_lead_out_of_snapshots(converted, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    snapshot = hf_cache_repo(converted["text"], hub, "org/tiny")
    shutil.copytree(converted["text"], tmp_path / "elsewhere")
    (snapshot.parent.parent / "refs" / "main").write_text("../../../elsewhere")
    assert (snapshot.parent / "../../../elsewhere" / "config.json").is_file()

    [found] = discover_models(roots=[], extra_dirs=[snapshot.parent.parent])

    assert found.path == snapshot and found.ok  # the snapshot on disk, not the folder named by refs


def test_models_text_lists_refusals_and_hides_other_families_unless_all(
    damaged, converted, tmp_path, monkeypatch, capsys
) -> None:
    from engine_mlx.cli import main

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    library = tmp_path / "library"
    library.mkdir()
    refused = damaged["auto_map_tokenizer-text"].folder
    (library / "refused").symlink_to(refused, target_is_directory=True)
    llama = shutil.copytree(converted["text"], library / "llama")
    edit_json(llama / "config.json", lambda c: c.update(model_type="llama"))

    assert main(["models", "--dir", str(library)]) == 0
    shown = capsys.readouterr().out
    assert f"{library / 'refused'}\n      refused: tokenizer_config.json names Python code" in shown
    assert "llama" not in shown

    assert main(["models", "--all", "--dir", str(library)]) == 0
    assert "refused: architecture llama is not a Qwen3.5-family model" in capsys.readouterr().out


def test_a_model_type_the_text_loader_lacks_is_named(converted, tmp_path: Path) -> None:
    """mlx-lm has no qwen3_5_moe_text module: say so, not that the weights are wrong."""
    folder = shutil.copytree(converted["text"], tmp_path / "m")
    edit_json(folder / "config.json", lambda c: c.update(model_type="qwen3_5_moe_text"))

    with pytest.raises(CheckpointError) as error:
        inspect_checkpoint(folder)

    assert error.value.reason.startswith("the installed loader cannot build the model")
    assert "qwen3_5_moe_text" in error.value.reason


def test_shard_for_follows_the_loaders_renaming() -> None:
    """A tensor named as the loader names it is found under its stored (release) name, if unique."""
    from engine_mlx.weight_check import shard_for

    stored = {
        "model.language_model.layers.0.mlp.gate.weight": "model-00001-of-00003.safetensors",
        "model.language_model.layers.1.mlp.gate.weight": "model-00002-of-00003.safetensors",
        "lm_head.weight": "model-00003-of-00003.safetensors",
    }
    assert shard_for("language_model.model.layers.1.mlp.gate.weight", stored) == (
        "model-00002-of-00003.safetensors"
    )
    assert shard_for("lm_head.weight", stored) == "model-00003-of-00003.safetensors"
    assert shard_for("language_model.model.layers.2.mlp.gate.weight", stored) is None  # ambiguous
