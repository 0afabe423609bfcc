"""Conversations on disk: SQLite (WAL, versioned schema, FTS5 search) plus a content-addressed attachments folder.

No Qt here: the store is plain Python so it can be tested and reused alone. Every write that can fail
for a reason a user can act on (disk full, read-only folder) raises ``StoreError`` with one sentence.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path

from engine_mlx.events import Stats
from engine_mlx.media import DEFAULT_VIDEO_FPS, AttachmentKind
from engine_mlx.settings import GenerationSettings


class StoreError(Exception):
    """Saving or reading history failed; the message says why in one sentence."""


class DatabaseDamaged(StoreError):
    """The history database file is not a readable SQLite database (a damaged page, a truncated file)."""

    def __init__(self, database: Path, detail: str):
        self.database = Path(database)
        super().__init__(f"The history database {self.database} is damaged ({detail}).")


class DatabaseLocked(StoreError):
    """Another program holds the history database locked."""

    def __init__(self, database: Path):
        self.database = Path(database)
        super().__init__(f"The history database {self.database} is locked by another program.")


class MessageState(str, Enum):
    COMPLETE = "complete"
    STREAMING = "streaming"  # being written right now; left in this state only by a crash
    INTERRUPTED = "interrupted"  # found streaming at start-up: the app was killed mid-answer
    STOPPED = "stopped"  # the user pressed stop
    ERROR = "error"


class ThinkingMode(str, Enum):
    ON = "on"
    OFF = "off"
    BUDGET = "budget"


# The chat settings the engine's GenerationSettings holds: stored flat in the chat's JSON, as always.
GENERATION_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "presence_penalty", "seed")


@dataclass(frozen=True)
class ChatSettings:
    """Per-chat settings: the system prompt, the thinking mode, and the engine's ``GenerationSettings``
    (its length limit, sampling and seed; None sampling fields mean Qwen's default for the thinking mode).
    ``generation``'s own thinking fields are set from ``thinking`` when a message is sent."""

    system_prompt: str = ""
    thinking: ThinkingMode = ThinkingMode.ON
    thinking_budget: int = 1024  # kept while the mode is not BUDGET, so switching back restores it
    generation: GenerationSettings = GenerationSettings()

    def __post_init__(self) -> None:
        # Qt hands a str enum back as a plain str (QComboBox.itemData, QSettings): take it back as the enum,
        # so a wrong value fails here, where it is made, and not later when the settings are saved.
        object.__setattr__(self, "thinking", ThinkingMode(self.thinking))

    def with_generation(self, **changes) -> ChatSettings:
        """A copy with some generation fields changed (``max_tokens=...``, ``seed=...``)."""
        return replace(self, generation=replace(self.generation, **changes))

    def to_json(self) -> str:
        data = {
            "system_prompt": self.system_prompt,
            "thinking": self.thinking.value,
            "thinking_budget": self.thinking_budget,
        }
        data.update({name: getattr(self.generation, name) for name in GENERATION_FIELDS})
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | None) -> ChatSettings:
        if not text:
            return cls()
        data = json.loads(text)
        generation = GenerationSettings(**{k: data[k] for k in GENERATION_FIELDS if k in data})
        own = {k: data[k] for k in ("system_prompt", "thinking", "thinking_budget") if k in data}
        return cls(**own, generation=generation)


