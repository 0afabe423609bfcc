"""Each control of the header, composer, sidebar and menus used the way a person does (mouse clicks, key
presses, the combo box's own key handling, menu actions), checked where the effect lands: the settings
the engine received, the rows in the SQLite file, the text on screen, the clipboard."""

from __future__ import annotations

import sqlite3

import pytest
import test_app_ui as ui
import test_app_window as base
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QMenu

from app.store import MessageState, ThinkingMode

engine_requests = ui.engine_requests
FAST = {"max_tokens": 8, "seed": 3}


def rows(window, sql: str, *args):
    """Read the real database file, as a separate connection would."""
    db = sqlite3.connect(window.paths.database)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def type_and_enter(qtbot, window, text: str) -> None:
    edit = window.composer.edit
    edit.setFocus()
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


@pytest.fixture
def fast(window):
    from app.store import ChatSettings

    window.chat.set_settings(ChatSettings(thinking=ThinkingMode.OFF).with_generation(**FAST))
    return window


def test_header_thinking_box_by_keyboard_reaches_the_engine_and_the_database(
    fast, qt_wait, qtbot, engine_requests
):
    window = fast
    type_and_enter(qtbot, window, "First")
    qt_wait(lambda: not window.chat.busy, 120)
    combo = window.thinking_combo
    combo.setFocus()
    # "Thinking off" → "Thinking on", the combo's own key handling
    qtbot.keyClick(combo, Qt.Key.Key_Up)
    assert combo.currentText() == "Thinking on"
    stored = rows(window, "SELECT settings FROM conversations WHERE id=?", window.chat.current_id)[
        0
    ][0]
    assert '"thinking": "on"' in stored
    type_and_enter(qtbot, window, "Second")
    qt_wait(lambda: not window.chat.busy, 120)
    assert engine_requests[-1][1].thinking is True and engine_requests[0][1].thinking is False
    qtbot.keyClick(combo, Qt.Key.Key_Down)
    qtbot.keyClick(combo, Qt.Key.Key_Down)  # "Thinking budget"
    type_and_enter(qtbot, window, "Third")
    qt_wait(lambda: not window.chat.busy, 120)
    assert engine_requests[-1][1].thinking_budget is not None


def test_composer_enter_sends_shift_enter_adds_a_line_and_the_button_stops(fast, qt_wait, qtbot):
    window = fast
    edit = window.composer.edit
    edit.setFocus()
    qtbot.keyClicks(edit, "line one")
    qtbot.keyClick(edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(edit, "line two")
    assert rows(window, "SELECT COUNT(*) FROM messages")[0][0] == 0  # nothing sent yet
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qt_wait(lambda: not window.chat.busy, 120)
    assert rows(window, "SELECT text FROM messages WHERE role='user'") == [("line one\nline two",)]
    assert edit.toPlainText() == ""
    # A long answer, stopped with the same button (now "Stop").

    window.chat.set_settings(window.chat.settings().with_generation(max_tokens=4000))
    qtbot.keyClicks(edit, "Write a long story")
    qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
    assert window.composer.send_button.text() == "Stop"
    qt_wait(lambda: window.chat._stream is not None and window.chat._stream.answer, 60)
    qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: not window.chat.busy, 60)
    state = rows(
        window, "SELECT state FROM messages WHERE role='assistant' ORDER BY position DESC LIMIT 1"
    )
    assert state == [(MessageState.STOPPED.value,)]
    assert window.composer.send_button.text() == "Send"


def test_attach_button_and_chip_remove_button(fast, qt_wait, qtbot, tmp_path, monkeypatch):
    window = fast
    image = base.write_image(tmp_path / "photo.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("milk\n")
    from PySide6.QtWidgets import QFileDialog

    offered = []

    def fake_dialog(_parent, _title, _dir, filters):
        offered.append(filters)
        return [str(image), str(notes)], ""

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(fake_dialog))
    qtbot.mouseClick(window.composer.attach_button, Qt.MouseButton.LeftButton)
    assert "*.py" in offered[0] and "*.png" in offered[0] and "*.heic" not in offered[0]
    qt_wait(lambda: window.composer.chip_count() == 2, 30)
    image_key = next(p.key for p in window.attachments.items if p.kind.value == "image")
    chip = window.composer._chips[image_key]
    from PySide6.QtWidgets import QToolButton

    remove = next(b for b in chip.findChildren(QToolButton) if b.text() == "✕")
    qtbot.mouseClick(remove, Qt.MouseButton.LeftButton)
    assert window.composer.chip_count() == 1
    type_and_enter(qtbot, window, "Read this")
    qt_wait(lambda: not window.chat.busy, 120)
    assert rows(window, "SELECT kind, name FROM attachments") == [("text", "notes.txt")]


