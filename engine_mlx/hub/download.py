"""Resumable, verified downloads of a Hub repo into the Hugging Face cache layout.

Each missing file is streamed to ``blobs/<etag>.incomplete`` (the etag is the LFS sha256, or the git
blob id of a small file), resumed with a ``Range`` request after a pause, a crash or a restart, and
checked against the size and hash the Hub lists before it becomes ``blobs/<etag>``. huggingface_hub's
own ``hf_hub_download`` then finds the blob and writes the snapshot links and ``refs/``, so every
tool that reads the cache sees the repo as it would after ``hf download``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine_mlx.hub.network import Cancelled, HubError, endpoint, hub_errors, online
from engine_mlx.hub.remote import RemoteFile, RemoteRepo, repo_files

CHUNK = 1 << 20
DISK_MARGIN = 256 * 2**20  # room left for the OS and the app after a download


def hub_cache() -> Path:
    """The cache huggingface_hub uses, from the environment as it is now."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def free_space(path: Path) -> int:
    """Free bytes on the volume holding ``path`` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


@dataclass(frozen=True)
class DownloadProgress:
    repo_id: str
    file: str
    done_bytes: int  # of the whole repo, including what was already on disk
    total_bytes: int
    rate_bps: float  # bytes per second over the last seconds
    eta_s: float | None


@dataclass(frozen=True)
class FilePlan:
    file: RemoteFile
    etag: str  # the blob's name in the cache: the LFS sha256, else the git blob id
    have_bytes: int  # complete: its size; partial: the .incomplete's length; else 0
    complete: bool = False


@dataclass(frozen=True)
class DownloadPlan:
    repo: RemoteRepo
    cache_dir: Path
    files: tuple[FilePlan, ...]

    @property
    def total_bytes(self) -> int:
        return self.repo.total_bytes

    @property
    def have_bytes(self) -> int:
        return sum(f.have_bytes for f in self.files)

    @property
    def remaining_bytes(self) -> int:
        return self.total_bytes - self.have_bytes

    @property
    def storage(self) -> Path:
        from huggingface_hub.file_download import repo_folder_name

        return self.cache_dir / repo_folder_name(repo_id=self.repo.repo_id, repo_type="model")

    @property
    def snapshot(self) -> Path:
        return self.storage / "snapshots" / self.repo.commit


class _Rate:
    """Bytes per second, smoothed over a few seconds so the ETA does not jump."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.window: list[tuple[float, int]] = [(self.t0, 0)]
        self.total = 0

    def add(self, n: int) -> float:
        now = time.monotonic()
        self.total += n
        self.window.append((now, self.total))
        while len(self.window) > 2 and now - self.window[0][0] > 5.0:
            self.window.pop(0)
        t, b = self.window[0]
        return (self.total - b) / (now - t) if now > t else 0.0