@dataclass(frozen=True)
class StoredAttachment:
    kind: AttachmentKind
    path: Path  # the content-addressed copy in the data folder
    name: str  # the original file name, for display and export
    first_page: int = 1
    last_page: int | None = None
    page_count: int | None = None
    fps: float = DEFAULT_VIDEO_FPS
    start_s: float = 0.0
    end_s: float | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class StoredStats(Stats):
    """An answer's figures: the engine's ``events.Stats`` (summed over its runs after a Continue), stored
    as its JSON, plus the tokens of its last run alone (the token limit applies to each run)."""

    run_tokens: int = 0  # 0 in rows written before Continue existed: generated_tokens

    @classmethod
    def of(cls, stats: Stats) -> StoredStats:
        """One run's figures, as the engine reported them."""
        return cls(**asdict(stats), run_tokens=stats.generated_tokens)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> StoredStats:
        """Tolerant of older rows: a figure they did not keep (the prefill's) reads as 0, or as what the
        others imply."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault(
            "prefilled_tokens",
            max(0, known.get("prompt_tokens", 0) - known.get("reused_tokens", 0)),
        )
        return cls(**{name: known.get(name, 0) for name in names})


@dataclass(frozen=True)
class StoredToolCall:
    """One tool call the model made while writing an answer (issue 17), as shown and as sent again."""

    step: int  # the loop step that made it (calls of one step were asked for together)
    call_id: str
    server: str
    tool: str
    arguments: str  # the JSON object that ran (the user's edit, if any)
    outcome: str  # engine_mlx.tools.loop.Outcome's value: ran, failed, denied, blocked, cancelled
    result: str  # what the model was given
    duration_s: float = 0.0
    truncated: bool = False
    images: tuple[Path, ...] = ()  # images the tool returned, saved in the data folder


@dataclass(frozen=True)
class StoredToolStep:
    """What the model wrote in a loop step that ended in tool calls, before its first call: the text as
    written (the answer shows it; the step's message is built from it) and the step's reasoning."""

    step: int
    text: str = ""
    thinking: str = ""


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: str
    position: int
    role: str  # "user" | "assistant"
    text: str
    thinking: str = ""
    state: MessageState = MessageState.COMPLETE
    thinking_s: float | None = None
    stats: StoredStats | None = None
    error: str = ""
    attachments: tuple[StoredAttachment, ...] = ()
    created_at: float = field(default_factory=time.time)
    version: int = (
        1  # which of the message's versions this is (regenerated answers, edited messages)
    )
    version_count: int = 1
    tool_calls: tuple[StoredToolCall, ...] = ()  # the calls made before this answer's text
    # the text and reasoning of the steps that ended in those calls; ``text`` and ``thinking`` above
    # hold all of the answer as shown (these steps' first, then the final step's)
    tool_steps: tuple[StoredToolStep, ...] = ()


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    updated_at: float
    created_at: float
    pinned: bool = False  # kept at the top of the sidebar


@dataclass(frozen=True)
class SearchHit:
    conversation_id: str
    title: str
    message_id: int
    snippet: str


MIGRATION_1 = """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            settings TEXT NOT NULL DEFAULT '',
            deleted_at REAL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: views and exports key on it
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL,
            text TEXT NOT NULL DEFAULT '',
            thinking TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL DEFAULT 'complete',
            thinking_s REAL,
            stats TEXT,
            error TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        );
        CREATE INDEX messages_by_conversation ON messages(conversation_id, position);
        CREATE TABLE attachments (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            name TEXT NOT NULL,
            options TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX attachments_by_message ON attachments(message_id, ordinal);
        CREATE TABLE preferences (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            text, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
        END;
        CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END;
        CREATE TRIGGER messages_au AFTER UPDATE OF text ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
        END;
"""

# Pinned chats (the sidebar keeps them on top, newest pin first), and the id of the first message a chat
# still sends to the model: the context meter's "drop the oldest turns" keeps them in the history but
# leaves them out of the prompt (ids, not positions: an edit re-adds messages at earlier positions).
MIGRATION_PINS_AND_CONTEXT = """
        ALTER TABLE conversations ADD COLUMN pinned_at REAL;
        ALTER TABLE conversations ADD COLUMN context_from_id INTEGER NOT NULL DEFAULT 0;
"""

# Versions: a regenerated answer or an edited message is a new sibling (same parent, same position), and
# the earlier ones stay. ``chosen`` marks the sibling shown under its parent; ``shown`` marks the path on
# screen (and sent to the model), so reading a chat stays one indexed query.
MIGRATION_VERSIONS = """
        ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE;
        ALTER TABLE messages ADD COLUMN chosen INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE messages ADD COLUMN shown INTEGER NOT NULL DEFAULT 1;
        UPDATE messages SET parent_id = (
            SELECT p.id FROM messages p WHERE p.conversation_id = messages.conversation_id
            AND p.position < messages.position ORDER BY p.position DESC LIMIT 1
        );
        CREATE INDEX messages_by_parent ON messages(parent_id);
"""

# Tool calls (issue 17): the calls an answer made, in order, and which tool servers a chat uses
# (NULL: every enabled one).
MIGRATION_TOOL_CALLS = """
        CREATE TABLE tool_calls (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            step INTEGER NOT NULL,
            call_id TEXT NOT NULL,
            server TEXT NOT NULL,
            tool TEXT NOT NULL,
            arguments TEXT NOT NULL DEFAULT '{}',
            outcome TEXT NOT NULL,
            result TEXT NOT NULL DEFAULT '',
            duration_s REAL NOT NULL DEFAULT 0,
            truncated INTEGER NOT NULL DEFAULT 0,
            images TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX tool_calls_by_message ON tool_calls(message_id, ordinal);
        ALTER TABLE conversations ADD COLUMN tool_servers TEXT;
"""

# The text and reasoning of each tool-loop step that ended in calls: a step rebuilt for the model reads
# as the model wrote it (schema 4 kept only the calls, so a rebuilt step had empty content and no thinking).
MIGRATION_TOOL_STEPS = """
        CREATE TABLE tool_steps (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            text TEXT NOT NULL DEFAULT '',
            thinking TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (message_id, step)
        );
"""

# SQL scripts; append new migrations, never edit a released one. user_version = how many have run.
MIGRATIONS: tuple[str, ...] = (
    MIGRATION_1,
    MIGRATION_PINS_AND_CONTEXT,
    MIGRATION_VERSIONS,
    MIGRATION_TOOL_CALLS,
    MIGRATION_TOOL_STEPS,
)

_SUMMARY_COLUMNS = "id, title, updated_at, created_at, pinned_at IS NOT NULL"


def _friendly(error: sqlite3.Error, doing: str) -> StoreError:
    text = str(error).lower()
    if "full" in text:
        why = "the disk is full; free some space and it will be saved again"
    elif "readonly" in text or "read-only" in text:
        why = "the data folder is read-only"
    elif "locked" in text or "busy" in text:
        why = "another program holds the history database locked; close it and try again"
    else:
        why = str(error)
    return StoreError(f"Could not {doing}: {why}.")


class Store:
    """One SQLite file plus an attachments folder. Use from one thread (the GUI thread)."""

    def __init__(
        self,
        database: Path,
        attachments_dir: Path,
        *,
        check: bool = False,
        lock_timeout_s: float = 5.0,
    ):
        self.database = Path(database)
        self.attachments_dir = Path(attachments_dir)
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self.attachments_dir.mkdir(parents=True, exist_ok=True)
        self._db = None
        try:
            self._db = sqlite3.connect(self.database, isolation_level=None, timeout=lock_timeout_s)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if check:
                self._check()
            self._migrate()
        except sqlite3.Error as error:
            if self._db is not None:
                self._db.close()
            text = str(error).lower()
            if "locked" in text or "busy" in text:
                raise DatabaseLocked(self.database) from error
            if isinstance(error, sqlite3.DatabaseError) and (
                "malformed" in text or "not a database" in text or "corrupt" in text
            ):
                raise DatabaseDamaged(self.database, str(error)) from error
            raise _friendly(error, f"open the history database {self.database}") from error
        except StoreError:
            self._db.close()
            raise

    def _check(self) -> None:
        """Read every page once (``quick_check``): damage is found now, not halfway through a chat."""
        rows = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        if rows != ["ok"]:
            raise DatabaseDamaged(self.database, "; ".join(str(r) for r in rows))

    # --- schema -------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(
                f"The history database {self.database} was written by a newer QwenDesk; update the app."
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            try:
                # One transaction per migration: the schema and its version change together.
                self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
                )
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()

    def backup(self, target: Path) -> Path:
        """A consistent copy of the database (SQLite's online backup), written beside and then renamed."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            copy = sqlite3.connect(partial)
            try:
                self._db.backup(copy)
            finally:
                copy.close()
            partial.replace(target)
        except (sqlite3.Error, OSError) as error:
            partial.unlink(missing_ok=True)
            raise StoreError(
                f"Could not write a backup of the history to {target}: {error}."
            ) from error
        return target

    @contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _write(self, doing: str, sql: str, params: Iterable = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, tuple(params))
        except sqlite3.Error as error:
            raise _friendly(error, doing) from error

    # --- preferences --------------------------------------------------------------------------
    def get_pref(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM preferences WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_pref(self, key: str, value: str | None) -> None:
        if value is None:
            self._write("save a preference", "DELETE FROM preferences WHERE key=?", (key,))
        else:
            self._write(
                "save a preference",
                "INSERT INTO preferences(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    # --- conversations ------------------------------------------------------------------------
    def create_conversation(
        self, title: str = "New chat", settings: ChatSettings | None = None
    ) -> str:
        cid = uuid.uuid4().hex
        now = time.time()
        self._write(
            "create a conversation",
            "INSERT INTO conversations(id, title, created_at, updated_at, settings) VALUES(?,?,?,?,?)",
            (cid, title, now, now, (settings or ChatSettings()).to_json()),
        )
        return cid

    def conversations(self) -> list[ConversationSummary]:
        """Pinned chats first (the newest pin on top), then the others, the most recently used first."""
        rows = self._db.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM conversations WHERE deleted_at IS NULL "
            "ORDER BY pinned_at IS NULL, pinned_at DESC, updated_at DESC"
        ).fetchall()
        return [_summary(row) for row in rows]

    def conversation(self, cid: str) -> ConversationSummary | None:
        row = self._db.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM conversations WHERE id=? AND deleted_at IS NULL",
            (cid,),
        ).fetchone()
        return _summary(row) if row else None

    def set_pinned(self, cids: Iterable[str], pinned: bool) -> None:
        """Pin (or unpin) these chats; pinning an already pinned chat keeps its place."""
        ids = list(cids)
        if pinned:
            sql = "UPDATE conversations SET pinned_at=COALESCE(pinned_at, ?) WHERE id=?"
            now = time.time()
            params = [(now - i * 1e-3, cid) for i, cid in enumerate(ids)]  # the first stays on top
        else:
            sql, params = (
                "UPDATE conversations SET pinned_at=NULL WHERE id=?",
                [(cid,) for cid in ids],
            )
        try:
            with self._transaction():
                self._db.executemany(sql, params)
        except sqlite3.Error as error:
            raise _friendly(
                error, "pin the conversation" if pinned else "unpin the conversation"
            ) from error

    def context_from(self, cid: str) -> int:
        """The id of the first message the model is still sent (0: all of them)."""
        row = self._db.execute(
            "SELECT context_from_id FROM conversations WHERE id=?", (cid,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _set(self, cid: str, column: str, value: object, what: str) -> None:
        """One column of a conversation's row (``column`` is ours, never the user's)."""
        self._write(what, f"UPDATE conversations SET {column}=? WHERE id=?", (value, cid))

    def set_context_from(self, cid: str, message_id: int) -> None:
        self._set(cid, "context_from_id", int(message_id), "drop the oldest turns from the prompt")

    def rename(self, cid: str, title: str) -> None:
        self._set(cid, "title", title, "rename the conversation")

    def touch(self, cid: str) -> None:
        self._set(cid, "updated_at", time.time(), "save the conversation")

    def settings(self, cid: str) -> ChatSettings:
        row = self._db.execute("SELECT settings FROM conversations WHERE id=?", (cid,)).fetchone()
        return ChatSettings.from_json(row[0] if row else None)

    def set_settings(self, cid: str, settings: ChatSettings) -> None:
        self._set(cid, "settings", settings.to_json(), "save the chat settings")

    def delete(self, cid: str) -> None:
        """Hide a conversation; ``undelete`` brings it back until ``purge_deleted`` runs."""
        self._set(cid, "deleted_at", time.time(), "delete the conversation")

    def undelete(self, cid: str) -> None:
        self._set(cid, "deleted_at", None, "restore the conversation")

    def purge_deleted(self) -> list[str]:
        """Remove conversations deleted earlier (past their undo); returns their ids."""
        ids = [
            row[0]
            for row in self._db.execute("SELECT id FROM conversations WHERE deleted_at IS NOT NULL")
        ]
        self._write(
            "remove deleted conversations", "DELETE FROM conversations WHERE deleted_at IS NOT NULL"
        )
        self._remove_orphan_files()
        return ids

    # --- messages -----------------------------------------------------------------------------
    def add_message(
        self,
        cid: str,
        role: str,
        text: str,
        *,
        thinking: str = "",
        state: MessageState = MessageState.COMPLETE,
        attachments: tuple[StoredAttachment, ...] = (),
    ) -> StoredMessage:
        """Append a message after the last one shown (the version on screen is the one continued)."""
        return self._insert("save the message", cid, None, role, text, thinking, state, attachments)

    def add_version(
        self,
        of: int,
        text: str,
        *,
        thinking: str = "",
        state: MessageState = MessageState.COMPLETE,
        attachments: tuple[StoredAttachment, ...] = (),
    ) -> StoredMessage:
        """A new version of message ``of`` (a regenerated answer, an edited message), shown in its place:
        ``of`` and the messages after it stay, reachable with ``choose_version``."""
        row = self._db.execute(
            "SELECT conversation_id, role FROM messages WHERE id=?", (of,)
        ).fetchone()
        if row is None:
            raise StoreError("That message no longer exists.")
        return self._insert(
            "save the new version", row[0], of, row[1], text, thinking, state, attachments
        )

    def _insert(
        self,
        doing: str,
        cid: str,
        sibling_of: int | None,
        role: str,
        text: str,
        thinking: str,
        state: MessageState,
        attachments: tuple[StoredAttachment, ...],
    ) -> StoredMessage:
        now = time.time()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if sibling_of is None:  # after the last message shown
                row = self._db.execute(
                    "SELECT id, position + 1 FROM messages WHERE conversation_id=? AND shown=1 "
                    "ORDER BY position DESC LIMIT 1",
                    (cid,),
                ).fetchone()
                parent, position = row if row else (None, 0)
            else:  # beside it, hiding it and what follows it
                parent, position = self._db.execute(
                    "SELECT parent_id, position FROM messages WHERE id=?", (sibling_of,)
                ).fetchone()
                self._db.execute(
                    "UPDATE messages SET shown=0 WHERE conversation_id=? AND position>=?",
                    (cid, position),
                )
            self._db.execute(
                "UPDATE messages SET chosen=0 WHERE conversation_id=? AND position=? AND parent_id IS ?",
                (cid, position, parent),
            )
            cursor = self._db.execute(
                "INSERT INTO messages(conversation_id, position, role, text, thinking, state, created_at, "
                "parent_id, chosen, shown) VALUES(?,?,?,?,?,?,?,?,1,1)",
                (cid, position, role, text, thinking, state.value, now, parent),
            )
            mid = int(cursor.lastrowid)
            for ordinal, att in enumerate(attachments):
                self._db.execute(
                    "INSERT INTO attachments(message_id, ordinal, kind, path, name, options) "
                    "VALUES(?,?,?,?,?,?)",
                    (
                        mid,
                        ordinal,
                        att.kind.value,
                        self._relative(att.path),
                        att.name,
                        _options_json(att),
                    ),
                )
            self._db.execute("UPDATE conversations SET updated_at=? WHERE id=?", (now, cid))
            count = self._db.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation_id=? AND position=? AND parent_id IS ?",
                (cid, position, parent),
            ).fetchone()[0]
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise _friendly(error, doing) from error
        return StoredMessage(
            mid,
            cid,
            position,
            role,
            text,
            thinking,
            state,
            attachments=attachments,
            created_at=now,
            version=count,
            version_count=count,
        )

    def versions(self, mid: int) -> list[int]:
        """The ids of message ``mid``'s versions, oldest first (``mid`` among them)."""
        return [
            row[0]
            for row in self._db.execute(
                "SELECT s.id FROM messages m JOIN messages s ON s.conversation_id = m.conversation_id "
                "AND s.position = m.position AND s.parent_id IS m.parent_id WHERE m.id=? ORDER BY s.id",
                (mid,),
            )
        ]

    def choose_version(self, mid: int) -> int:
        """Show version ``mid`` in its chat, with the messages that followed it (each at the version last
        shown); returns its position (the messages from there on changed)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT conversation_id, position, parent_id FROM messages WHERE id=?", (mid,)
            ).fetchone()
            if row is None:
                raise StoreError("That message no longer exists.")
            cid, position, parent = row
            self._db.execute(
                "UPDATE messages SET chosen=(id=?) WHERE conversation_id=? AND position=? "
                "AND parent_id IS ?",
                (mid, cid, position, parent),
            )
            self._db.execute(
                "UPDATE messages SET shown=0 WHERE conversation_id=? AND position>=?",
                (cid, position),
            )
            current = mid
            while current is not None:
                self._db.execute("UPDATE messages SET shown=1 WHERE id=?", (current,))
                row = self._db.execute(
                    "SELECT id FROM messages WHERE parent_id=? ORDER BY chosen DESC, id DESC "
                    "LIMIT 1",
                    (current,),
                ).fetchone()
                current = row[0] if row else None
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise _friendly(error, "show that version") from error
        except StoreError:
            self._db.execute("ROLLBACK")
            raise
        return position

    def update_message(
        self,
        mid: int,
        *,
        text: str | None = None,
        thinking: str | None = None,
        state: MessageState | None = None,
        thinking_s: float | None = None,
        stats: StoredStats | None = None,
        error: str | None = None,
    ) -> None:
        columns: list[str] = []
        values: list = []
        for name, value in (
            ("text", text),
            ("thinking", thinking),
            ("thinking_s", thinking_s),
            ("error", error),
        ):
            if value is not None:
                columns.append(f"{name}=?")
                values.append(value)
        if state is not None:
            columns.append("state=?")
            values.append(state.value)
        if stats is not None:
            columns.append("stats=?")
            values.append(stats.to_json())
        if not columns:
            return
        self._write(
            "save the answer",
            f"UPDATE messages SET {', '.join(columns)} WHERE id=?",
            (*values, mid),
        )

    def messages(self, cid: str) -> list[StoredMessage]:
        """The chat as shown: each message at the version on screen."""
        return self._select("m.conversation_id=? AND m.shown=1", (cid,))

    def _select(self, where: str, params: tuple) -> list[StoredMessage]:
        rows = self._db.execute(
            "SELECT m.id, m.conversation_id, m.position, m.role, m.text, m.thinking, m.state, m.thinking_s, "
            f"m.stats, m.error, m.created_at FROM messages m WHERE {where} ORDER BY m.position",
            params,
        ).fetchall()
        versions = self._versions_of({row[1] for row in rows})
        attachments: dict[int, list[StoredAttachment]] = {}
        for mid, kind, path, name, options in self._db.execute(
            "SELECT a.message_id, a.kind, a.path, a.name, a.options FROM attachments a "
            f"JOIN messages m ON m.id = a.message_id WHERE {where} ORDER BY a.message_id, a.ordinal",
            params,
        ):
            attachments.setdefault(mid, []).append(self._attachment(kind, path, name, options))
        calls = self._tool_calls_of(where, params)
        steps: dict[int, list[StoredToolStep]] = {}
        for mid, step, text, thinking in self._db.execute(
            "SELECT t.message_id, t.step, t.text, t.thinking FROM tool_steps t "
            f"JOIN messages m ON m.id = t.message_id WHERE {where} ORDER BY t.message_id, t.step",
            params,
        ):
            steps.setdefault(mid, []).append(StoredToolStep(step, text, thinking))
        result = []
        for mid, conv, pos, role, text, thinking, state, thinking_s, stats, error, created in rows:
            version, count = versions.get(mid, (1, 1))
            result.append(
                StoredMessage(
                    mid,
                    conv,
                    pos,
                    role,
                    text,
                    thinking,
                    MessageState(state),
                    thinking_s,
                    StoredStats.from_dict(json.loads(stats)) if stats else None,
                    error,
                    tuple(attachments.get(mid, ())),
                    created,
                    version,
                    count,
                    tuple(calls.get(mid, ())),
                    tuple(steps.get(mid, ())),
                )
            )
        return result

    def _versions_of(self, conversations: set[str]) -> dict[int, tuple[int, int]]:
        """(version, count) of every message that has several versions, in one pass over each chat
        (a per-row count tripled the time to open a long chat)."""
        out: dict[int, tuple[int, int]] = {}
        for cid in conversations:
            for (ids,) in self._db.execute(
                "SELECT group_concat(id) FROM messages WHERE conversation_id=? GROUP BY parent_id, position "
                "HAVING COUNT(*) > 1",
                (cid,),
            ):
                siblings = sorted(int(i) for i in ids.split(","))
                out.update({mid: (n, len(siblings)) for n, mid in enumerate(siblings, start=1)})
        return out

    # --- tool calls -------------------------------------------------------------------------------
    def add_tool_call(self, mid: int, call: StoredToolCall) -> None:
        """Append one finished call to answer ``mid`` (saved as it finishes: a crash keeps it)."""
        self._write(
            "save the tool call",
            "INSERT INTO tool_calls(message_id, ordinal, step, call_id, server, tool, arguments, outcome, result, "
            "duration_s, truncated, images) VALUES(?, (SELECT COUNT(*) FROM tool_calls WHERE message_id=?), "
            "?,?,?,?,?,?,?,?,?,?)",
            (
                mid,
                mid,
                call.step,
                call.call_id,
                call.server,
                call.tool,
                call.arguments,
                call.outcome,
                call.result,
                call.duration_s,
                int(call.truncated),
                json.dumps([str(p) for p in call.images]),
            ),
        )

    def set_tool_step(self, mid: int, step: StoredToolStep) -> None:
        """Keep what the model wrote in a step of answer ``mid`` before its calls (saved as the step ends)."""
        self._write(
            "save the tool step",
            "INSERT OR REPLACE INTO tool_steps(message_id, step, text, thinking) VALUES(?,?,?,?)",
            (mid, step.step, step.text, step.thinking),
        )

    def _tool_calls_of(self, where: str, params: tuple) -> dict[int, list[StoredToolCall]]:
        out: dict[int, list[StoredToolCall]] = {}
        for (
            mid,
            step,
            call_id,
            server,
            tool,
            arguments,
            outcome,
            result,
            duration,
            truncated,
            images,
        ) in self._db.execute(
            "SELECT t.message_id, t.step, t.call_id, t.server, t.tool, t.arguments, t.outcome, t.result, "
            "t.duration_s, t.truncated, t.images FROM tool_calls t JOIN messages m ON m.id = t.message_id "
            f"WHERE {where} ORDER BY t.message_id, t.ordinal",
            params,
        ):
            out.setdefault(mid, []).append(
                StoredToolCall(
                    step,
                    call_id,
                    server,
                    tool,
                    arguments,
                    outcome,
                    result,
                    duration,
                    bool(truncated),
                    tuple(Path(p) for p in json.loads(images or "[]")),
                )
            )
        return out

    def tool_servers(self, cid: str) -> tuple[str, ...] | None:
        """The tool servers chat ``cid`` uses; None: every enabled one (the default)."""
        row = self._db.execute(
            "SELECT tool_servers FROM conversations WHERE id=?", (cid,)
        ).fetchone()
        return tuple(json.loads(row[0])) if row and row[0] is not None else None

    def set_tool_servers(self, cid: str, servers: Iterable[str] | None) -> None:
        value = None if servers is None else json.dumps(sorted(servers))
        self._set(cid, "tool_servers", value, "save the chat's tools")

    def message(self, mid: int) -> StoredMessage | None:
        """Any message, shown or an earlier version."""
        found = self._select("m.id=?", (mid,))
        return found[0] if found else None

    def has_media(self, cid: str) -> bool:
        """Whether the chat as shown holds an image, PDF or video (which only a vision model reads)."""
        return (
            self._db.execute(
                "SELECT 1 FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.conversation_id=? "
                "AND m.shown=1 AND a.kind != ? LIMIT 1",
                (cid, AttachmentKind.TEXT.value),
            ).fetchone()
            is not None
        )

    def delete_messages_from(self, cid: str, position: int) -> None:
        """Remove the shown message at ``position`` and everything after it (with their versions)."""
        self._write(
            "replace the later messages",
            "DELETE FROM messages WHERE conversation_id=? AND position>=? AND shown=1",
            (cid, position),
        )

    def mark_interrupted(self) -> int:
        """At start-up: answers still marked streaming were cut off by a crash or kill."""
        cursor = self._write(
            "mark interrupted answers",
            "UPDATE messages SET state=? WHERE state=?",
            (MessageState.INTERRUPTED.value, MessageState.STREAMING.value),
        )
        return cursor.rowcount

    # --- search -------------------------------------------------------------------------------
    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        return _search(self._db, query, limit)

    # --- attachments --------------------------------------------------------------------------
    def import_file(self, source: Path) -> Path:
        """Copy ``source`` into the attachments folder under its SHA-256; returns the stored copy."""
        source = Path(source)
        digest = hashlib.sha256()
        try:
            with source.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as error:
            raise StoreError(f"Could not read {source.name}: {error.strerror or error}.") from error
        name = digest.hexdigest() + source.suffix.lower()
        target = self.attachments_dir / name[:2] / name
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            shutil.copyfile(source, partial)
            partial.replace(target)
        except OSError as error:
            partial.unlink(missing_ok=True)
            why = "the disk is full" if error.errno == 28 else (error.strerror or str(error))
            raise StoreError(
                f"Could not copy {source.name} into the QwenDesk data folder: {why}."
            ) from error
        return target

    def _relative(self, path: Path) -> str:
        path = Path(path)
        try:
            return str(path.relative_to(self.attachments_dir))
        except ValueError:
            return str(path)

    def _attachment(self, kind: str, path: str, name: str, options: str) -> StoredAttachment:
        full = Path(path) if Path(path).is_absolute() else self.attachments_dir / path
        extra = json.loads(options or "{}")
        return StoredAttachment(AttachmentKind(kind), full, name, **extra)

    def _remove_orphan_files(self) -> None:
        used = {row[0] for row in self._db.execute("SELECT DISTINCT path FROM attachments")}
        for file in self.attachments_dir.glob("*/*"):
            if file.is_file() and str(file.relative_to(self.attachments_dir)) not in used:
                file.unlink(missing_ok=True)


def _search(db: sqlite3.Connection, query: str, limit: int) -> list[SearchHit]:
    terms = re.findall(r"\w+", query, flags=re.UNICODE)
    # Every term as a prefix, quoted so FTS5 syntax in user input cannot break the query. A query of
    # punctuation only ("%", "->") has no words for FTS5: the messages are scanned for it literally.
    rows = (
        _fts_rows(db, " ".join(f'"{t}"*' for t in terms), limit)
        if terms
        else _literal_rows(db, query, limit)
    )
    # Titles match too, so a chat named "Budget" is found even if no message says so.
    title_rows = db.execute(
        "SELECT id, title FROM conversations WHERE deleted_at IS NULL AND title LIKE ? ESCAPE '\\' "
        "ORDER BY updated_at DESC LIMIT ?",
        (f"%{_like_literal(query.strip())}%", limit),
    ).fetchall()
    hits = [SearchHit(*row) for row in rows]
    seen = {h.conversation_id for h in hits}
    hits += [SearchHit(cid, title, 0, title) for cid, title in title_rows if cid not in seen]
    return hits


def _fts_rows(db: sqlite3.Connection, match: str, limit: int) -> list[tuple]:
    # The newest hits first, and snippets only for those: made for every match before the sort,
    # snippets took most of a search over a long history (bench/search_stall.py).
    return db.execute(
        "WITH top AS (SELECT m.id AS id, c.updated_at AS updated, m.position AS position "
        "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
        "JOIN conversations c ON c.id = m.conversation_id "
        "WHERE messages_fts MATCH ?1 AND m.shown = 1 AND c.deleted_at IS NULL "
        "ORDER BY c.updated_at DESC, m.position LIMIT ?2) "
        "SELECT m.conversation_id, c.title, m.id, snippet(messages_fts, 0, '[', ']', '…', 12) "
        "FROM messages_fts JOIN top ON top.id = messages_fts.rowid JOIN messages m ON m.id = top.id "
        "JOIN conversations c ON c.id = m.conversation_id "
        "WHERE messages_fts MATCH ?1 ORDER BY top.updated DESC, top.position",
        (match, limit),
    ).fetchall()


def _literal_rows(db: sqlite3.Connection, query: str, limit: int) -> list[tuple]:
    """Messages holding ``query`` as written, newest chats first, with a snippet marked as FTS5 marks one."""
    needle = query.strip()
    rows = db.execute(
        "SELECT m.conversation_id, c.title, m.id, m.text FROM messages m "
        "JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.deleted_at IS NULL AND m.shown = 1 AND m.text LIKE ? ESCAPE '\\' "
        "ORDER BY c.updated_at DESC, m.position LIMIT ?",
        (f"%{_like_literal(needle)}%", limit),
    ).fetchall()
    out = []
    for cid, title, mid, text in rows:
        at = text.lower().find(needle.lower())
        if at < 0:  # LIKE folds ASCII case only; str.lower folds more: never mark a wrong place
            continue
        start, end = max(0, at - 40), at + len(needle) + 40
        snippet = (
            ("…" if start else "")
            + text[start:at]
            + f"[{text[at : at + len(needle)]}]"
            + text[at + len(needle) : end]
            + ("…" if end < len(text) else "")
        )
        out.append((cid, title, mid, snippet))
    return out


def search_database(database: Path, query: str, limit: int = 50) -> list[SearchHit]:
    """``Store.search`` on a connection of its own, read-only: safe on a pool thread while the GUI thread
    writes (WAL lets readers and the writer run side by side)."""
    db = sqlite3.connect(f"{Path(database).resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        return _search(db, query, limit)
    finally:
        db.close()


def _summary(row: tuple) -> ConversationSummary:
    cid, title, updated, created, pinned = row
    return ConversationSummary(cid, title, updated, created, bool(pinned))


def _like_literal(text: str) -> str:
    """``text`` as a LIKE pattern that matches only itself (``%`` and ``_`` are wildcards otherwise)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _options_json(att: StoredAttachment) -> str:
    data = asdict(att)
    for key in ("kind", "path", "name"):
        data.pop(key)
    return json.dumps(data)
