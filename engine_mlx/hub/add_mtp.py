"""``add-mtp``: fetch only the ``mtp.*`` tensors of the original Qwen3.5 release and write them as the
model's ``mtp/`` folder (mlx-vlm's drafter layout, as ``add-vision --mtp`` writes it).

Converters drop the head, text-only (``mlx_lm.convert``) and vision (``mlx_vlm.convert`` without
``--mtp``) alike, so this works for both. It runs on the graft's parts (:mod:`engine_mlx.hub.graft`):
the shard headers by range requests, the head's byte ranges alone, mlx-vlm's own splitter, a locked
staging folder beside the output, and one rename at the end. Nothing of the model's own files is
opened for writing; a model that already has a head (an ``mtp`` folder, or ``mtp.*`` tensors) is
refused. A model in the Hugging Face cache is not written either: its folder belongs to
huggingface_hub, so the head goes to a folder of the user's choice (``--output``), used with
``--mtp-from``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine_mlx.hub.graft import (
    FAMILIES,
    FetchFigures,
    GraftProgress,
    check_same_text_model,
    fetch_tensors,
    in_hf_cache,
    local_weight_map,
    move_into_place,
    read_config,
    staging,
    tensor_ranges,
    write_mtp_head,
)
from engine_mlx.hub.network import HubError, online
from engine_mlx.hub.remote import RemoteRepo, TensorRange, read_json, repo_files, weight_files
from engine_mlx.mtp_head import MTP_FOLDER, MTP_PREFIX


@dataclass(frozen=True)
class MtpPlan(FetchFigures):
    model_dir: Path
    output_dir: Path  # model_dir/mtp, or the drafter folder the user named
    repo: RemoteRepo
    source_config: dict
    tensors: tuple[TensorRange, ...]  # the head's ranges, in file order
    header_bytes: int  # already read to make this plan (shard headers, config, index)


def plan_add_mtp(
    model_dir: Path | str,
    repo_id: str,
    *,
    revision: str = "main",
    output: Path | str | None = None,
) -> MtpPlan:
    """Check the model and the release and find the head's byte ranges, before a byte of weights is
    fetched or anything is written."""
    model_dir = Path(model_dir)
    local = read_config(model_dir)
    if local.get("model_type") not in FAMILIES:
        raise HubError(f"{model_dir}: not a Qwen3.5 model (model_type {local.get('model_type')!r})")
    have = {p.name.casefold() for p in model_dir.iterdir()}  # casefold: APFS ignores case
    if MTP_FOLDER in have:
        raise HubError(
            f"{model_dir / MTP_FOLDER}: already exists, so the model has an MTP head; "
            "move that folder out first to fetch the head again"
        )
    if any(k.startswith(MTP_PREFIX) for k in local_weight_map(model_dir)):
        raise HubError(
            f"{model_dir}: already has an MTP head in its weights ({MTP_PREFIX}* tensors)"
        )
    if output is None:
        if in_hf_cache(model_dir):
            raise HubError(
                f"{model_dir}: is in the Hugging Face cache, whose files belong to huggingface_hub; "
                "write the head elsewhere with --output DIR and use it with --mtp-from DIR"
            )
        out = model_dir / MTP_FOLDER
    else:
        out = Path(output)
        if os.path.lexists(out):
            raise HubError(f"{out}: already exists; remove it or choose another output folder")
    with online():
        repo = repo_files(repo_id, revision)
        source = read_json(repo, "config.json")
        read = repo.file("config.json").size
        check_same_text_model(local, source, repo_id)
        if "model.safetensors.index.json" in {f.name for f in repo.files}:
            read += repo.file("model.safetensors.index.json").size
        weight_map = weight_files(repo)
        wanted = [k for k in weight_map if k.startswith(MTP_PREFIX)]
        if not wanted:
            raise HubError(f"{repo_id}: the release has no MTP head ({MTP_PREFIX}* tensors)")
        tensors, header_bytes = tensor_ranges(repo, weight_map, wanted)
    return MtpPlan(
        model_dir=model_dir,
        output_dir=out,
        repo=repo,
        source_config=source,
        tensors=tensors,
        header_bytes=read + header_bytes,
    )


def run_add_mtp(
    plan: MtpPlan,
    *,
    on_progress: Callable[[GraftProgress], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Path:
    """Fetch the head, split it with mlx-vlm's code (quantized like the model) and move it into
    place; returns the drafter folder. A failure or a cancel leaves nothing behind."""
    report = on_progress or (lambda _p: None)
    local = read_config(plan.model_dir)
    total = plan.fetch_bytes
    with staging(plan.output_dir, total) as stage:
        fetched = fetch_tensors(plan, report, cancelled)
        report(GraftProgress("convert", total, total))
        built = stage / MTP_FOLDER
        write_mtp_head(fetched, plan.source_config, local, stage / ".source", built)
        report(GraftProgress("write", total, total))
        move_into_place(built, plan.output_dir)
        report(GraftProgress("done", total, total))
        return plan.output_dir
