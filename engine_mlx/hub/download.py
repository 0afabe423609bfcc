"""Resumable, verified downloads of a Hub repo into the Hugging Face cache layout.

Each missing file is streamed to ``blobs/<etag>.incomplete`` (the etag is the LFS sha256, or the git
blob id of a small file), resumed with a ``Range`` request after a pause, a crash or a restart, and
checked against the size and hash the Hub lists before it becomes ``blobs/<etag>``. The snapshot links
and ``refs/`` are then written as huggingface_hub writes them, so every tool that reads the cache sees
the repo as it would after ``hf download``.

The listing is untrusted (``HF_ENDPOINT`` may name any server): its names are checked by
:func:`engine_mlx.hub.remote.repo_files`, partial files are opened without following a link, and a
linked repo, ``blobs/``, ``snapshots/`` or ``refs/`` folder is refused, so nothing is written or
deleted outside ``<cache>/models--org--name/``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine_mlx.hf_cache import (
    BLOBS,
    INCOMPLETE,
    REFS,
    SNAPSHOTS,
    cache_root,
    is_relative_path,
    repo_folder,
)
from engine_mlx.hub.network import Cancelled, HubError, Paused, hub_errors, online
from engine_mlx.hub.remote import RemoteFile, RemoteRepo, repo_files
from engine_mlx.sizes import human_bytes

CHUNK = 1 << 20
DISK_MARGIN = 256 * 2**20  # room left for the OS and the app after a download
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a full disk or quota; a file too large


def free_space(path: Path) -> int:
    """Free bytes on the volume holding ``path`` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _folder(base: Path, *parts: str) -> Path:
    """``base/parts...`` as real folders, made where missing; a link or a file on the way is refused,
    so what is written below it stays below ``base``."""
    path = base
    for part in parts:
        path = path / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        if path.is_symlink() or not path.is_dir():
            raise HubError(
                f"{path}: is a link or a file where the download needs its own folder; "
                "remove it and start the download again"
            )
    return path


def _storage(cache_dir: Path, repo_id: str, create: bool) -> Path:
    """The repo's cache folder, checked: it and its ``blobs``/``snapshots``/``refs`` must not be links."""
    storage = repo_folder(repo_id, cache_dir)
    if create:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _folder(cache_dir, storage.name)
        _folder(storage, BLOBS)
    for path in (storage, storage / BLOBS, storage / SNAPSHOTS, storage / REFS):
        if path.is_symlink():
            raise HubError(
                f"{path}: is a link, and a download writes only inside {storage}; "
                "remove it and start the download again"
            )
    return storage


