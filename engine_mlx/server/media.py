"""Inline images from API requests, on disk in the server's temp folder, capped in bytes.

Each distinct image is written once, under a name derived from its bytes, so a client that resends
the same image every turn gives the engine the same file (its decoded image is cached and its
pixels match the snapshot's). A refused request deletes the images it wrote at once; past the cap,
the least recently used images no request is using go first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from pathlib import Path

from engine_mlx.server.errors import ApiError
from engine_mlx.sizes import human_bytes


class InlineImages:
    """The server's image folder: who uses which file, and how many bytes it holds."""

    def __init__(self, folder: Path, cap_bytes: int):
        self.folder = folder
        self.cap_bytes = cap_bytes
        self._lock = threading.Lock()
        self._sizes: OrderedDict[Path, int] = OrderedDict()  # least recently used first
        self._in_use: Counter[Path] = Counter()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def batch(self) -> ImageBatch:
        return ImageBatch(self)

    def _add(self, data: bytes, suffix: str) -> tuple[Path, bool]:
        """The file holding ``data`` (written if new) and whether it was new; held until released."""
        path = self.folder / f"{hashlib.sha256(data).hexdigest()[:32]}.{suffix}"
        with self._lock:
            self._in_use[path] += 1
            if path in self._sizes:
                self._sizes.move_to_end(path)
                return path, False
            try:
                self._make_room(len(data))
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".part")
                tmp.write_bytes(data)
                tmp.replace(path)
            except BaseException:
                self._drop_use(path)
                raise
            self._sizes[path] = len(data)
            return path, True

    def _make_room(self, size: int) -> None:
        total = sum(self._sizes.values())
        for old in list(self._sizes):
            if total + size <= self.cap_bytes:
                return
            if not self._in_use[old]:
                total -= self._sizes.pop(old)
                old.unlink(missing_ok=True)
        if total + size > self.cap_bytes:
            raise ApiError(
                503,
                f"The server's image folder is full ({human_bytes(self.cap_bytes)}) with the "
                "images of requests in progress; try again when they are answered.",
                code="images_busy",
            )

    def _drop_use(self, path: Path) -> None:
        self._in_use[path] -= 1
        if self._in_use[path] <= 0:
            del self._in_use[path]

    def _release(self, paths: list[Path], delete: set[Path]) -> None:
        with self._lock:
            for path in paths:
                self._drop_use(path)
            for path in delete:
                if not self._in_use[path] and self._sizes.pop(path, None) is not None:
                    path.unlink(missing_ok=True)


class ImageBatch:
    """One request's images: ``add`` each, then ``done`` (kept for the next turn) or ``refuse``
    (the ones this request wrote are deleted, unless another request uses them)."""

    def __init__(self, store: InlineImages):
        self.store = store
        self._held: list[Path] = []
        self._new: set[Path] = set()

    def add(self, data: bytes, suffix: str) -> Path:
        path, new = self.store._add(data, suffix)
        self._held.append(path)
        if new:
            self._new.add(path)
        return path

    def done(self) -> None:
        self.store._release(self._held, set())
        self._held, self._new = [], set()

    def refuse(self) -> None:
        self.store._release(self._held, self._new)
        self._held, self._new = [], set()
