"""Per-conversation model-state snapshots, so follow-up turns prefill only what is new.

Qwen3.5's Gated-DeltaNet layers keep a recurrent state that cannot be trimmed back to an earlier
token, so a conversation can only resume from an exact snapshot. The engine takes one snapshot per
turn during prefill, at the last token the next turn's prompt will share (before the generation
prompt's ``<think>`` opener). A new prompt resumes from the longest snapshot whose token ids are a
prefix of it: a follow-up resumes from the previous turn, an edited or regenerated message from the
last turn before the change. Snapshots are kept for the most recently used conversations under a
byte budget and can be saved to disk (safetensors) to survive a restart.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from engine_mlx.generation import Snapshot

DEFAULT_BUDGET_BYTES = 4 << 30
DEFAULT_DISK_BUDGET_BYTES = 8 << 30
MAX_SNAPSHOTS_PER_CONVERSATION = 8
DEFAULT_DISK_MAX_AGE_S = 30 * 24 * 3600.0
_FILE_SUFFIX = ".safetensors"

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    ids: tuple[int, ...]  # the prompt tokens the snapshot holds (len == snapshot.length)
    snapshot: Snapshot
    nbytes: int


@dataclass
class _ConversationSnapshots:
    fingerprint: str
    entries: list[_Entry] = field(default_factory=list)
    saved: bool = False

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)


def common_prefix(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class Restored:
    """A cache to resume from: a fresh deep copy holding the first ``length`` prompt tokens."""

    length: int
    cache: list


class SnapshotStore:
    """LRU (by bytes) of per-conversation snapshots, with optional disk persistence."""

    def __init__(
        self,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        disk_dir: Path | None = None,
        disk_budget_bytes: int = DEFAULT_DISK_BUDGET_BYTES,
        disk_max_age_s: float = DEFAULT_DISK_MAX_AGE_S,
    ):
        self.budget_bytes = budget_bytes
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self.disk_budget_bytes = disk_budget_bytes
        self.disk_max_age_s = disk_max_age_s
        self._conversations: OrderedDict[str, _ConversationSnapshots] = OrderedDict()

    # ------------------------------------------------------------------ memory

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._conversations.values())

    def clear(self) -> None:
        self._conversations.clear()

    def forget(self, conversation_id: str) -> None:
        """Drop a conversation's snapshots, in memory and on disk (the chat was deleted)."""
        self._conversations.pop(conversation_id, None)
        if self.disk_dir is not None and conversation_id:
            self._path(conversation_id).unlink(missing_ok=True)

    def lookup(self, conversation_id: str, fingerprint: str, ids: list[int]) -> Restored | None:
        """The longest snapshot that is a strict prefix of ``ids``, copied so it can be extended."""
        if not conversation_id:
            return None
        convo = self._conversations.get(conversation_id)
        if convo is None and self.disk_dir is not None:
            convo = self._load(conversation_id, fingerprint)
        if convo is None or convo.fingerprint != fingerprint:
            return None
        self._conversations.move_to_end(conversation_id)
        best: _Entry | None = None
        for entry in convo.entries:
            n = len(entry.ids)
            if n < len(ids) and (best is None or n > len(best.ids)) and common_prefix(entry.ids, ids) == n:
                best = entry
        if best is None:
            return None
        return Restored(length=len(best.ids), cache=copy.deepcopy(best.snapshot.cache))

    def add(self, conversation_id: str, fingerprint: str, ids: list[int], snapshot: Snapshot) -> None:
        if not conversation_id:
            return
        convo = self._conversations.get(conversation_id)
        if convo is None or convo.fingerprint != fingerprint:
            convo = _ConversationSnapshots(fingerprint)
            self._conversations[conversation_id] = convo
        key = tuple(ids[: snapshot.length])
        _compact(snapshot.cache)
        # Snapshots that are not a prefix of the newest prompt belong to an abandoned branch
        # (an edited message); keep only the newest prompt's line of turns.
        convo.entries = [e for e in convo.entries if common_prefix(e.ids, key) == len(e.ids) and e.ids != key]
        convo.entries.append(_Entry(key, snapshot, held_bytes(snapshot.cache)))
        del convo.entries[:-MAX_SNAPSHOTS_PER_CONVERSATION]
        convo.saved = False
        self._conversations.move_to_end(conversation_id)
        self._evict()

    def _evict(self) -> None:
        """Drop snapshots until under budget: first older turns (least recent chat first), which only
        serve an edit of an earlier message, then whole conversations, least recently used first."""
        for convo in list(self._conversations.values()):
            while self.nbytes > self.budget_bytes and len(convo.entries) > 1:
                convo.entries.pop(0)
        while self.nbytes > self.budget_bytes and self._conversations:
            self._conversations.popitem(last=False)

    # ------------------------------------------------------------------ disk

    def _path(self, conversation_id: str) -> Path:
        assert self.disk_dir is not None
        digest = hashlib.sha256(conversation_id.encode()).hexdigest()[:32]
        return self.disk_dir / f"{digest}{_FILE_SUFFIX}"

    def save(self, conversation_id: str) -> Path | None:
        """Write the conversation's newest snapshot to disk (when it goes idle). Returns the file."""
        convo = self._conversations.get(conversation_id)
        if self.disk_dir is None or convo is None or not convo.entries or convo.saved:
            return None
        entry = convo.entries[-1]
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        path = self._path(conversation_id)
        tmp = path.with_suffix(".tmp" + _FILE_SUFFIX)
        meta = {
            "conversation_id": conversation_id,
            "fingerprint": convo.fingerprint,
            "ids": json.dumps(list(entry.ids)),
            "saved_at": str(time.time()),
        }
        try:
            _save_cache(tmp, entry.snapshot.cache, meta)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves no empty or partial snapshot behind
            raise
        convo.saved = True
        self._clean_disk(keep=path)
        return path

    def _load(self, conversation_id: str, fingerprint: str) -> _ConversationSnapshots | None:
        path = self._path(conversation_id)
        if not path.exists():
            return None
        try:
            cache, meta = _load_cache(path)
            if meta.get("fingerprint") != fingerprint or meta.get("conversation_id") != conversation_id:
                return None  # another model or template (or a name clash): cold prefill, file kept
            ids = tuple(json.loads(meta["ids"]))
            if not ids or any(not isinstance(i, int) for i in ids):
                raise ValueError("bad token ids")
        except Exception:  # noqa: BLE001 - a damaged or foreign file: fall back to a cold prefill
            log.info("dropping unreadable state snapshot %s", path.name, exc_info=True)
            path.unlink(missing_ok=True)
            return None
        snapshot = Snapshot(length=len(ids), cache=cache)
        convo = _ConversationSnapshots(fingerprint, [_Entry(ids, snapshot, held_bytes(cache))], saved=True)
        self._conversations[conversation_id] = convo
        self._evict()
        return convo

    def _clean_disk(self, keep: Path) -> None:
        """Drop leftovers of interrupted saves, files older than the maximum age, and the oldest
        files beyond the disk budget (never ``keep``, the file just written)."""
        assert self.disk_dir is not None
        now = time.time()
        files = []
        for f in self.disk_dir.glob(f"*{_FILE_SUFFIX}"):
            try:
                st = f.stat()
            except OSError:
                continue
            if f != keep and (".tmp" in f.name or now - st.st_mtime > self.disk_max_age_s):
                f.unlink(missing_ok=True)
                continue
            files.append((st.st_mtime, st.st_size, f))
        files.sort(key=lambda t: t[0])
        total = sum(size for _, size, _ in files)
        for _, size, f in files:
            if total <= self.disk_budget_bytes:
                break
            if f == keep:
                continue
            total -= size
            f.unlink(missing_ok=True)


