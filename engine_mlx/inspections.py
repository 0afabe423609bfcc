"""Model-folder inspections, reused while the folder's files stay the same.

The tensor check builds the model lazily through the loader: about 1.3 s for a 397B folder
(bench/checkpoint_check.py). A model picker that lists again whenever the context length changes
would pay that for every model each time; with this cache it pays once per folder and version.
A folder is inspected again as soon as any file in it is added, removed, resized or rewritten.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .checkpoint import ModelInfo, inspect_checkpoint
from .errors import CheckpointError

Signature = tuple[tuple[str, int, int], ...]


def folder_signature(folder: Path) -> Signature:
    """Name, size and modification time of every file in ``folder`` (links followed: the Hugging Face
    cache links its snapshot files to blobs); a broken link counts as size -1."""
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            try:
                st = entry.stat()  # follows links
                entries.append((entry.name, st.st_size, st.st_mtime_ns))
            except OSError:
                entries.append((entry.name, -1, 0))
    return tuple(sorted(entries))


class InspectionCache:
    """``inspect(folder)`` as :func:`inspect_checkpoint`, answered from memory while the folder is
    unchanged (its refusal too). Safe to share between threads."""

    def __init__(self, *, check_tensors: bool = True):
        self.check_tensors = check_tensors
        self.hits = 0
        self.misses = 0
        self._results: dict[Path, tuple[Signature, ModelInfo | CheckpointError]] = {}
        self._lock = threading.Lock()

    def inspect(self, folder: Path | str) -> ModelInfo:
        folder = Path(folder).expanduser()
        try:
            signature = folder_signature(folder)
        except OSError:
            # it says what is wrong
            return inspect_checkpoint(folder, check_tensors=self.check_tensors)
        key = folder.resolve()
        with self._lock:
            cached = self._results.get(key)
            if cached is not None and cached[0] == signature:
                self.hits += 1
                result = cached[1]
            else:
                self.misses += 1
                result = None
        if result is None:
            try:
                result = inspect_checkpoint(folder, check_tensors=self.check_tensors)
            except CheckpointError as error:
                result = error
            with self._lock:
                self._results[key] = (signature, result)
        if isinstance(result, CheckpointError):
            raise type(result)(result.path, result.reason)
        return result
