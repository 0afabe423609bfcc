"""Answer versions in the store: a regenerated answer or an edited message keeps the earlier versions, one
is shown at a time, and a database written by schema 1 is migrated to them with nothing lost."""

from __future__ import annotations

import sqlite3
import time

import pytest

from app.store import MIGRATION_1, MIGRATIONS, AttachmentKind, MessageState, Store, StoredAttachment


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite3", tmp_path / "attachments")
    yield s
    s.close()


def texts(store: Store, cid: str) -> list[str]:
    return [m.text for m in store.messages(cid)]


def test_a_new_version_hides_the_old_one_and_its_follow_ups_until_chosen_again(store):
    cid = store.create_conversation("Versions")
    q1 = store.add_message(cid, "user", "q1")
    a1 = store.add_message(cid, "assistant", "a1")
    q2 = store.add_message(cid, "user", "q2")
    store.add_message(cid, "assistant", "a2")
    # Edit q1: the edited message and its answer replace the rest on screen.
    q1b = store.add_version(q1.id, "q1 edited")
    assert (q1b.position, q1b.version, q1b.version_count) == (0, 2, 2)
    store.add_message(cid, "assistant", "a1 of the edit")
    assert texts(store, cid) == ["q1 edited", "a1 of the edit"]
    assert [(m.version, m.version_count) for m in store.messages(cid)] == [(2, 2), (1, 1)]
    # Back to the first version: its whole follow-up comes back.
    assert store.choose_version(q1.id) == 0
    assert texts(store, cid) == ["q1", "a1", "q2", "a2"]
    assert store.messages(cid)[0].version == 1
    # A regenerated answer in the middle: what followed it is kept with it.
    a1b = store.add_version(a1.id, "a1 again")
    assert texts(store, cid) == ["q1", "a1 again"]
    assert store.versions(a1.id) == [a1.id, a1b.id]
    store.choose_version(a1.id)
    assert texts(store, cid) == ["q1", "a1", "q2", "a2"]
    # The edit remembers the answer version last shown under it.
    store.choose_version(q1b.id)
    assert texts(store, cid) == ["q1 edited", "a1 of the edit"]
    assert store.message(q2.id).text == "q2"  # a hidden message is still readable by id


def test_a_follow_up_continues_the_version_shown(store):
    cid = store.create_conversation("Follow")
    store.add_message(cid, "user", "q")
    a = store.add_message(cid, "assistant", "first")
    b = store.add_version(a.id, "second")
    store.choose_version(a.id)
    follow = store.add_message(cid, "user", "and then?")
    assert follow.position == 2
    parent = store._db.execute(
        "SELECT parent_id FROM messages WHERE id=?", (follow.id,)
    ).fetchone()[0]
    assert parent == a.id
    assert texts(store, cid) == ["q", "first", "and then?"]
    store.choose_version(b.id)  # the other version has no follow-up
    assert texts(store, cid) == ["q", "second"]


def test_search_finds_only_the_versions_shown(store):
    cid = store.create_conversation("Search")
    store.add_message(cid, "user", "q")
    a = store.add_message(cid, "assistant", "walrus")
    store.add_version(a.id, "penguin")
    assert [h.message_id for h in store.search("penguin")]
    assert not store.search("walrus")
    store.choose_version(a.id)
    assert store.search("walrus") and not store.search("penguin")


def _schema_1_database(path, attachments) -> tuple[str, int]:
    """A history written by the released schema 1 (its SQL, as the app then wrote it)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(f"BEGIN;\n{MIGRATION_1}\nPRAGMA user_version=1;\nCOMMIT;")
    now = time.time()
    db.execute(
        "INSERT INTO conversations(id, title, created_at, updated_at, settings) VALUES('c1', 'Old chat', "
        "?, ?, '')",
        (now, now),
    )
    ids = []
    for position, (role, text) in enumerate(
        [
            ("user", "look at this"),
            ("assistant", "a narwhal"),
            ("user", "more"),
            ("assistant", "a second narwhal"),
        ]
    ):
        cursor = db.execute(
            "INSERT INTO messages(conversation_id, position, role, text, thinking, state, "
            "created_at) VALUES('c1', ?, ?, ?, '', 'complete', ?)",
            (position, role, text, now),
        )
        ids.append(cursor.lastrowid)
    (attachments / "ab").mkdir(parents=True)
    (attachments / "ab" / "abc.png").write_bytes(b"png")
    db.execute(
        "INSERT INTO attachments(message_id, ordinal, kind, path, name, options) "
        "VALUES(?, 0, 'image', 'ab/abc.png', 'photo.png', '{}')",
        (ids[0],),
    )
    db.close()
    return "c1", ids[1]


def test_a_schema_1_database_is_migrated_with_nothing_lost(tmp_path):
    database, attachments = tmp_path / "db.sqlite3", tmp_path / "attachments"
    cid, first_answer = _schema_1_database(database, attachments)
    store = Store(database, attachments)
    try:
        assert store.schema_version == len(MIGRATIONS)
        messages = store.messages(cid)
        assert [m.text for m in messages] == [
            "look at this",
            "a narwhal",
            "more",
            "a second narwhal",
        ]
        assert all((m.version, m.version_count) == (1, 1) for m in messages)
        assert messages[0].attachments[0].kind is AttachmentKind.IMAGE
        assert messages[0].attachments[0].path == attachments / "ab" / "abc.png"
        parents = [
            row[0]
            for row in store._db.execute(
                "SELECT parent_id FROM messages WHERE conversation_id=? ORDER BY position", (cid,)
            )
        ]
        assert parents == [None] + [m.id for m in messages[:-1]]
        assert store.search("narwhal")
        # The migrated chat takes new versions like a new one.
        again = store.add_version(first_answer, "a walrus", state=MessageState.COMPLETE)
        assert texts(store, cid) == ["look at this", "a walrus"] and again.version_count == 2
        store.choose_version(first_answer)
        assert len(store.messages(cid)) == 4
    finally:
        store.close()
    reopened = Store(database, attachments)  # re-open: the migration does not run twice
    try:
        assert reopened.schema_version == len(MIGRATIONS) and len(reopened.messages(cid)) == 4
    finally:
        reopened.close()


def test_a_version_keeps_the_attachments_of_an_edited_message(store, tmp_path):
    cid = store.create_conversation("Attach")
    file = tmp_path / "notes.txt"
    file.write_text("hello")
    att = StoredAttachment(AttachmentKind.TEXT, store.import_file(file), "notes.txt")
    q = store.add_message(cid, "user", "read this", attachments=(att,))
    edited = store.add_version(q.id, "read this carefully", attachments=q.attachments)
    shown = store.messages(cid)[0]
    assert shown.id == edited.id and shown.attachments[0].name == "notes.txt"
    store.purge_deleted()
    assert store.message(q.id).attachments[0].path.exists()
