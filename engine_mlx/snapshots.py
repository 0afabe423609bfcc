"""Per-conversation model-state snapshots, so follow-up turns prefill only what is new.

Qwen3.5's Gated-DeltaNet layers keep a recurrent state that cannot be trimmed back to an earlier
token, so a conversation can only resume from an exact snapshot. The engine takes one snapshot per
turn during prefill, at the last token the next turn's prompt will share (before the generation
prompt's ``<think>`` opener). A new prompt resumes from the longest snapshot whose token ids are a
prefix of it: a follow-up resumes from the previous turn, an edited or regenerated message from the
last turn before the change. Snapshots are kept for the most recently used conversations under a
byte budget and can be saved to disk (safetensors) to survive a restart.

Copies, sizes, trimming and the saved layout go through each cache class's own protocol
(``cache_protocol``). A saved file carries a format version, a checksum over its tensors, token ids
and layout, and the token ids must match the length the attention caches hold: a file that fails
any check is deleted and the turn is prefilled cold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_mlx import cache_protocol
from engine_mlx.safetensors_header import read_header

DEFAULT_BUDGET_BYTES = 4 << 30
DEFAULT_DISK_BUDGET_BYTES = 8 << 30
MAX_SNAPSHOTS_PER_CONVERSATION = 8
DEFAULT_DISK_MAX_AGE_S = 30 * 24 * 3600.0
_FILE_SUFFIX = ".safetensors"
FILE_FORMAT = "qwendesk-state"
FILE_VERSION = (
    2  # 2: checksum over tensors and token ids, cache rebuilt through each class's protocol
)

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """A copy of the model cache after the first ``length`` tokens: prompt tokens, or (the end of a
    turn cut short) the prompt and then ``generated``, with the ``logits`` for the token after them."""

    length: int
    cache: list[Any]
    generated: tuple[int, ...] = ()
    logits: Any = None
    finished: bool = False  # the end of a reply that ended by itself (not a turn cut short)


def snapshot_cache(cache: list[Any], length: int) -> Snapshot:
    """Copy a cache so later tokens don't change it (linear-attention state cannot be trimmed back,
    so the snapshot is taken when the prefill reaches ``length``)."""
    return Snapshot(length=length, cache=cache_protocol.copy_cache(cache))


@dataclass
class _Entry:
    ids: tuple[int, ...]  # the tokens the snapshot holds (len == snapshot.length)
    snapshot: Snapshot
    nbytes: int
    trimmable: bool

    @classmethod
    def of(cls, ids: tuple[int, ...], snapshot: Snapshot) -> _Entry:
        cache = snapshot.cache
        nbytes = cache_protocol.cache_nbytes(cache) + (
            snapshot.logits.nbytes if snapshot.logits is not None else 0
        )
        return cls(ids, snapshot, nbytes, cache_protocol.can_trim(cache))


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
    """A cache to resume from: a fresh copy holding the first ``length`` prompt tokens."""

    length: int
    cache: list
    logits: object = None  # the next token's logits when ``length`` is the whole prompt


@dataclass(frozen=True)
class Match:
    """A conversation a prompt can resume from: ``length`` tokens, and whether the prompt goes on from
    the conversation's newest snapshot (a follow-up) rather than branching off an older one."""

    key: str
    length: int
    extends_newest: bool


def _extends(ids: tuple[int, ...], prefix: tuple[int, ...]) -> bool:
    return len(prefix) < len(ids) and ids[: len(prefix)] == prefix


def _best_entry(convo: _ConversationSnapshots, ids: tuple[int, ...]) -> tuple[_Entry | None, int]:
    """The snapshot sharing the longest usable prefix with ``ids``, and how many tokens it serves.

    A snapshot is used when its tokens are a prefix of ``ids`` that leaves at least one token to
    decode; a longer one only when its cache can be trimmed, which caches with recurrent state, like
    Qwen3.5's, never can. The end of a turn cut short serves all of its own tokens (with the logits
    to decode from)."""
    best: _Entry | None = None
    best_len = 0
    for entry in convo.entries:
        if entry.snapshot.logits is not None and entry.ids == ids:
            return entry, len(ids)
        if _extends(ids, entry.ids):
            usable = len(entry.ids)
        elif entry.trimmable:
            usable = min(common_prefix(entry.ids, ids), len(ids) - 1)
        else:
            continue
        if usable > best_len:
            best, best_len = entry, usable
    return best, best_len


