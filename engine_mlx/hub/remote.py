"""What a Hub repo holds, read without downloading it: file sizes and LFS hashes, safetensors headers,
and the byte ranges of single tensors.

A safetensors file is an 8-byte little-endian header length, a JSON header of tensor names, dtypes,
shapes and data offsets, then the data; the Hub serves ``Range`` requests on ``resolve`` URLs, so a
tensor can be fetched on its own. All calls go through huggingface_hub's session (its headers, its
offline check) and must run inside :func:`engine_mlx.hub.network.online`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine_mlx.hf_cache import is_commit, is_git_oid, is_relative_path, is_sha256
from engine_mlx.hub.network import HubError, endpoint, hub_errors
from engine_mlx.safetensors_header import MAX_HEADER_BYTES, HeaderError, header_length, parse_header

_TIMEOUT = 30.0


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None  # LFS files: the content's sha256; small git files have only a blob id
    blob_id: str | None


@dataclass(frozen=True)
class RemoteRepo:
    repo_id: str
    revision: str  # what the user asked for (a branch, a tag or a commit)
    commit: str  # what it resolved to: every file is read at this commit
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> RemoteFile:
        for f in self.files:
            if f.name == name:
                return f
        raise HubError(f"{self.repo_id}: the repository has no {name}")

    def url(self, name: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, name, revision=self.commit, endpoint=endpoint())


@dataclass(frozen=True)
class TensorRange:
    """One tensor of a remote shard: ``start``/``end`` are absolute byte offsets in the file."""

    file: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ShardHeader:
    file: str
    header_bytes: int  # 8 + the JSON header: where the data starts
    tensors: dict[str, TensorRange]


def repo_files(repo_id: str, revision: str = "main") -> RemoteRepo:
    """The repo's files with their sizes and LFS sha256, at the commit ``revision`` resolves to.

    Every name in the listing becomes part of a path in the cache, so each is checked first: a commit
    and hashes of the right shape, file paths relative and inside the repo, sizes whole numbers."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError

    try:
        with hub_errors(f"{repo_id}@{revision}"):
            info = HfApi(endpoint=endpoint()).model_info(
                repo_id, revision=revision, files_metadata=True
            )
    except HFValidationError:
        raise HubError(f"{repo_id!r} is not a repository id; write it as org/name") from None
    except (KeyError, TypeError, AttributeError):  # fields missing or of the wrong kind
        raise HubError(
            f"{repo_id}: the server at {endpoint()} sent a malformed file list; check HF_ENDPOINT"
        ) from None
    if not info.sha:
        raise HubError(f"{repo_id}@{revision}: the server did not say which commit this is")
    if not is_commit(info.sha):
        raise _unsafe(repo_id, "commit", info.sha)
    files = tuple(_remote_file(repo_id, s) for s in info.siblings or ())
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise _unsafe(repo_id, "file name (listed twice)", twice)
    return RemoteRepo(repo_id, revision, info.sha, files)


def _unsafe(repo_id: str, what: str, value: object) -> HubError:
    return HubError(
        f"{repo_id}: the server at {endpoint()} lists an invalid {what} {str(value)[:200]!r}; "
        "nothing was written (check HF_ENDPOINT)"
    )


