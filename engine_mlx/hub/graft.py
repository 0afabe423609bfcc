"""Add the vision tower (and the MTP head) of an original Qwen3.5 release to a text-only conversion.

``mlx_lm.convert`` drops ``model.visual.*`` and ``mtp.*`` and the ``vision_config``; everything else
it writes is bit-identical to ``mlx_vlm.convert``'s output. So the graft reads the release's shard
headers by range requests, fetches only the byte ranges of those tensors, converts them with mlx-vlm's
own code (:mod:`engine_mlx.hub.convert`) and writes a new folder: the user's shards hard-linked (no
second copy on disk), one new shard, and the updated index, config and preprocessor configs. The new
folder appears by one rename when complete; the user's folder is never written.

A hard link is the user's file under a second name, so nothing in the staging folder is ever opened
for writing: every new file is written in a fresh folder and renamed over its place (a rename replaces
the name, not the linked file's bytes). The new shard takes a name the user's folder does not have, and
an MTP head is refused where the folder already has ``mtp``. A graft that was killed leaves a
``.<name>.partial-*`` folder; the next graft of that output removes it (one that is still running holds
a lock on it and is left alone). ``add-mtp`` (:mod:`engine_mlx.hub.add_mtp`) runs on the same parts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine_mlx.hf_cache import lmstudio_roots, snapshot_repo_id
from engine_mlx.hub.download import DISK_MARGIN, free_space
from engine_mlx.hub.network import Cancelled, HubError, online
from engine_mlx.hub.remote import (
    RemoteRepo,
    TensorRange,
    read_json,
    read_range,
    read_shard_header,
    read_text,
    repo_files,
    weight_files,
)
from engine_mlx.mtp_head import MTP_FOLDER, MTP_PREFIX
from engine_mlx.safetensors_header import encode_header
from engine_mlx.sizes import human_bytes

VISION_PREFIX = "model.visual."
VISION_SHARD = "model-vision.safetensors"
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")
FAMILIES = {"qwen3_5", "qwen3_5_moe"}
# Text dimensions that must be equal for the vision tower's output to mean the same to the model.
MATCHING_DIMS = (
    "hidden_size",
    "num_hidden_layers",
    "vocab_size",
    "num_attention_heads",
    "num_key_value_heads",
)


@dataclass(frozen=True)
class GraftProgress:
    """Bytes of tensor data received of the total to fetch; ``stage`` says what is happening."""

    stage: str  # "fetch" | "convert" | "write" | "done"
    done_bytes: int
    total_bytes: int


class FetchFigures:
    """What a plan fetches (``tensors``) against the whole release (``repo``)."""

    repo: RemoteRepo
    tensors: tuple[TensorRange, ...]

    @property
    def fetch_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def repo_bytes(self) -> int:
        return self.repo.total_bytes

    def summary(self) -> str:
        """E.g. ``869 MiB of 752 GiB``: what the graft downloads against the whole release."""
        return f"{human_bytes(self.fetch_bytes)} of {human_bytes(self.repo_bytes)}"


@dataclass(frozen=True)
class GraftPlan(FetchFigures):
    model_dir: Path
    output_dir: Path
    repo: RemoteRepo
    source_config: dict
    tensors: tuple[TensorRange, ...]  # the ranges to fetch, in file order
    header_bytes: int  # already read to make this plan (shard headers, configs, index)
    mtp: bool
    extra_files: dict[str, str] = field(default_factory=dict)  # preprocessor configs, in full
    in_place: bool = False  # output_dir is model_dir: the grafted folder is swapped in at the end
    vision_shard: str = VISION_SHARD  # a name the user's folder does not have

    @property
    def written(self) -> frozenset[str]:
        """The top-level names the graft writes (the user's files of these names are not carried over)."""
        names = {
            "config.json",
            "model.safetensors.index.json",
            self.vision_shard,
            *self.extra_files,
        }
        return frozenset(names | ({MTP_FOLDER} if self.mtp else set()))


def read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HubError(f"{model_dir}: no config.json; is this a model folder?") from None
    except (OSError, ValueError) as exc:
        raise HubError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(config, dict):
        raise HubError(f"{path}: not a JSON object")
    return config


def _text(config: dict) -> dict:
    return config.get("text_config") or config


def local_weight_map(model_dir: Path) -> dict[str, str]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return dict(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    from safetensors import safe_open

    out = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="numpy") as f:
            out.update(dict.fromkeys(f.keys(), shard.name))
    return out


def in_hf_cache(model_dir: Path) -> bool:
    return snapshot_repo_id(model_dir.absolute()) is not None


def default_output(model_dir: Path) -> Path:
    """A sibling ``<name>-vision``; for a Hugging Face cache snapshot, LM Studio's ``org/name-vision``
    (the cache belongs to huggingface_hub, and the app looks for models in both places)."""
    model_dir = model_dir.absolute()
    if repo_id := snapshot_repo_id(model_dir):
        org, _, name = repo_id.rpartition("/")
        return lmstudio_roots()[0] / org / f"{name}-vision"
    return model_dir.with_name(f"{model_dir.name}-vision")


def check_text_dims(local: dict, source: dict, repo_id: str) -> None:
    """Refuse a release whose text model is not the local one's (the tower would feed the wrong width)."""
    if source.get("model_type") not in FAMILIES or "vision_config" not in source:
        raise HubError(
            f"{repo_id}: not a Qwen3.5 release with a vision tower (model_type {source.get('model_type')!r})"
        )
    check_same_text_model(local, source, repo_id)
    out = (source.get("vision_config") or {}).get("out_hidden_size")
    if out is not None and out != _text(local).get("hidden_size"):
        raise HubError(
            f"{repo_id}: its vision tower outputs {out} features, the model takes {_text(local).get('hidden_size')}"
        )


def check_same_text_model(local: dict, source: dict, repo_id: str) -> None:
    """Refuse a release whose text model is not the local one's (its tensors would not fit)."""
    lt, st = _text(local), _text(source)
    if source.get("model_type") not in FAMILIES:
        raise HubError(
            f"{repo_id}: not a Qwen3.5 release (model_type {source.get('model_type')!r})"
        )
    if local.get("model_type") != source.get("model_type"):
        raise HubError(
            f"{repo_id} is a {source.get('model_type')} model; the local model is {local.get('model_type')}"
        )
    for key in MATCHING_DIMS:
        if lt.get(key) != st.get(key):
            raise HubError(
                f"{repo_id} does not match the local model: {key} is {st.get(key)} there, {lt.get(key)} here"
            )


def propose_release(model_dir: Path) -> str | None:
    """The original release a conversion came from: its model card's ``base_model`` (the converters write
    it), else the catalog's release with the same architecture and sizes."""
    from engine_mlx.hub.catalog import release_for_config

    card = model_dir / "README.md"
    if card.is_file():
        head = card.read_text(encoding="utf-8", errors="replace")[:4000]
        m = re.search(r"^base_model:\s*(?:\n\s*-\s*)?['\"]?([\w.-]+/[\w.-]+)", head, re.MULTILINE)
        if m and m.group(1).startswith("Qwen/"):
            return m.group(1)
    return release_for_config(read_config(model_dir))


def plan_graft(
    model_dir: Path | str,
    repo_id: str,
    *,
    revision: str = "main",
    mtp: bool = False,
    output: Path | str | None = None,
    in_place: bool = False,
) -> GraftPlan:
    """Read what the graft needs to know (file list, configs, shard headers) and check it all,
    before a byte of weights is fetched or anything is written.

    ``in_place`` grafts into ``model_dir`` itself: the new folder is built beside it as usual and
    swapped in by two renames at the end (no file of the old folder is written)."""
    model_dir = Path(model_dir)
    if in_place:
        _remove_leftovers(model_dir)  # may bring back the folder an in-place graft was swapping
    local = read_config(model_dir)
    if local.get("model_type") not in FAMILIES:
        raise HubError(f"{model_dir}: not a Qwen3.5 model (model_type {local.get('model_type')!r})")
    local_map = local_weight_map(model_dir)
    if "vision_config" in local and any(k.startswith("vision_tower.") for k in local_map):
        raise HubError(f"{model_dir}: the model already has a vision tower")
    if in_place:
        if output is not None:
            raise HubError("choose either an output folder or in place, not both")
        if in_hf_cache(model_dir):
            raise HubError(
                f"{model_dir}: is in the Hugging Face cache, whose files belong to huggingface_hub; "
                "add vision into a new folder instead"
            )
        out = model_dir
    else:
        out = Path(output) if output else default_output(model_dir)
        if out.exists():
            raise HubError(f"{out}: already exists; remove it or choose another output folder")
    have = {p.name.casefold() for p in model_dir.iterdir()}  # casefold: APFS ignores case
    if mtp and MTP_FOLDER in have:
        raise HubError(
            f"{model_dir / MTP_FOLDER}: already exists, and the MTP head would go there; "
            "add vision without the MTP head, or move that folder out first"
        )
    vision_shard = next(
        name
        for name in (VISION_SHARD, *(f"model-vision-{i}.safetensors" for i in range(2, 1000)))
        if name.casefold() not in have
    )
    read = 0

    with online():
        repo = repo_files(repo_id, revision)
        source = read_json(repo, "config.json")
        read += repo.file("config.json").size
        check_text_dims(local, source, repo_id)
        names = {f.name for f in repo.files}
        if "model.safetensors.index.json" in names:
            read += repo.file("model.safetensors.index.json").size
        weight_map = weight_files(repo)
        wanted = [
            k
            for k in weight_map
            if k.startswith(VISION_PREFIX) or (mtp and k.startswith(MTP_PREFIX))
        ]
        if not any(k.startswith(VISION_PREFIX) for k in wanted):
            raise HubError(f"{repo_id}: the release has no {VISION_PREFIX}* tensors")
        if mtp and not any(k.startswith(MTP_PREFIX) for k in wanted):
            raise HubError(f"{repo_id}: the release has no MTP head ({MTP_PREFIX}* tensors)")
        tensors, header_bytes = tensor_ranges(repo, weight_map, wanted)
        read += header_bytes
        extra = {}
        for name in PROCESSOR_FILES:
            if name in names:
                extra[name] = read_text(repo, name)
                read += repo.file(name).size
    return GraftPlan(
        model_dir=model_dir,
        output_dir=out,
        repo=repo,
        source_config=source,
        tensors=tensors,
        header_bytes=read,
        mtp=mtp,
        extra_files=extra,
        in_place=in_place,
        vision_shard=vision_shard,
    )


def tensor_ranges(
    repo: RemoteRepo, weight_map: dict[str, str], wanted: list[str]
) -> tuple[tuple[TensorRange, ...], int]:
    """The byte ranges of the ``wanted`` tensors, in file order, from their shards' headers; and
    the header bytes read for them. Inside :func:`online`."""
    tensors: list[TensorRange] = []
    read = 0
    for shard in sorted({weight_map[k] for k in wanted}):
        header = read_shard_header(repo, shard)
        read += header.header_bytes
        for k in wanted:
            if weight_map[k] != shard:
                continue
            if k not in header.tensors:
                raise HubError(
                    f"{repo.repo_id}/{shard}: the index names {k}, which the shard lacks"
                )
            tensors.append(header.tensors[k])
    tensors.sort(key=lambda t: (t.file, t.start))
    return tuple(tensors), read


def _merged(tensors: tuple[TensorRange, ...]) -> list[tuple[str, int, int, list[TensorRange]]]:
    """Adjacent tensors of a shard become one request (no byte outside them is fetched)."""
    runs: list[tuple[str, int, int, list[TensorRange]]] = []
    for t in tensors:
        if runs and runs[-1][0] == t.file and runs[-1][2] == t.start:
            file, start, _, members = runs[-1]
            runs[-1] = (file, start, t.end, members + [t])
        else:
            runs.append((t.file, t.start, t.end, [t]))
    return runs


def _write_raw(path: Path, items: list[tuple[TensorRange, bytes]]) -> None:
    """A local safetensors file of fetched tensors exactly as the release stores them."""
    with open(path, "wb") as f:
        f.write(encode_header([(t.name, t.dtype, t.shape, len(data)) for t, data in items]))
        for _, data in items:
            f.write(data)


def _link_tree(src: Path, dst: Path, skip: frozenset[str], hidden: bool = False) -> None:
    """Every file of ``src`` except the top-level names in ``skip`` (the ones the graft writes): hard
    links (a copy only where linking is impossible, e.g. across volumes). Hidden folders only when
    ``hidden``."""
    skip = frozenset(n.casefold() for n in skip)
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        dirs[:] = [
            d
            for d in dirs
            if (hidden or not d.startswith(".")) and not (rel == Path(".") and d.casefold() in skip)
        ]
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if rel == Path(".") and name.casefold() in skip:
                continue
            s, d = Path(root) / name, dst / rel / name
            try:
                os.link(s.resolve(), d)
            except OSError:
                shutil.copy2(s, d)


def run_graft(
    plan: GraftPlan,
    *,
    on_progress: Callable[[GraftProgress], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Path:
    """Fetch, convert and write; returns the new model folder. A failure or a cancel leaves no folder."""
    import mlx.core as mx

    from engine_mlx.hub.convert import convert_vision

    report = on_progress or (lambda _p: None)
    local = read_config(plan.model_dir)
    with staging(plan.output_dir, plan.fetch_bytes) as stage:
        fetched = fetch_tensors(plan, report, cancelled)
        report(GraftProgress("convert", plan.fetch_bytes, plan.fetch_bytes))
        raw_dir = stage / ".source"
        raw_dir.mkdir()
        vision = [(t, b) for t, b in fetched if t.name.startswith(VISION_PREFIX)]
        _write_raw(raw_dir / "vision.safetensors", vision)
        tower = convert_vision(mx.load(str(raw_dir / "vision.safetensors")), plan.source_config)
        report(GraftProgress("write", plan.fetch_bytes, plan.fetch_bytes))
        new = stage / ".new"  # every file the graft writes, made here: no link points into it
        new.mkdir()
        mx.save_safetensors(str(new / plan.vision_shard), tower, metadata={"format": "mlx"})
        _write_index(plan.model_dir, new, tower, plan.vision_shard)
        _write_json(new / "config.json", _grafted_config(local, plan.source_config))
        for name, text in plan.extra_files.items():
            (new / name).write_text(text, encoding="utf-8")
        if plan.mtp:
            write_mtp_head(fetched, plan.source_config, local, stage / ".mtp", new / MTP_FOLDER)
        out = stage / "model"
        _link_tree(plan.model_dir, out, plan.written, hidden=plan.in_place)
        for entry in sorted(os.listdir(new)):  # a rename replaces a name, not a linked file
            os.replace(new / entry, out / entry)
        if cancelled():
            raise Cancelled("The graft was cancelled; nothing was written.")
        if plan.in_place:
            previous = stage / "previous"
            os.rename(plan.model_dir, previous)
            try:
                os.rename(out, plan.model_dir)
            except OSError:
                os.rename(previous, plan.model_dir)
                raise
        else:
            move_into_place(out, plan.output_dir)
        report(GraftProgress("done", plan.fetch_bytes, plan.fetch_bytes))
        return plan.output_dir


@contextlib.contextmanager
def staging(output_dir: Path, fetch_bytes: int) -> Iterator[Path]:
    """A fresh, locked ``.<name>.partial-*`` folder beside ``output_dir`` to build it in, removed
    at the end whatever happens; first the leftovers of killed runs go, and the disk is checked for
    room for the fetched tensors twice over (as released, then converted)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(output_dir)
    need, free = 2 * fetch_bytes, free_space(output_dir.parent)
    if need + DISK_MARGIN > free:
        raise HubError(
            f"{output_dir.parent}: the graft needs {human_bytes(need)} plus {human_bytes(DISK_MARGIN)} "
            f"kept free for the system, but there is {human_bytes(free)} free; free "
            f"{human_bytes(need + DISK_MARGIN - free)} and try again (nothing was downloaded)"
        )
    stage, lock = _new_stage(output_dir)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        os.close(lock)


def fetch_tensors(
    plan: FetchFigures,
    report: Callable[[GraftProgress], None],
    cancelled: Callable[[], bool],
) -> list[tuple[TensorRange, bytes]]:
    """The plan's tensors as the release stores them, adjacent ones in one range request."""
    total, done = plan.fetch_bytes, 0

    def tick(n: int) -> None:
        nonlocal done
        if cancelled():
            raise Cancelled("The graft was cancelled; nothing was written.")
        done += n
        report(GraftProgress("fetch", done, total))

    fetched: list[tuple[TensorRange, bytes]] = []
    report(GraftProgress("fetch", 0, total))
    with online():
        for file, start, end, members in _merged(plan.tensors):
            data = read_range(plan.repo.url(file), start, end, f"{plan.repo.repo_id}/{file}", tick)
            fetched += [(t, data[t.start - start : t.end - start]) for t in members]
    if cancelled():
        raise Cancelled("The graft was cancelled; nothing was written.")
    return fetched


def write_mtp_head(
    fetched: list[tuple[TensorRange, bytes]],
    source_config: dict,
    local_config: dict,
    work: Path,
    out: Path,
) -> Path:
    """The release's ``mtp.*`` tensors among ``fetched`` -> mlx-vlm's drafter folder ``out`` (made
    by mlx-vlm's own splitter, quantized like the local model), by way of the fresh folder ``work``."""
    from engine_mlx.hub.convert import split_mtp

    work.mkdir()
    _write_raw(
        work / "model.safetensors", [(t, b) for t, b in fetched if t.name.startswith(MTP_PREFIX)]
    )
    _write_json(work / "config.json", source_config)
    return split_mtp(work, out, local_config.get("quantization"))


def move_into_place(built: Path, output_dir: Path) -> None:
    """Rename the finished folder to its name; refused if something took that name meanwhile (a
    rename would replace an empty folder, and a link would lead elsewhere)."""
    if os.path.lexists(output_dir):
        raise HubError(f"{output_dir}: appeared while the graft ran; nothing was written")
    os.rename(built, output_dir)


_LOCK = ".lock"


def _new_stage(output_dir: Path) -> tuple[Path, int]:
    """A fresh ``.<name>.partial-*`` folder beside ``output_dir``, locked while this graft runs;
    :func:`_remove_leftovers` removes it if this process dies."""
    stage = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    lock = os.open(stage / _LOCK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return stage, lock


def _remove_leftovers(output_dir: Path) -> None:
    """Delete the staging folders of grafts into ``output_dir`` that were killed (their lock is free).

    An in-place graft killed between its two renames left the user's folder in ``previous``: it is
    moved back first."""
    prefix = f".{output_dir.name}.partial-"
    try:
        entries = [e for e in output_dir.parent.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return
    for stage in entries:
        if stage.is_symlink() or not stage.is_dir():
            continue
        try:
            lock = os.open(stage / _LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # no lock yet: a graft starting this instant, or one killed at its start
            with contextlib.suppress(OSError):
                if time.time() - stage.stat().st_mtime > 60:
                    shutil.rmtree(stage, ignore_errors=True)
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue  # a graft that is running
        try:
            previous = stage / "previous"
            if previous.is_dir() and not previous.is_symlink() and not output_dir.exists():
                os.rename(previous, output_dir)
            shutil.rmtree(stage, ignore_errors=True)
        finally:
            os.close(lock)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n", encoding="utf-8")


def _write_index(src: Path, out: Path, tower: dict, shard: str) -> None:
    weight_map = local_weight_map(src)
    index_path = src / "model.safetensors.index.json"
    metadata = {}
    if index_path.is_file():
        metadata = dict(json.loads(index_path.read_text(encoding="utf-8")).get("metadata") or {})
    if "total_size" in metadata:
        metadata["total_size"] = int(metadata["total_size"]) + sum(v.nbytes for v in tower.values())
    weight_map.update(dict.fromkeys(tower, shard))
    index = {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(
        json.dumps(index, indent=4) + "\n", encoding="utf-8"
    )


def _grafted_config(local: dict, source: dict) -> dict:
    """The local config plus what a vision conversion keeps: ``vision_config`` and the release's
    top-level image/video token ids (anything the text-only conversion lacks)."""
    config = dict(local)
    config["vision_config"] = source["vision_config"]
    for key, value in source.items():
        if key not in config and key not in ("auto_map", "model_file", "quantization_config"):
            config[key] = value
    return config
