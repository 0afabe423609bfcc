"""The header, composer, sidebar, menus and dialogs operated as a user does (keys, clicks, the widgets' own
signals) on the real window with the tiny model; each test checks where the effect lands: the settings the
engine received, the database row, the text on screen."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from conftest import record_generate
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QMessageBox, QPushButton

from app.controllers.chat import MAX_MESSAGE_CHARS
from app.store import ChatSettings, MessageState, Store, ThinkingMode
from app.views.model_picker import ModelPicker
from app.views.settings import SettingsDialog
from app.window import MainWindow


def engine_requests(window: MainWindow) -> list:
    """Every (conversation, GenerationSettings) the engine thread is asked to generate."""
    return record_generate(window)


def type_and_send(window: MainWindow, text: str) -> None:
    edit = window.composer.edit
    edit.setFocus()
    QTest.keyClicks(edit, text)
    QTest.keyClick(edit, Qt.Key.Key_Return)


def with_modal(action, timeout_s: float = 10.0) -> list:
    """Run ``action(dialog)`` on the next modal dialog once it is open (dialogs block in ``exec``)."""
    errors: list = []
    deadline = time.monotonic() + timeout_s

    def poll() -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None or not dialog.isVisible():
            if time.monotonic() < deadline:
                QTimer.singleShot(20, poll)
            return
        try:
            QTest.qWaitForWindowExposed(dialog)
            action(dialog)
        except Exception as error:  # reported by the test after exec returns
            errors.append(error)
            dialog.reject()

    QTimer.singleShot(20, poll)
    return errors


# --- header -------------------------------------------------------------------------------------------


def test_thinking_combo_off_reaches_the_engine_and_the_database(window, qt_wait):
    requests = engine_requests(window)
    window.chat.set_settings(ChatSettings().with_generation(max_tokens=16, seed=3))
    combo = window.thinking_combo
    combo.setFocus()
    # "Thinking on" -> "Thinking off", through the combo's activated
    QTest.keyClick(combo, Qt.Key.Key_Down)
    assert combo.currentText() == "Thinking off"
    type_and_send(window, "Hello there")
    qt_wait(lambda: requests and not window.chat.busy, 120)
    settings = requests[-1][1]
    assert settings.thinking is False and settings.thinking_budget is None
    # the chat's row
    assert window.store.settings(window.chat.current_id).thinking is ThinkingMode.OFF
    answer = window.store.messages(window.chat.current_id)[-1]
    assert answer.state is MessageState.COMPLETE and answer.thinking == ""
    assert not window.error_banner.isVisible(), window.error_banner.label.text()


def test_thinking_combo_budget_then_settings_dialog_shows_it(window, qt_wait):
    requests = engine_requests(window)
    combo = window.thinking_combo
    combo.setFocus()
    QTest.keyClick(combo, Qt.Key.Key_End)  # "Thinking budget"
    assert combo.currentData() == ThinkingMode.BUDGET
    seen: dict = {}

    def check(dialog) -> None:
        assert isinstance(dialog, SettingsDialog)
        seen["budget_checked"] = dialog.mode_budget.isChecked()
        seen["label"] = dialog.system_label.text()
        seen["title"] = dialog.windowTitle()
        dialog.max_tokens.setValue(8)
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()

    errors = with_modal(check)
    window.settings_button.click()
    assert not errors, errors
    assert seen == {
        "budget_checked": True,
        "label": "System prompt (for new chats)",
        "title": "Settings for new chats",
    }
    type_and_send(window, "Count to three")
    qt_wait(lambda: requests and not window.chat.busy, 120)
    settings = requests[-1][1]
    assert (
        settings.thinking is True and settings.thinking_budget == 1024 and settings.max_tokens == 8
    )


def test_settings_dialog_for_an_open_chat_says_this_chat(window, qt_wait):
    window.thinking_combo.setFocus()
    QTest.keyClick(window.thinking_combo, Qt.Key.Key_Down)
    window.chat.set_settings(ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=4))
    type_and_send(window, "Hi")
    qt_wait(lambda: not window.chat.busy, 120)
    seen: dict = {}

    def check(dialog) -> None:
        seen["label"] = dialog.system_label.text()
        dialog.system.setPlainText("Answer in French.")
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()

    errors = with_modal(check)
    window.settings_button.click()
    assert not errors, errors
    assert seen["label"] == "System prompt (for this chat)"
    assert window.store.settings(window.chat.current_id).system_prompt == "Answer in French."


# --- composer -----------------------------------------------------------------------------------------


def test_a_huge_paste_is_refused_at_once_and_kept(window, qt_wait):
    text = ("lorem ipsum dolor sit amet " * 40 + "\n") * 1000  # 1 MB
    assert len(text) > MAX_MESSAGE_CHARS
    QGuiApplication.clipboard().setText(text)  # (a QMimeData made here crashed the process at exit)
    edit = window.composer.edit
    edit.setFocus()
    QTest.keySequence(edit, "Ctrl+V")
    assert len(window.composer.text()) == len(text)
    started = time.perf_counter()
    QTest.keyClick(edit, Qt.Key.Key_Return)
    took = time.perf_counter() - started
    assert "characters long" in window.error_banner.label.text() and window.error_banner.isVisible()
    assert window.chat.current_id is None and window.store.conversations() == []  # nothing stored
    assert len(window.composer.text()) == len(text)  # and nothing lost
    print(f"refused a {len(text):,}-character paste in {took * 1000:.0f} ms")


# --- sidebar ------------------------------------------------------------------------------------------


def test_search_for_an_underscore_matches_only_titles_with_one(window, qt_wait):
    for title in ("snake_case names", "Plain title"):
        cid = window.store.create_conversation(title)
        window.store.add_message(cid, "user", "nothing special here")
    window.refresh_conversations()
    window.search.setFocus()
    QTest.keyClicks(window.search, "_")
    qt_wait(
        lambda: (
            window.conversation_list.count() >= 1
            and "snake_case" in window.conversation_list.item(0).text()
        )
    )
    QTest.qWait(300)  # a wrong hit would arrive with the same search
    titles = [
        window.conversation_list.item(i).text() for i in range(window.conversation_list.count())
    ]
    assert len(titles) == 1 and titles[0].startswith("snake_case"), titles


# --- model picker -------------------------------------------------------------------------------------


def test_escape_in_the_model_picker_keeps_the_context_length(window, qt_wait):
    before = window.store.get_pref("context_tokens")

    def edit_then_escape(dialog) -> None:
        assert isinstance(dialog, ModelPicker)
        spin = dialog.context
        dialog.activateWindow()  # as the window manager does for a new dialog
        spin.setFocus()
        spin.selectAll()
        QTest.keyClicks(spin, "8192")
        # editing finished: the picker applies it (rescans the fits)
        QTest.keyClick(spin, Qt.Key.Key_Tab)
        assert window.store.get_pref("context_tokens") == "8192"
        QTest.keyClick(dialog, Qt.Key.Key_Escape)

    errors = with_modal(edit_then_escape)
    window.model_button.click()
    assert not errors, errors
    assert window.store.get_pref("context_tokens", "unset") == (before or "32768")
    assert window.models.context_tokens == 32768


def test_add_folder_in_the_picker_accepts_a_folder_of_model_folders(
    window, qt_wait, tiny_model_dir, tmp_path, monkeypatch
):
    shelf = tmp_path / "models"
    shutil.copytree(tiny_model_dir, shelf / "org" / "Qwen3.5-tiny-copy")
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(shelf))
    )
    seen: dict = {}

    def add_and_wait(dialog) -> None:
        button = next(b for b in dialog.findChildren(QPushButton) if b.text() == "Add folder…")
        QTest.mouseClick(button, Qt.MouseButton.LeftButton)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            "Qwen3.5-tiny-copy" in str(e.path) for e in dialog.entries
        ):
            QTest.qWait(50)
        seen["rows"] = [dialog.table.item(r, 0).toolTip() for r in range(dialog.table.rowCount())]
        dialog.reject()

    errors = with_modal(add_and_wait, 60)
    window.model_button.click()
    assert not errors, errors
    assert any(row.endswith("Qwen3.5-tiny-copy") for row in seen["rows"]), seen
    assert json.loads(window.store.get_pref("model_folders")) == [str(shelf)]
    assert "config.json" not in window.error_banner.label.text()


def test_model_menu_add_folder_loads_the_one_model_inside(
    make_window, qt_wait, tiny_model_dir, tmp_path, monkeypatch
):
    window = make_window()
    shelf = tmp_path / "shelf"
    shutil.copytree(tiny_model_dir, shelf / "Qwen3.5-tiny")
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(shelf))
    )
    model_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Model")
    add = next(a for a in model_menu.actions() if a.text() == "Add model folder…")
    add.trigger()
    qt_wait(lambda: window.models.loaded_info is not None or window.error_banner.isVisible(), 120)
    assert window.models.loaded_info is not None, window.error_banner.label.text()
    assert Path(window.models.loaded_info.path) == shelf / "Qwen3.5-tiny"
    assert window.store.get_pref("last_model") == str(shelf / "Qwen3.5-tiny")


def test_model_menu_add_folder_with_several_models_opens_the_picker(
    make_window, qt_wait, tiny_model_dir, tmp_path, monkeypatch
):
    window = make_window()
    shelf = tmp_path / "shelf"
    for name in ("Qwen3.5-tiny-a", "Qwen3.5-tiny-b"):
        shutil.copytree(tiny_model_dir, shelf / name)
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(shelf))
    )
    seen: dict = {}

    def look(dialog) -> None:
        seen["rows"] = [dialog.table.item(r, 0).toolTip() for r in range(dialog.table.rowCount())]
        dialog.reject()

    errors = with_modal(look, 60)
    model_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Model")
    next(a for a in model_menu.actions() if a.text() == "Add model folder…").trigger()
    qt_wait(lambda: "rows" in seen or bool(errors), 60)
    assert not errors, errors
    assert {Path(row).name for row in seen["rows"]} >= {"Qwen3.5-tiny-a", "Qwen3.5-tiny-b"}
    # the user chooses
    assert window.models.loaded_info is None and window.models.loading_path is None
    assert json.loads(window.store.get_pref("model_folders")) == [str(shelf)]


def test_add_folder_with_no_model_says_why(make_window, qt_wait, tmp_path, monkeypatch):
    window = make_window()
    empty = tmp_path / "nothing-here"
    (empty / "sub").mkdir(parents=True)
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(empty))
    )
    model_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Model")
    next(a for a in model_menu.actions() if a.text() == "Add model folder…").trigger()
    qt_wait(lambda: window.error_banner.isVisible(), 30)
    assert "no model here" in window.error_banner.label.text()
    assert window.store.get_pref("model_folders") is None
    assert window.models.loaded_info is None


# --- quitting with an unsaved answer -------------------------------------------------------------------


def test_closing_with_an_unsaved_answer_asks_and_saves_on_retry(window, qt_wait, tmp_path):
    """The disk refused the final save (simulated by a read-only connection swap); closing asks, and
    Retry saves it once the database can be written again."""
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=6, seed=1)
    )
    real_update = window.store.update_message
    failing = {"on": True}

    def update(mid, **kw):
        if failing["on"]:
            from app.store import StoreError

            raise StoreError("Could not save the answer: the disk is full; free some space.")
        return real_update(mid, **kw)

    window.store.update_message = update
    type_and_send(window, "Hello")
    qt_wait(lambda: not window.chat.busy, 120)
    assert window.chat.unsaved and "disk is full" in window.error_banner.label.text()
    database = window.paths.database

    def retry_after_space_is_freed(dialog) -> None:
        assert isinstance(dialog, QMessageBox) and "not saved yet" in dialog.text()
        failing["on"] = False
        dialog.button(QMessageBox.StandardButton.Retry).click()

    errors = with_modal(retry_after_space_is_freed)
    window.close()
    assert not errors, errors
    again = Store(database, window.paths.attachments)
    answer = [m for m in again.messages(again.conversations()[0].id) if m.role == "assistant"][0]
    again.close()
    assert answer.state is MessageState.COMPLETE and answer.text