def _regular_size(path: Path) -> int | None:
    """The size of a plain file at ``path`` (not a link, a folder or a device), else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _existing_blobs(repo_id: str, cache_dir: Path | None) -> Path:
    return _storage(Path(cache_dir) if cache_dir else cache_root(), repo_id, create=False) / BLOBS


def paused_bytes(repo_id: str, cache_dir: Path | None = None) -> int | None:
    """For a paused download (``.incomplete`` files in the repo's blobs), the bytes it has on disk;
    None if there is none. Read offline; a linked repo folder counts as none."""
    try:
        blobs = _existing_blobs(repo_id, cache_dir)
        names = os.listdir(blobs)
    except (HubError, OSError):
        return None
    if not any(n.endswith(INCOMPLETE) for n in names):
        return None
    return sum(_regular_size(blobs / n) or 0 for n in names)


def discard_partials(repo_id: str, cache_dir: Path | None = None) -> None:
    """Delete a paused download's ``.incomplete`` files (only inside the repo's own folder)."""
    try:
        blobs = _existing_blobs(repo_id, cache_dir)
    except HubError:
        return
    for part in blobs.glob("*" + INCOMPLETE):
        part.unlink(missing_ok=True)


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
        return repo_folder(self.repo.repo_id, self.cache_dir)

    @property
    def snapshot(self) -> Path:
        return self.storage / SNAPSHOTS / self.repo.commit


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
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()
        self._pause = threading.Event()
        self._cancel = threading.Event()

    def pause(self) -> None:
        self._pause.set()

    def cancel(self) -> None:
        self._cancel.set()

    def plan(self) -> DownloadPlan:
        if not is_relative_path(self.revision):
            raise HubError(
                f"{self.revision!r} is not a branch, tag or commit name; pass one like main"
            )
        with online():
            repo = repo_files(self.repo_id, self.revision)
        return self._plan(repo)

    def _plan(self, repo: RemoteRepo) -> DownloadPlan:
        blobs = _storage(self.cache_dir, repo.repo_id, create=False) / BLOBS
        files = []
        for f in repo.files:
            etag = f.sha256 or f.blob_id  # both checked by repo_files: one path part in blobs/
            if not etag:
                raise HubError(
                    f"{repo.repo_id}/{f.name}: the server lists no hash for it; it cannot be verified"
                )
            blob, part = blobs / etag, _regular_size(blobs / (etag + INCOMPLETE))
            if blob.is_file() and blob.stat().st_size == f.size:
                files.append(FilePlan(f, etag, f.size, complete=True))
            elif part is not None:
                files.append(FilePlan(f, etag, min(part, f.size)))
            else:
                files.append(FilePlan(f, etag, 0))
        return DownloadPlan(repo, self.cache_dir, tuple(files))

    def check_space(self, plan: DownloadPlan) -> None:
        need, free = plan.remaining_bytes, free_space(self.cache_dir)
        if need and need + DISK_MARGIN > free:  # nothing to fetch needs no room
            raise HubError(
                f"{self.repo_id} needs {human_bytes(need)} more plus {human_bytes(DISK_MARGIN)} kept free "
                f"for the system, but {self.cache_dir} has {human_bytes(free)} free; free "
                f"{human_bytes(need + DISK_MARGIN - free)} and try again (nothing was downloaded)"
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
        blobs = _storage(self.cache_dir, plan.repo.repo_id, create=True) / BLOBS
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
            raise Paused(f"{self.repo_id}: download paused; it resumes where it stopped")

    def _fetch(
        self, repo: RemoteRepo, fp: FilePlan, blobs: Path, tick: Callable[[int], None]
    ) -> None:
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        f = fp.file
        part, blob = blobs / (fp.etag + INCOMPLETE), blobs / fp.etag
        what = f"{repo.repo_id}/{f.name}"

        def new_digest():
            if f.sha256:
                return hashlib.sha256()
            return hashlib.new("sha1" if len(fp.etag) == 40 else "sha256", b"blob %d\0" % f.size)

        digest = new_digest()
        fd = _open_partial(part)
        try:
            have = os.fstat(fd).st_size
            if have > f.size:
                os.ftruncate(fd, 0)
                have = 0
            while chunk := os.read(fd, CHUNK):
                digest.update(chunk)
            headers = build_hf_headers()
            headers["Accept-Encoding"] = "identity"
            if have:
                headers["Range"] = f"bytes={have}-"
            self._stop(part)
            if have < f.size:
                with (
                    hub_errors(what),
                    get_session().stream(
                        "GET",
                        repo.url(f.name),
                        headers=headers,
                        follow_redirects=True,
                        timeout=30.0,
                    ) as r,
                ):
                    if r.status_code >= 400:
                        r.read()
                    hf_raise_for_status(r)
                    if have and r.status_code != 206:  # the server ignored the range: start over
                        os.ftruncate(fd, 0)
                        os.lseek(fd, 0, os.SEEK_SET)
                        digest = new_digest()
                        have = 0
                    for chunk in r.iter_bytes(CHUNK):
                        if have + len(chunk) > f.size:
                            break
                        _write_all(fd, chunk, what, part)
                        digest.update(chunk)
                        have += len(chunk)
                        tick(len(chunk))
                        if self._pause.is_set() or self._cancel.is_set():
                            break
        finally:
            os.close(fd)
        if have < f.size:
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
        """The snapshot links and the branch's ref, as huggingface_hub lays them out: each listed path
        links to its verified blob at the planned commit (a branch that moved meanwhile must not pull
        in unverified files); the branch's ref then names that commit, as ``hf download`` leaves it."""
        storage = _storage(self.cache_dir, plan.repo.repo_id, create=True)
        blobs = storage / BLOBS
        for fp in plan.files:
            *folders, name = fp.file.name.split("/")
            folder = _folder(storage, SNAPSHOTS, plan.repo.commit, *folders)
            link, target = folder / name, os.path.relpath(blobs / fp.etag, folder)
            try:
                if link.is_symlink() and os.readlink(link) == target:
                    continue
                link.unlink(missing_ok=True)
                os.symlink(target, link)
            except OSError as exc:
                raise HubError(
                    f"{link}: cannot link it to its downloaded file ({exc.strerror}); remove it and "
                    "start the download again"
                ) from None
        if self.revision != plan.repo.commit:
            *folders, name = self.revision.split("/")
            _replace_text(_folder(storage, REFS, *folders) / name, plan.repo.commit)


def _open_partial(part: Path) -> int:
    """``blobs/<etag>.incomplete`` for reading and writing at its end, created if missing; never
    through a link (``O_NOFOLLOW``) and never a file with another name elsewhere (a hard link)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(part, flags | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HubError(
                f"{part}: is a link, not a partial download; remove it and start the download again"
            ) from None
        raise HubError(f"{part}: cannot be written ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise HubError(
            f"{part}: is not a partial download of its own (a device, a folder or a file linked "
            "elsewhere); remove it and start the download again"
        )
    return fd


def _write_all(fd: int, data: bytes, what: str, part: Path) -> None:
    """All of ``data`` at the end of the partial file; a full disk is said in one line naming the file."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError as exc:
            if exc.errno not in _NO_ROOM:
                raise
            raise HubError(
                f"{what}: cannot write {part} ({exc.strerror}); {human_bytes(free_space(part.parent))} "
                f"is free there and downloads keep {human_bytes(DISK_MARGIN)} free, so free space and "
                f"resume: the {human_bytes(os.fstat(fd).st_size)} received so far are kept"
            ) from None


def _replace_text(path: Path, text: str) -> None:
    """Write ``path`` as a new file and rename it over the old one (never writing through a link)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