class SnapshotStore:
    """LRU (by bytes) of snapshots under a key (a conversation id), with optional disk persistence.

    Each key holds one line of turns under one fingerprint (model + template); a key is any stable
    string, "" meaning "keep nothing"."""

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

    def forget(self, key: str) -> None:
        """Drop a conversation's snapshots, in memory and on disk (the chat was deleted)."""
        self._conversations.pop(key, None)
        if self.disk_dir is not None and key:
            self._path(key).unlink(missing_ok=True)

    def lookup(self, key: str, fingerprint: str, ids: list[int]) -> Restored | None:
        """The snapshot sharing the longest prefix with ``ids``, as a fresh copy to extend.

        ``key`` is a conversation id (any stable name works; "" never matches). A snapshot is used
        when its tokens are a prefix of ``ids`` that leaves at least one token to decode; a longer
        one only when its cache can be trimmed (a copy is trimmed, the stored one is kept), which
        caches with recurrent state, like Qwen3.5's, never can."""
        if not key:
            return None
        convo = self._conversations.get(key)
        if convo is None and self.disk_dir is not None:
            convo = self._load(key, fingerprint)
        if convo is None or convo.fingerprint != fingerprint:
            return None
        self._conversations.move_to_end(key)
        ids_t = tuple(ids)
        best, best_len = _best_entry(convo, ids_t)
        if best is None:
            return None
        cache = best.snapshot.cache
        if best.snapshot.logits is not None and best_len == len(ids_t):
            return Restored(len(ids_t), cache_protocol.copy_cache(cache), best.snapshot.logits)
        if best_len < len(best.ids):
            return Restored(best_len, cache_protocol.trimmed_copy(cache, len(best.ids) - best_len))
        return Restored(best_len, cache_protocol.copy_cache(cache))

    def keys(self) -> list[str]:
        """The keys held in memory, least recently used first."""
        return list(self._conversations)

    def best_match(self, keys: list[str], fingerprint: str, ids: list[int]) -> Match | None:
        """Of the in-memory conversations ``keys``, the one holding the snapshot ``lookup`` would
        resume ``ids`` from with the most tokens (any of its snapshots, not only the newest)."""
        ids_t = tuple(ids)
        found: Match | None = None
        for key in keys:
            convo = self._conversations.get(key)
            if convo is None or convo.fingerprint != fingerprint:
                continue
            entry, usable = _best_entry(convo, ids_t)
            if entry is None or (found is not None and usable <= found.length):
                continue
            newest = convo.entries[-1]
            found = Match(key, usable, _extends(ids_t, newest.ids) or newest.ids == ids_t)
        return found

    def add(self, key: str, fingerprint: str, ids: list[int], snapshot: Snapshot) -> None:
        """Keep ``snapshot`` (a copy the caller no longer changes) of the first tokens of ``ids``."""
        if not key:
            return
        if not cache_protocol.holds_tokens(snapshot.cache, snapshot.length):
            log.warning(
                "not keeping a state snapshot whose cache does not hold %d tokens", snapshot.length
            )
            return
        convo = self._conversations.get(key)
        if convo is None or convo.fingerprint != fingerprint:
            convo = _ConversationSnapshots(fingerprint)
            self._conversations[key] = convo
        prefix = tuple(ids[: snapshot.length])
        # Snapshots that are not a prefix of the newest prompt belong to an abandoned branch
        # (an edited message); keep only the newest prompt's line of turns. The end of a turn cut
        # short serves only the Continue of that very turn: a newer snapshot supersedes it.
        convo.entries = [
            e
            for e in convo.entries
            if common_prefix(e.ids, prefix) == len(e.ids)
            and e.ids != prefix
            and e.snapshot.logits is None
        ]
        convo.entries.append(_Entry.of(prefix, snapshot))
        del convo.entries[:-MAX_SNAPSHOTS_PER_CONVERSATION]
        convo.saved = False
        self._conversations.move_to_end(key)
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

    def _path(self, key: str) -> Path:
        assert self.disk_dir is not None
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.disk_dir / f"{digest}{_FILE_SUFFIX}"

    def save(self, key: str) -> Path | None:
        """Write the newest snapshot under ``key`` to disk (when it goes idle). Returns the file."""
        convo = self._conversations.get(key)
        if self.disk_dir is None or convo is None or convo.saved:
            return None
        # The end of a turn cut short stays in memory: the next turn resumes from its prompt's snapshot.
        entry = next((e for e in reversed(convo.entries) if e.snapshot.logits is None), None)
        if entry is None:
            return None
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        tmp = path.with_suffix(".tmp" + _FILE_SUFFIX)
        try:
            _write_snapshot(tmp, entry, {"conversation_id": key, "fingerprint": convo.fingerprint})
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves no empty or partial snapshot behind
            raise
        convo.saved = True
        self._clean_disk(keep=path)
        return path

    def _load(self, key: str, fingerprint: str) -> _ConversationSnapshots | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            meta = _read_metadata(path)
            if meta.get("fingerprint") != fingerprint or meta.get("conversation_id") != key:
                return None  # another model or template (or a name clash): cold prefill, file kept
            entry = _read_snapshot(path)
        except Exception:
            log.info("dropping unusable state snapshot %s", path.name, exc_info=True)
            path.unlink(missing_ok=True)
            return None
        convo = _ConversationSnapshots(fingerprint, [entry], saved=True)
        self._conversations[key] = convo
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