def test_sidebar_new_chat_rename_by_f2_and_delete_by_context_menu_with_undo(fast, qt_wait, qtbot):
    window = fast
    type_and_enter(qtbot, window, "Wombats")
    qt_wait(lambda: not window.chat.busy, 120)
    qtbot.mouseClick(window.new_button, Qt.MouseButton.LeftButton)
    assert window.title_label.text() == "New chat" and window.transcript.widgets == []
    type_and_enter(qtbot, window, "Quolls")
    qt_wait(lambda: not window.chat.busy, 120)
    lst = window.conversation_list
    assert [lst.item(i).text() for i in range(lst.count())] == ["Quolls", "Wombats"]
    # Rename with F2 on the list, type, Enter.
    ui.click_row(qtbot, window, "Wombats")
    lst.setFocus()
    qtbot.keyClick(lst, Qt.Key.Key_F2)
    from PySide6.QtWidgets import QLineEdit

    qt_wait(lambda: lst.viewport().findChild(QLineEdit) is not None, 5)
    editor = lst.viewport().findChild(QLineEdit)  # the row's editor that F2 opened
    editor.selectAll()
    qtbot.keyClicks(editor, "Burrowers")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qt_wait(lambda: ("Burrowers",) in rows(window, "SELECT title FROM conversations"), 10)
    assert window.title_label.text() == "Burrowers"
    # Delete from the row's context menu, then Undo in the banner.
    item = next(lst.item(i) for i in range(lst.count()) if lst.item(i).text() == "Burrowers")

    def choose_delete():
        menu = QApplication.activePopupWidget()
        assert isinstance(menu, QMenu)
        next(a for a in menu.actions() if a.text() == "Delete").trigger()
        menu.close()

    QTimer.singleShot(200, choose_delete)
    lst.customContextMenuRequested.emit(lst.visualItemRect(item).center())
    assert rows(
        window, "SELECT deleted_at IS NOT NULL FROM conversations WHERE title='Burrowers'"
    ) == [(1,)]
    assert "Deleted “Burrowers”" in window.banner.label.text()
    qtbot.mouseClick(window.banner.action, Qt.MouseButton.LeftButton)
    assert rows(window, "SELECT deleted_at IS NULL FROM conversations WHERE title='Burrowers'") == [
        (1,)
    ]
    assert lst.count() == 2


def test_menus_new_copy_regenerate(fast, qt_wait, qtbot):
    window = fast
    type_and_enter(qtbot, window, "Hello")
    qt_wait(lambda: not window.chat.busy, 120)
    first_answer = rows(window, "SELECT id, text FROM messages WHERE role='assistant'")[0]
    ui.menu_action(window, "Edit", "Copy last answer").trigger()
    assert QGuiApplication.clipboard().text() == first_answer[1]
    ui.menu_action(window, "Chat", "Regenerate answer").trigger()
    qt_wait(lambda: not window.chat.busy, 120)
    answers = rows(window, "SELECT id FROM messages WHERE role='assistant' AND shown=1")
    assert len(answers) == 1 and answers[0][0] != first_answer[0]
    # the first answer is kept as the earlier version (< 1/2 >)
    assert len(rows(window, "SELECT id FROM messages WHERE role='assistant'")) == 2
    ui.menu_action(window, "File", "New chat").trigger()
    assert window.chat.current_id is None and window.transcript.widgets == []


def test_model_menu_unload(fast, qt_wait):
    window = fast
    ui.menu_action(window, "Model", "Unload model").trigger()
    qt_wait(lambda: window.models.loaded_info is None, 30)
    assert (
        window.status_model.text() == "No model loaded" and window.model_button.text() == "No model"
    )
