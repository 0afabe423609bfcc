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

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from engine_mlx.generation import Snapshot, snapshot_cache

DEFAULT_BUDGET_BYTES = 4 << 30
DEFAULT_DISK_BUDGET_BYTES = 8 << 30
MAX_SNAPSHOTS_PER_CONVERSATION = 8
_FILE_SUFFIX = ".safetensors"


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
    ):
        self.budget_bytes = budget_bytes
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self.disk_budget_bytes = disk_budget_bytes
        self._conversations: OrderedDict[str, _ConversationSnapshots] = OrderedDict()

    # ------------------------------------------------------------------ memory

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._conversations.values())

    def clear(self) -> None:
        self._conversations.clear()

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
        return Restored(length=len(best.ids), cache=snapshot_cache(best.snapshot.cache, 0).cache)

    def add(self, conversation_id: str, fingerprint: str, ids: list[int], snapshot: Snapshot) -> None:
        if not conversation_id:
            return
        convo = self._conversations.get(conversation_id)
        if convo is None or convo.fingerprint != fingerprint:
            convo = _ConversationSnapshots(fingerprint)
            self._conversations[conversation_id] = convo
        key = tuple(ids[: snapshot.length])
        # Snapshots that are not a prefix of the newest prompt belong to an abandoned branch
        # (an edited message); keep only the newest prompt's line of turns.
        convo.entries = [e for e in convo.entries if common_prefix(e.ids, key) == len(e.ids) and e.ids != key]
        convo.entries.append(_Entry(key, snapshot, snapshot.nbytes))
        del convo.entries[:-MAX_SNAPSHOTS_PER_CONVERSATION]
        convo.saved = False
        self._conversations.move_to_end(conversation_id)
        self._evict()

    def _evict(self) -> None:
        while self.nbytes > self.budget_bytes and self._conversations:
            oldest_id, oldest = next(iter(self._conversations.items()))
            if len(self._conversations) == 1 or len(oldest.entries) > 1:
                # Within one conversation, older turns go first: the newest serves the next turn.
                victim = self._conversations[oldest_id]
                if len(victim.entries) > 1:
                    victim.entries.pop(0)
                    continue
            self._conversations.popitem(last=False)

    # ------------------------------------------------------------------ disk

    def _path(self, conversation_id: str) -> Path:
        assert self.disk_dir is not None
        digest = hashlib.sha256(conversation_id.encode()).hexdigest()[:32]
        return self.disk_dir / f"{digest}{_FILE_SUFFIX}"

    def save(self, conversation_id: str) -> Path | None:
        """Write the conversation's newest snapshot to disk (when it goes idle). Returns the file."""
        from mlx_lm.models.cache import save_prompt_cache

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
        save_prompt_cache(str(tmp), entry.snapshot.cache, meta)
        tmp.replace(path)
        convo.saved = True
        self._clean_disk(keep=path)
        return path

    def _load(self, conversation_id: str, fingerprint: str) -> _ConversationSnapshots | None:
        from mlx_lm.models.cache import load_prompt_cache

        path = self._path(conversation_id)
        if not path.exists():
            return None
        try:
            cache, meta = load_prompt_cache(str(path), return_metadata=True)
            if meta.get("fingerprint") != fingerprint or meta.get("conversation_id") != conversation_id:
                return None
            ids = tuple(json.loads(meta["ids"]))
        except Exception:  # a damaged or foreign file: fall back to a cold prefill
            path.unlink(missing_ok=True)
            return None
        snapshot = Snapshot(length=len(ids), cache=cache)
        convo = _ConversationSnapshots(fingerprint, [_Entry(ids, snapshot, snapshot.nbytes)], saved=True)
        self._conversations[conversation_id] = convo
        self._evict()
        return convo

    def _clean_disk(self, keep: Path) -> None:
        """Drop the oldest snapshot files beyond the disk budget, and leftovers of interrupted saves."""
        assert self.disk_dir is not None
        files = []
        for f in self.disk_dir.glob(f"*{_FILE_SUFFIX}"):
            if ".tmp" in f.name:
                f.unlink(missing_ok=True)
                continue
            files.append((f.stat().st_mtime, f))
        files.sort()
        total = sum(f.stat().st_size for _, f in files)
        for _, f in files:
            if total <= self.disk_budget_bytes or f == keep:
                continue
            total -= f.stat().st_size
            f.unlink(missing_ok=True)