# ---------------------------------------------------------------------- the file format


def _write_snapshot(path: Path, entry: _Entry, meta: dict[str, str]) -> None:
    """safetensors: the cache's arrays, and in the metadata the format and version, the token ids,
    the cache layout (each entry's class and state structure) and a checksum over all of them."""
    import mlx.core as mx

    layout, arrays = cache_protocol.encode_cache(entry.snapshot.cache)
    ids = json.dumps(list(entry.ids))
    layout_json = json.dumps(layout)
    header = {
        **meta,
        "format": FILE_FORMAT,
        "version": str(FILE_VERSION),
        "ids": ids,
        "layout": layout_json,
        "saved_at": str(time.time()),
        "checksum": cache_protocol.checksum(arrays, ids, layout_json),
    }
    mx.save_safetensors(str(path), arrays, header)


def _read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header's metadata, without reading the tensors."""
    meta = read_header(path, limit=64 << 20).metadata
    if not isinstance(meta, dict):
        raise TypeError("bad safetensors metadata")
    return meta


def _read_snapshot(path: Path) -> _Entry:
    """Read and verify a snapshot file; ValueError if it is not one, not this version, damaged, or
    its token ids do not match the cache's length."""
    import mlx.core as mx

    loaded: Any = mx.load(str(path), return_metadata=True)  # a safetensors file: (arrays, metadata)
    arrays: dict[str, Any] = loaded[0]
    meta: dict[str, str] = loaded[1]
    if meta.get("format") != FILE_FORMAT or meta.get("version") != str(FILE_VERSION):
        raise ValueError(f"not a version {FILE_VERSION} state snapshot")
    if cache_protocol.checksum(arrays, meta["ids"], meta["layout"]) != meta.get("checksum"):
        raise ValueError("checksum mismatch")
    ids = tuple(json.loads(meta["ids"]))
    if not ids or any(type(i) is not int for i in ids):
        raise ValueError("bad token ids")
    cache = cache_protocol.decode_cache(json.loads(meta["layout"]), arrays)
    if not cache_protocol.holds_tokens(cache, len(ids)):
        raise ValueError(f"the cache does not hold the file's {len(ids)} tokens")
    return _Entry.of(ids, Snapshot(length=len(ids), cache=cache))
