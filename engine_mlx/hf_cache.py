"""The Hugging Face cache layout on disk, and the checks that keep a name from a Hub listing inside it.

huggingface_hub keeps each repo in ``<cache>/models--org--name/``: ``blobs/<etag>`` (the LFS sha256,
or the git blob id of a small file), ``snapshots/<commit>/<path>`` as relative links into
``../../blobs``, and ``refs/<branch>`` holding a commit. Every name a listing supplies (an etag, a
commit, a file path) becomes part of a path there, so it is checked against these shapes first: a name
that passes stays inside the repo's folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_PREFIX = "models--"
BLOBS, SNAPSHOTS, REFS = "blobs", "snapshots", "refs"  # the folders of a repo's cache folder
INCOMPLETE = ".incomplete"  # a blob being downloaded: blobs/<etag>.incomplete
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_OID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a git object id: sha1, or sha256 repositories
_COMMIT = re.compile(r"[0-9a-f]{40}")


def hf_home() -> Path:
    """``HF_HOME``, else ``$XDG_CACHE_HOME/huggingface`` (``~/.cache/huggingface``), as huggingface_hub reads it."""
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface"


def cache_root() -> Path:
    """The hub cache huggingface_hub uses, from the environment as it is now."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(env).expanduser() if env else hf_home() / "hub"


def lmstudio_roots() -> tuple[Path, ...]:
    """LM Studio's model folders (the current one first, then the older ``~/.cache/lm-studio``)."""
    home = Path.home()
    return (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models")


def repo_folder_name(repo_id: str) -> str:
    """``org/name`` -> ``models--org--name`` (one path part: every ``/`` becomes ``--``)."""
    return REPO_PREFIX + repo_id.replace("/", "--")


def repo_folder(repo_id: str, cache: Path | None = None) -> Path:
    return (cache if cache is not None else cache_root()) / repo_folder_name(repo_id)


def is_repo_folder(path: Path) -> bool:
    """A repo's folder in the cache (``models--org--name``), by its name."""
    return path.name.startswith(REPO_PREFIX)


def snapshot_repo_folder(folder: Path) -> Path | None:
    """``models--org--name`` when ``folder`` is one of its snapshots (``…/snapshots/<rev>``), else None."""
    if folder.parent.name == SNAPSHOTS and is_repo_folder(folder.parent.parent):
        return folder.parent.parent
    return None


def snapshot_repo_id(folder: Path) -> str | None:
    """``org/name`` when ``folder`` is a cache snapshot (``models--org--name/snapshots/<rev>``)."""
    repo = snapshot_repo_folder(folder)
    return repo.name.removeprefix(REPO_PREFIX).replace("--", "/", 1) if repo else None


def current_snapshot(repo_dir: Path) -> Path | None:
    """The snapshot ``refs/main`` points at, else the most recently written one."""
    snapshots = repo_dir / SNAPSHOTS
    ref = repo_dir / REFS / "main"
    if ref.is_file():
        try:
            revision = ref.read_text(encoding="utf-8").strip()
        except OSError:
            revision = ""
        # A revision is a commit hash or a name, never a path out of snapshots/.
        if revision and revision == Path(revision).name != ".." and (snapshots / revision).is_dir():
            return snapshots / revision
    try:
        candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def is_sha256(name: object) -> bool:
    """64 lowercase hex digits: an LFS file's content hash, and its blob's name in the cache."""
    return isinstance(name, str) and _SHA256.fullmatch(name) is not None


def is_git_oid(name: object) -> bool:
    """A git blob id (40 hex digits, or 64 in a sha256 repository), lowercase."""
    return isinstance(name, str) and _GIT_OID.fullmatch(name) is not None


def is_commit(name: object) -> bool:
    return isinstance(name, str) and _COMMIT.fullmatch(name) is not None


def is_relative_path(name: object) -> bool:
    """A repo file path that stays below the folder it is joined to: ``/``-separated, not absolute,
    no empty, ``.`` or ``..`` part, no backslash (a separator on Windows) and no NUL."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))