class Download:
    """One repo download. ``plan()`` and ``run()`` go to the network (each inside :func:`online`);
    ``pause()`` and ``cancel()`` may be called from any thread and take effect within one chunk.
    A paused download resumes from its ``.incomplete`` files in this or a later process; a cancelled
    one deletes them."""

    def __init__(self, repo_id: str, revision: str = "main", cache_dir: Path | str | None = None):
        self.repo_id = repo_id
        self.revision = revision
        self.cache_dir = Path(cache_dir) if cache_dir else hub_cache()
        self._pause = threading.Event()
        self._cancel = threading.Event()

    def pause(self) -> None:
        self._pause.set()

    def cancel(self) -> None:
        self._cancel.set()

    def plan(self) -> DownloadPlan:
        with online():
            repo = repo_files(self.repo_id, self.revision)
        return self._plan(repo)

    def _plan(self, repo: RemoteRepo) -> DownloadPlan:
        from huggingface_hub.file_download import repo_folder_name

        blobs = self.cache_dir / repo_folder_name(repo_id=repo.repo_id, repo_type="model") / "blobs"
        files = []
        for f in repo.files:
            etag = f.sha256 or f.blob_id
            if not etag:
                raise HubError(
                    f"{repo.repo_id}/{f.name}: the server lists no hash for it; it cannot be verified"
                )
            blob, part = blobs / etag, blobs / f"{etag}.incomplete"
            if blob.is_file() and blob.stat().st_size == f.size:
                files.append(FilePlan(f, etag, f.size, complete=True))
            elif part.is_file():
                files.append(FilePlan(f, etag, min(part.stat().st_size, f.size)))
            else:
                files.append(FilePlan(f, etag, 0))
        return DownloadPlan(repo, self.cache_dir, tuple(files))

    def check_space(self, plan: DownloadPlan) -> None:
        need, free = plan.remaining_bytes, free_space(self.cache_dir)
        if need + DISK_MARGIN > free:
            raise HubError(
                f"{self.repo_id} needs {need / 1e9:.1f} GB more but {self.cache_dir} has {free / 1e9:.1f} GB free; "
                "nothing was downloaded"
            )

    def run(
        self,
        plan: DownloadPlan | None = None,
        on_progress: Callable[[DownloadProgress], None] | None = None,
    ) -> Path:
        """Download what is missing, verify it, link the snapshot; returns the snapshot folder."""
        plan = plan or self.plan()
        self.check_space(plan)
        report = on_progress or (lambda _p: None)
        rate = _Rate()
        done = plan.have_bytes
        blobs = plan.storage / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        with online():
            for fp in plan.files:
                if fp.complete:
                    continue

                def tick(n: int, name=fp.file.name) -> None:
                    nonlocal done
                    done += n
                    bps = rate.add(n)
                    eta = (plan.total_bytes - done) / bps if bps > 0 else None
                    report(DownloadProgress(self.repo_id, name, done, plan.total_bytes, bps, eta))

                self._fetch(plan.repo, fp, blobs, tick)
            report(DownloadProgress(self.repo_id, "", done, plan.total_bytes, 0.0, 0.0))
            self._link(plan)
        return plan.snapshot

    def _stop(self, part: Path) -> None:
        if self._cancel.is_set():
            part.unlink(missing_ok=True)
            raise Cancelled(f"{self.repo_id}: download cancelled; its partial files were deleted")
        if self._pause.is_set():
            raise Cancelled(f"{self.repo_id}: download paused; it resumes where it stopped")

    def _fetch(
        self, repo: RemoteRepo, fp: FilePlan, blobs: Path, tick: Callable[[int], None]
    ) -> None:
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        f = fp.file
        part, blob = blobs / f"{fp.etag}.incomplete", blobs / fp.etag
        what = f"{repo.repo_id}/{f.name}"
        digest = hashlib.sha256() if f.sha256 else hashlib.sha1(b"blob %d\0" % f.size)
        have = part.stat().st_size if part.is_file() else 0
        if have > f.size:
            part.unlink()
            have = 0
        if have:
            with open(part, "rb") as r:
                while chunk := r.read(CHUNK):
                    digest.update(chunk)
        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"
        if have:
            headers["Range"] = f"bytes={have}-"
        self._stop(part)
        if have < f.size:
            with (
                hub_errors(what),
                open(part, "ab") as out,
                get_session().stream(
                    "GET", repo.url(f.name), headers=headers, follow_redirects=True, timeout=30.0
                ) as r,
            ):
                if r.status_code >= 400:
                    r.read()
                hf_raise_for_status(r)
                if have and r.status_code != 206:  # the server ignored the range: start over
                    out.seek(0)
                    out.truncate()
                    digest = hashlib.sha256() if f.sha256 else hashlib.sha1(b"blob %d\0" % f.size)
                    have = 0
                for chunk in r.iter_bytes(CHUNK):
                    if have + len(chunk) > f.size:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    have += len(chunk)
                    tick(len(chunk))
                    if self._pause.is_set() or self._cancel.is_set():
                        out.flush()
                        break
            self._stop(part)
        if have != f.size:
            part.unlink(missing_ok=True)
            raise HubError(
                f"{what}: the server sent a different size than the Hub lists ({f.size} bytes); "
                "the partial file was deleted"
            )
        if digest.hexdigest() != fp.etag:
            part.unlink(missing_ok=True)
            kind = "sha256" if f.sha256 else "git hash"
            raise HubError(
                f"{what}: the downloaded file's {kind} does not match the Hub's; it was deleted"
            )
        os.replace(part, blob)

    def _link(self, plan: DownloadPlan) -> None:
        """huggingface_hub finds each verified blob and writes the snapshot link itself. It is asked at
        the planned commit (a branch that moved meanwhile must not pull in unverified files); the
        branch's ref then names that commit, as ``hf download`` leaves it."""
        from huggingface_hub import hf_hub_download

        for fp in plan.files:
            with hub_errors(f"{self.repo_id}/{fp.file.name}"):
                hf_hub_download(
                    self.repo_id,
                    fp.file.name,
                    revision=plan.repo.commit,
                    cache_dir=str(self.cache_dir),
                    endpoint=endpoint(),
                )
        if self.revision != plan.repo.commit:
            ref = plan.storage / "refs" / self.revision
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(plan.repo.commit)
