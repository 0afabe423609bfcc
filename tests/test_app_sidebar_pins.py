"""Pinned chats and multi-select in the sidebar, operated with the context menu, clicks and shortcuts, and
checked in the SQLite file and the files written; plus the schema migration of a database from before pins."""

from __future__ import annotations

import sqlite3
import time

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QFileDialog, QMenu, QMessageBox

from app.store import MIGRATION_1, MIGRATIONS, Store


def rows(database, sql: str, *args):
    db = sqlite3.connect(database)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def titles(window) -> list[str]:
    lst = window.conversation_list
    return [lst.item(i).text() for i in range(lst.count())]


def item(window, title: str):
    lst = window.conversation_list
    return next(lst.item(i) for i in range(lst.count()) if lst.item(i).text() == title)


MODIFIER_KEYS = {
    Qt.KeyboardModifier.ShiftModifier: Qt.Key.Key_Shift,
    Qt.KeyboardModifier.ControlModifier: Qt.Key.Key_Control,
}


def click_row(qtbot, window, row: int, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    """Click a row, holding ``modifier`` (then let go of it, as a hand does)."""
    lst = window.conversation_list
    # Clicks a hand makes, not a double-click (which the list would take for "open", and a menu for a dismissal).
    qtbot.wait(QApplication.doubleClickInterval() + 10)
    qtbot.mouseClick(
        lst.viewport(),
        Qt.MouseButton.LeftButton,
        modifier,
        lst.visualItemRect(lst.item(row)).center(),
    )
    if modifier in MODIFIER_KEYS:
        qtbot.keyRelease(lst, MODIFIER_KEYS[modifier])


def click(qtbot, window, title: str, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    click_row(qtbot, window, window.conversation_list.row(item(window, title)), modifier)


def choose_from_menu(window, title: str, action_text: str) -> list[str]:
    """Right-click ``title``'s row and trigger ``action_text``; returns the menu's action texts."""
    lst = window.conversation_list
    seen: list[str] = []

    def choose():
        menu = QApplication.activePopupWidget()
        assert isinstance(menu, QMenu)
        seen.extend(a.text() for a in menu.actions() if a.text())
        menu.close()
        next(a for a in menu.actions() if a.text() == action_text).trigger()

    QTimer.singleShot(100, choose)
    lst.customContextMenuRequested.emit(lst.visualItemRect(item(window, title)).center())
    return seen


def seed(window, names: list[str]) -> dict[str, str]:
    """Chats with one exchange each, the last name the most recently used."""
    ids = {}
    for name in names:
        cid = window.store.create_conversation(name)
        window.store.add_message(cid, "user", f"About {name.lower()}")
        window.store.add_message(cid, "assistant", f"{name} are marsupials.")
        ids[name] = cid
        time.sleep(0.002)
    window.refresh_conversations()
    return ids


def test_a_database_from_before_pins_is_migrated_and_keeps_its_chats(tmp_path):
    database = tmp_path / "history.sqlite3"
    old = sqlite3.connect(database)
    old.executescript(f"BEGIN;\n{MIGRATION_1}\nPRAGMA user_version=1;\nCOMMIT;")
    old.execute(
        "INSERT INTO conversations(id, title, created_at, updated_at) VALUES('c1', 'Old chat', 1, 2)"
    )
    old.execute(
        "INSERT INTO messages(conversation_id, position, role, text, created_at) "
        "VALUES('c1', 0, 'user', 'kept words', 1)"
    )
    old.commit()
    old.close()
    store = Store(database, tmp_path / "attachments")
    try:
        assert store.schema_version == len(MIGRATIONS) >= 2
        (summary,) = store.conversations()
        assert (summary.id, summary.title, summary.pinned) == ("c1", "Old chat", False)
        assert store.context_from("c1") == 0 and store.messages("c1")[0].text == "kept words"
        # the search index survived
        assert [h.conversation_id for h in store.search("kept")] == ["c1"]
        store.set_pinned(["c1"], True)
    finally:
        store.close()
    reopened = Store(database, tmp_path / "attachments")
    try:
        assert reopened.conversation("c1").pinned and reopened.schema_version == len(MIGRATIONS)
    finally:
        reopened.close()


def test_pin_from_the_context_menu_keeps_the_chat_on_top_after_a_restart_and_the_shortcut_unpins(
    make_window, qt_wait, qtbot, tmp_path
):
    data = tmp_path / "data"
    window = make_window(data)
    seed(window, ["Wombats", "Quolls", "Numbats"])
    assert titles(window) == ["Numbats", "Quolls", "Wombats"]
    menu = choose_from_menu(window, "Wombats", "Pin chat")
    assert menu[:2] == ["Rename", "Pin chat"]
    assert rows(
        window.paths.database, "SELECT title FROM conversations WHERE pinned_at IS NOT NULL"
    ) == [("Wombats",)]
    assert (
        titles(window) == ["Wombats", "Numbats", "Quolls"] and item(window, "Wombats").font().bold()
    )
    # Quolls used last
    window.store.add_message(window.store.conversations()[-1].id, "user", "newer")
    window.close()
    again = make_window(data)
    assert titles(again) == ["Wombats", "Quolls", "Numbats"]  # still on top after a restart
    assert not item(again, "Quolls").font().bold()
    again.activateWindow()
    qtbot.waitUntil(again.isActiveWindow, timeout=5000)  # window shortcuts need the active window
    click(qtbot, again, "Wombats")
    again.conversation_list.setFocus()
    qtbot.keyClick(
        again.conversation_list,
        Qt.Key.Key_P,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    assert rows(
        again.paths.database, "SELECT COUNT(*) FROM conversations WHERE pinned_at IS NOT NULL"
    ) == [(0,)]
    assert titles(again) == ["Quolls", "Numbats", "Wombats"]


@pytest.fixture
def confirmations(monkeypatch):
    """Every confirmation asked (title, text), each answered Yes."""
    asked = []

    def question(_parent, title, text, *_args, **_kwargs):
        asked.append((title, text))
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def test_ctrl_and_shift_click_select_several_chats_deleted_with_one_confirmation_and_one_undo(
    make_window, qt_wait, qtbot, confirmations
):
    window = make_window()
    ids = seed(window, ["Wombats", "Quolls", "Numbats", "Bilbies"])
    click(qtbot, window, "Bilbies")  # a plain click opens the chat
    assert window.chat.current_id == ids["Bilbies"]
    assert titles(window) == ["Bilbies", "Numbats", "Quolls", "Wombats"]
    click(qtbot, window, "Quolls", Qt.KeyboardModifier.ShiftModifier)  # Bilbies..Quolls
    click(qtbot, window, "Numbats", Qt.KeyboardModifier.ControlModifier)  # ...but not Numbats
    assert window.chat.current_id == ids["Bilbies"]  # selecting opened nothing
    assert window.chat_list_actions.selected_ids() == [ids["Bilbies"], ids["Quolls"]]
    menu = choose_from_menu(window, "Quolls", "Delete 2 chats…")
    assert "Rename" not in menu and "Export 2 chats as Markdown…" in menu
    assert confirmations == [
        ("Delete chats", "Delete 2 chats? You can undo this until QwenDesk quits.")
    ]
    deleted = rows(
        window.paths.database,
        "SELECT title FROM conversations WHERE deleted_at IS NOT NULL ORDER BY title",
    )
    assert deleted == [("Bilbies",), ("Quolls",)]
    assert titles(window) == ["Numbats", "Wombats"] and window.chat.current_id is None
    assert window.banner.label.text() == "Deleted 2 chats."
    qtbot.mouseClick(window.banner.action, Qt.MouseButton.LeftButton)
    assert rows(
        window.paths.database, "SELECT COUNT(*) FROM conversations WHERE deleted_at IS NULL"
    ) == [(4,)]
    assert titles(window) == ["Bilbies", "Numbats", "Quolls", "Wombats"]
    # The Delete key in the list does the same for the selection.
    click(qtbot, window, "Numbats")
    click(qtbot, window, "Wombats", Qt.KeyboardModifier.ControlModifier)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)  # shortcuts need the active window
    window.conversation_list.setFocus()
    qtbot.keyClick(window.conversation_list, Qt.Key.Key_Delete)
    assert len(confirmations) == 2
    assert rows(
        window.paths.database,
        "SELECT title FROM conversations WHERE deleted_at IS NOT NULL ORDER BY title",
    ) == [("Numbats",), ("Wombats",)]


def test_several_chats_export_as_one_markdown_file_each(
    make_window, qt_wait, qtbot, tmp_path, monkeypatch, confirmations
):
    window = make_window()
    seed(window, ["Wombats", "Quolls", "Wombats"])  # two chats of the same title
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path / "out"))
    )
    click(qtbot, window, "Quolls")
    for row in (0, 2):
        click_row(qtbot, window, row, Qt.KeyboardModifier.ControlModifier)
    assert len(window.chat_list_actions.selected_ids()) == 3
    choose_from_menu(window, "Quolls", "Export 3 chats as Markdown…")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["Quolls.md", "Wombats-2.md", "Wombats.md"]
    assert (tmp_path / "out" / "Quolls.md").read_text(encoding="utf-8").startswith("# Quolls\n")
    assert "Quolls are marsupials." in (tmp_path / "out" / "Quolls.md").read_text(encoding="utf-8")
    assert [t for t, _ in confirmations] == ["Export"]  # the thinking question, once for all
    assert "Exported 3 chats" in window.statusBar().currentMessage()


def test_several_selected_chats_pin_together_in_their_order_and_unpin_together(make_window, qtbot):
    window = make_window()
    seed(window, ["Wombats", "Quolls", "Numbats", "Bilbies"])
    click(qtbot, window, "Quolls")
    click(qtbot, window, "Wombats", Qt.KeyboardModifier.ControlModifier)
    choose_from_menu(window, "Wombats", "Pin 2 chats")
    # on top, in the order they had
    assert titles(window) == [
        "Quolls",
        "Wombats",
        "Bilbies",
        "Numbats",
    ]
    assert rows(
        window.paths.database,
        "SELECT title FROM conversations WHERE pinned_at IS NOT NULL ORDER BY title",
    ) == [("Quolls",), ("Wombats",)]
    assert window.chat_list_actions.selected_ids() == [
        window.store.conversations()[i].id for i in (0, 1)
    ]
    choose_from_menu(window, "Quolls", "Unpin 2 chats")
    assert rows(
        window.paths.database, "SELECT COUNT(*) FROM conversations WHERE pinned_at IS NOT NULL"
    ) == [(0,)]
    assert titles(window) == ["Bilbies", "Numbats", "Quolls", "Wombats"]