def _size(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _remote_file(repo_id: str, s: Any) -> RemoteFile:  # huggingface_hub.hf_api.RepoSibling
    """One listing entry, checked: see :mod:`engine_mlx.hf_cache` for the shapes."""
    name = s.rfilename
    if not is_relative_path(name):
        raise _unsafe(repo_id, "file name", name)
    sha256 = s.lfs.sha256 if s.lfs else None
    if s.lfs and not is_sha256(sha256):
        raise _unsafe(repo_id, f"sha256 for {name}", sha256)
    if s.blob_id is not None and not is_git_oid(s.blob_id):
        raise _unsafe(repo_id, f"blob id for {name}", s.blob_id)
    size = _size(s.lfs.size if s.lfs else (s.size or 0))
    if size is None:
        raise _unsafe(repo_id, f"size for {name}", s.lfs.size if s.lfs else s.size)
    return RemoteFile(name=name, size=size, sha256=sha256, blob_id=s.blob_id)


def read_range(
    url: str, start: int, end: int, what: str, on_bytes: Callable[[int], None] | None = None
) -> bytes:
    """Bytes ``[start, end)`` of a remote file; a short or oversized answer is an error, not data."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    if end <= start:
        return b""
    headers = build_hf_headers()
    headers["Range"] = f"bytes={start}-{end - 1}"
    headers["Accept-Encoding"] = "identity"
    chunks = []
    got = 0
    session = get_session()
    with (
        hub_errors(what),
        session.stream("GET", url, headers=headers, follow_redirects=True, timeout=_TIMEOUT) as r,
    ):
        if r.status_code >= 400:
            r.read()
        hf_raise_for_status(r)
        if r.status_code != 206 and not (start == 0 and r.status_code == 200):
            raise HubError(f"{what}: the server ignored the byte range (HTTP {r.status_code})")
        for chunk in r.iter_bytes(1 << 20):
            chunks.append(chunk)
            got += len(chunk)
            if got > end - start:
                break
            if on_bytes:
                on_bytes(len(chunk))
    if got != end - start:
        raise HubError(f"{what}: expected {end - start} bytes at offset {start}, received {got}")
    return b"".join(chunks)


def read_text(repo: RemoteRepo, name: str) -> str:
    """A small file (a config, an index) in full."""
    size = repo.file(name).size
    return read_range(repo.url(name), 0, size, f"{repo.repo_id}/{name}").decode("utf-8")


def read_json(repo: RemoteRepo, name: str) -> dict:
    """A small JSON file that must hold an object (a config, an index)."""
    try:
        data = json.loads(read_text(repo, name))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HubError(f"{repo.repo_id}/{name}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HubError(f"{repo.repo_id}/{name}: not a JSON object")
    return data


def read_shard_header(repo: RemoteRepo, name: str) -> ShardHeader:
    """A shard's tensor table, from two range requests (the length, then the JSON)."""
    what = f"{repo.repo_id}/{name}"
    size = repo.file(name).size
    url = repo.url(name)
    try:
        length = header_length(read_range(url, 0, 8, what))
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise HeaderError(f"header length {length}")
        header = parse_header(read_range(url, 8, 8 + length, what))
    except HeaderError as exc:
        raise HubError(f"{what}: not a safetensors file ({exc})") from None
    base = header.data_start
    tensors = {}
    for entry in header.tensors:
        t = TensorRange(
            name, entry.name, entry.dtype, entry.shape, base + entry.begin, base + entry.end
        )
        if not (base <= t.start <= t.end <= size):
            raise HubError(f"{what}: tensor {entry.name} lies outside the file")
        tensors[entry.name] = t
    return ShardHeader(name, base, tensors)


def weight_files(repo: RemoteRepo) -> dict[str, str]:
    """Tensor name -> shard, from the index (or the single ``model.safetensors``)."""
    names = {f.name for f in repo.files}
    if "model.safetensors.index.json" in names:
        weight_map = read_json(repo, "model.safetensors.index.json").get("weight_map")
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise HubError(
                f"{repo.repo_id}/model.safetensors.index.json: no weight_map of tensor names to files"
            )
        for shard in set(weight_map.values()):
            if shard not in names:
                raise HubError(
                    f"{repo.repo_id}: the index names {shard}, which the repository lacks"
                )
        return weight_map
    if "model.safetensors" in names:
        return {
            k: "model.safetensors" for k in read_shard_header(repo, "model.safetensors").tensors
        }
    raise HubError(f"{repo.repo_id}: no safetensors weights (no model.safetensors or its index)")
