"""Schema 4 (issue 17): tool calls saved under their answer and a chat's tool servers, migrated onto a
database the current released schema (3) wrote."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from app.store import MIGRATIONS, Store, StoredToolCall


def _schema_3_database(path: Path) -> None:
    """A history as the app wrote it before tools: the released migrations 1-3, then a chat."""
    db = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    now = time.time()
    db.execute(
        "INSERT INTO conversations(id, title, created_at, updated_at, settings) "
        "VALUES('c1', 'Old chat', ?, ?, '')",
        (now, now),
    )
    parent = None
    for position, (role, text) in enumerate([("user", "hello"), ("assistant", "hi there")]):
        cursor = db.execute(
            "INSERT INTO messages(conversation_id, position, role, text, state, created_at, "
            "parent_id) VALUES('c1', ?, ?, ?, 'complete', ?, ?)",
            (position, role, text, now, parent),
        )
        parent = cursor.lastrowid
    db.close()


def test_a_schema_3_database_gains_tool_calls_with_nothing_lost(tmp_path):
    database = tmp_path / "history.sqlite3"
    _schema_3_database(database)
    store = Store(database, tmp_path / "attachments")
    try:
        assert store.schema_version == len(MIGRATIONS) == 4
        user, answer = store.messages("c1")
        assert (user.text, answer.text, answer.tool_calls) == ("hello", "hi there", ())
        assert store.tool_servers("c1") is None  # an old chat uses every enabled server
        call = StoredToolCall(
            0,
            "call-1",
            "files",
            "read_text",
            '{"path": "a.md"}',
            "ran",
            "text of a",
            0.25,
            False,
            (tmp_path / "tool-images" / "call-1-0.png",),
        )
        store.add_tool_call(answer.id, call)
        store.add_tool_call(
            answer.id, StoredToolCall(1, "call-2", "files", "search", "{}", "denied", "no")
        )
        store.set_tool_servers("c1", {"files"})
    finally:
        store.close()
    reopened = Store(database, tmp_path / "attachments")
    try:
        _user, answer = reopened.messages("c1")
        assert [c.call_id for c in answer.tool_calls] == [
            "call-1",
            "call-2",
        ]  # in the order they ran
        assert answer.tool_calls[0] == call
        assert reopened.tool_servers("c1") == ("files",)
        reopened.delete_messages_from("c1", 1)  # the calls go with their answer
        assert reopened._db.execute("SELECT COUNT(*) FROM tool_calls").fetchone()[0] == 0
    finally:
        reopened.close()