# ---------------------------------------------------------------------- cache entries

_CACHE_MODULES = ("mlx_vlm.models.cache", "mlx_lm.models.cache")


def _compact(cache: list) -> None:
    """Cut a snapshot's KV buffers to the tokens they hold (KVCache preallocates in steps of 256)."""
    import mlx.core as mx

    arrays = []
    for entry in cache:
        if type(entry).__name__ != "KVCache" or getattr(entry, "keys", None) is None:
            continue
        if entry.keys.shape[2] > entry.offset:
            entry.state = (mx.contiguous(entry.keys[..., : entry.offset, :]),
                           mx.contiguous(entry.values[..., : entry.offset, :]))
            arrays += [entry.keys, entry.values]
    if arrays:
        mx.eval(arrays)


def held_bytes(cache: list) -> int:
    """Bytes a cache actually holds: whole KV buffers (not just the used part) and recurrent states."""
    total = 0
    for entry in cache:
        if hasattr(entry, "keys") and hasattr(entry, "values"):
            arrays = [entry.keys, entry.values]
        else:
            state = entry.state
            arrays = list(state) if isinstance(state, (list, tuple)) else [state]
        total += sum(a.nbytes for a in arrays if a is not None and hasattr(a, "nbytes"))
    return total


def _save_cache(path: Path, cache: list, meta: dict[str, str]) -> None:
    """safetensors with each entry's class (mlx-vlm's own cache classes), state and meta_state.

    mlx-lm's ``save_prompt_cache``/``load_prompt_cache`` would rebuild mlx-lm's classes, which are
    not the ones mlx-vlm's models use."""
    import mlx.core as mx

    arrays: dict[str, object] = {}
    layout = []
    for i, entry in enumerate(cache):
        cls = type(entry)
        if cls.__module__ not in _CACHE_MODULES:
            raise TypeError(f"cannot save cache entry of type {cls.__module__}.{cls.__name__}")
        state = entry.state
        as_tuple = isinstance(state, tuple)
        slots = []
        for j, arr in enumerate(state if isinstance(state, (list, tuple)) else [state]):
            if arr is None:
                slots.append(None)
            else:
                arrays[f"{i}.{j}"] = arr
                slots.append(f"{i}.{j}")
        layout.append(
            {"module": cls.__module__, "class": cls.__name__, "tuple": as_tuple, "slots": slots,
             "meta_state": entry.meta_state}
        )
    mx.save_safetensors(str(path), arrays, {**meta, "layout": json.dumps(layout), "format": "qwendesk-cache-1"})


def _load_cache(path: Path) -> tuple[list, dict[str, str]]:
    import importlib

    import mlx.core as mx

    arrays, meta = mx.load(str(path), return_metadata=True)
    if meta.get("format") != "qwendesk-cache-1":
        raise ValueError("not a QwenDesk state snapshot")
    cache = []
    for item in json.loads(meta["layout"]):
        if item["module"] not in _CACHE_MODULES:
            raise ValueError(f"unexpected cache module {item['module']}")
        cls = getattr(importlib.import_module(item["module"]), item["class"])
        state = [arrays[k] if k is not None else None for k in item["slots"]]
        meta_state = item["meta_state"]
        if isinstance(meta_state, list):
            meta_state = tuple(meta_state)
        cache.append(cls.from_state(tuple(state) if item["tuple"] else state, meta_state))
    mx.eval([a for a in arrays.values()])
    return cache, meta
