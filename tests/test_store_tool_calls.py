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
        assert store.schema_version == len(MIGRATIONS)
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
        # in the order they ran
        assert [c.call_id for c in answer.tool_calls] == [
            "call-1",
            "call-2",
        ]
        assert answer.tool_calls[0] == call
        assert reopened.tool_servers("c1") == ("files",)
        reopened.delete_messages_from("c1", 1)  # the calls go with their answer
        assert reopened._db.execute("SELECT COUNT(*) FROM tool_calls").fetchone()[0] == 0
    finally:
        reopened.close()


def _schema_4_database(path: Path) -> None:
    """A history with a tool turn as the app wrote it at schema 4, migration by migration as ``Store``
    runs them: the step's text only inside the answer's, its reasoning only inside the answer's, and no
    record of which part was the step's."""
    db = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:4], start=1):
        db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    now = time.time()
    db.execute(
        "INSERT INTO conversations(id, title, created_at, updated_at, settings) "
        "VALUES('c1', 'Tools', ?, ?, '')",
        (now, now),
    )
    user = db.execute(
        "INSERT INTO messages(conversation_id, position, role, text, state, created_at, parent_id) "
        "VALUES('c1', 0, 'user', 'read a', 'complete', ?, NULL)",
        (now,),
    ).lastrowid
    answer = db.execute(
        "INSERT INTO messages(conversation_id, position, role, text, thinking, state, created_at, "
        "parent_id) VALUES('c1', 1, 'assistant', 'Reading it.\n\nIt says a.', 'plan', 'complete', ?, ?)",
        (now, user),
    ).lastrowid
    db.execute(
        "INSERT INTO tool_calls(message_id, ordinal, step, call_id, server, tool, arguments, outcome, "
        "result) VALUES(?, 0, 0, 'call-1', 'files', 'read_text', '{\"path\": \"a.md\"}', 'ran', 'a')",
        (answer,),
    )
    db.close()


def test_a_schema_4_database_gains_the_steps_text_and_old_tool_turns_read_as_before(tmp_path):
    from app.controllers.chat import build_conversation
    from app.store import ChatSettings, StoredToolStep
    from engine_mlx.conversation import Message, Role, ToolCall

    database = tmp_path / "history.sqlite3"
    _schema_4_database(database)
    store = Store(database, tmp_path / "attachments")
    try:
        assert store.schema_version == len(MIGRATIONS) == 5
        _user, answer = store.messages("c1")
        assert answer.tool_steps == () and answer.text == "Reading it.\n\nIt says a."
        assert [c.call_id for c in answer.tool_calls] == ["call-1"]
        # An old turn rebuilds as schema 4 did: its step empty, the whole answer after the result.
        convo = build_conversation("c1", ChatSettings(), store.messages("c1"))
        assert convo.messages[1:] == (
            Message(
                Role.ASSISTANT,
                "",
                tool_calls=(ToolCall("read_text", '{"path": "a.md"}', "call-1"),),
            ),
            Message(Role.TOOL, "a"),
            Message(Role.ASSISTANT, "Reading it.\n\nIt says a.", thinking="plan"),
        )
        store.set_tool_step(answer.id, StoredToolStep(0, "Reading it.\n\n", "plan"))
    finally:
        store.close()
    reopened = Store(database, tmp_path / "attachments")
    try:
        _user, answer = reopened.messages("c1")
        assert answer.tool_steps == (StoredToolStep(0, "Reading it.\n\n", "plan"),)
        convo = build_conversation("c1", ChatSettings(), reopened.messages("c1"))
        step, _result, final = convo.messages[1:]
        assert (step.text, step.thinking, final.text, final.thinking) == (
            "Reading it.",
            "plan",
            "It says a.",
            "",
        )
        reopened.delete_messages_from("c1", 1)  # the steps go with their answer
        assert reopened._db.execute("SELECT COUNT(*) FROM tool_steps").fetchone()[0] == 0
    finally:
        reopened.close()
