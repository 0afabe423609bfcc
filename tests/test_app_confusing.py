"""What confused a new user (issue 15), operated on the real window: each check looks where the effect lands
(the banner, the database, the status bar, the file written, the list's selection)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import test_app_window as base
from media_files import write_image
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QContextMenuEvent, QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog, QMenu, QMessageBox

from app import theme
from app.store import AttachmentKind, StoredAttachment, StoredStats, ThinkingMode
from app.views.downloads import AddVisionDialog
from app.views.local_api import LOG_COLUMNS, this_machine
from app.views.model_picker import ModelPicker
from app.views.sidebar import ROLE_ID
from engine_mlx.server.records import RequestRecord

send, stored = base.send, base.stored


def menu_action(window, menu: str, text: str):
    found = next(a.menu() for a in window.menuBar().actions() if a.text() == menu)
    return next(a for a in found.actions() if a.text() == text)


def test_a_text_only_model_refusing_a_follow_up_for_earlier_images_says_so(
    make_window, qt_wait, tiny_text_model_dir, tmp_path
):
    window = make_window(model=tiny_text_model_dir)
    store = window.store
    cid = store.create_conversation("Photo chat")
    photo = StoredAttachment(
        AttachmentKind.IMAGE, store.import_file(write_image(tmp_path / "p.png")), "p.png"
    )
    store.add_message(cid, "user", "What is this?", attachments=(photo,))
    store.add_message(cid, "assistant", "A red square.")
    window.chat.open(cid)
    window.composer.edit.setFocus()
    QTest.keyClicks(window.composer.edit, "And its colour?")
    QTest.keyClick(window.composer.edit, Qt.Key.Key_Return)
    banner = window.error_banner
    assert (
        banner.isVisible()
        and "earlier messages" in banner.label.text()
        and "text-only" in banner.label.text()
    )
    assert banner.action.text().startswith("Add vision")
    # nothing lost
    assert len(store.messages(cid)) == 2 and window.composer.text() == "And its colour?"
    # Regenerate and Edit say the same instead of sending the chat to fail.
    banner.dismiss()
    answer = store.messages(cid)[-1]
    QApplication.processEvents()
    QTest.mouseClick(
        window.transcript.widget_for(answer.id).regenerate_button, Qt.MouseButton.LeftButton
    )
    assert banner.isVisible() and "earlier messages" in banner.label.text()
    assert not window.chat.busy and store.versions(answer.id) == [answer.id]
    # A chat without media goes through on the same model.
    QTest.mouseClick(window.new_button, Qt.MouseButton.LeftButton)
    send(window, qt_wait, "Plain text", thinking=ThinkingMode.OFF, max_tokens=4)
    assert stored(window)[-1].text


def test_add_vision_shows_an_example_not_a_value(make_window, tiny_text_model_dir, tmp_path):
    window = make_window()
    bare = tmp_path / "bare-model"
    shutil.copytree(tiny_text_model_dir, bare)
    dialog = AddVisionDialog(window.downloads, bare, window)
    if not dialog.source.text():  # nothing proposed from the model's card: the placeholder shows
        assert dialog.source.placeholderText().startswith("e.g. ")
    dialog.source.clear()
    assert dialog.source.placeholderText().startswith("e.g. ") and not dialog.add_button.isEnabled()


def test_an_added_folder_whose_model_is_refused_is_listed_with_the_reason(
    make_window, qt_wait, tiny_model_dir, tmp_path, monkeypatch
):
    window = make_window()
    refused = tmp_path / "shelf" / "Qwen3.5-with-code"
    shutil.copytree(tiny_model_dir, refused)
    (refused / "modeling_evil.py").write_text("print('never run')\n")
    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(refused))
    )
    menu_action(window, "&Model", "Add model folder…").trigger()
    qt_wait(lambda: window.error_banner.isVisible(), 60)
    assert "picker lists it" in window.error_banner.label.text()
    assert json.loads(window.store.get_pref("model_folders")) == [str(refused)]
    qt_wait(lambda: any(e.info is None and e.path == refused for e in window.models.entries), 60)
    picker = ModelPicker(window.models, window)
    row = next(
        r for r in range(picker.table.rowCount()) if picker.table.item(r, 0).text() == refused.name
    )
    reason = picker.table.item(row, 4).text()
    assert reason.startswith("Refused: ") and len(reason) > len("Refused: ")
    picker.reject()
    assert window.models.loaded_info is None


def test_the_local_api_dialog_names_this_machine_and_fits_its_columns_in_the_dark_theme(
    make_window,
):
    assert this_machine("linux") == "this computer" and this_machine("darwin") == "this Mac"
    window = make_window()
    window.set_theme(theme.Scheme.DARK)
    try:
        dialog = window.open_local_api()
        QTest.qWaitForWindowExposed(dialog)
        assert this_machine() in dialog.switch.text()
        window.local_api._on_record(
            RequestRecord(
                time.time(),
                "127.0.0.1 curl/8.5",
                "/v1/chat/completions",
                200,
                prompt_tokens=12_345,
                cached_tokens=12_000,
                completion_tokens=678,
                duration_s=12.34,
                finish_reason="stop",
            )
        )
        QApplication.processEvents()
        log, header = dialog.log, dialog.log.horizontalHeader()
        assert log.rowCount() == 1
        for column, label in enumerate(LOG_COLUMNS):
            cell = log.item(0, column).text()
            needed = max(
                header.fontMetrics().horizontalAdvance(label),
                log.fontMetrics().horizontalAdvance(cell),
            )
            assert header.sectionSize(column) >= needed, (label, cell)  # shown whole, not "…"
        dialog.close()
    finally:
        window.set_theme(theme.Scheme.LIGHT)


def test_the_welcome_page_offers_get_models(make_window, qt_wait, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    window = make_window()
    page = window.first_run
    qt_wait(lambda: window.pages.currentWidget() is page, 60)  # once the scan found no model
    from app.views.first_run import TEXT

    assert "Get models…" in TEXT
    QTest.mouseClick(page.get_button, Qt.MouseButton.LeftButton)
    assert window.downloads_dialog.isVisible()
    window.downloads_dialog.close()


def _two_chats(window) -> tuple[str, str]:
    first = window.store.create_conversation("First chat")
    window.store.add_message(first, "user", "one")
    second = window.store.create_conversation("Second chat")
    window.store.add_message(second, "user", "two")
    return first, second


def test_a_right_clicked_chat_is_not_highlighted_while_another_is_shown(make_window, qt_wait):
    window = make_window()
    first, second = _two_chats(window)
    window.chat.open(second)
    lst = window.conversation_list
    item = next(lst.item(i) for i in range(lst.count()) if lst.item(i).data(ROLE_ID) == first)
    asked: list = []  # the row each context-menu request is for
    lst.customContextMenuRequested.connect(lambda pos: asked.append(lst.itemAt(pos)))

    def close_menus() -> None:  # the row's menu, if the platform shows it, is closed again
        for menu in (
            w for w in QApplication.topLevelWidgets() if isinstance(w, QMenu) and w.isVisible()
        ):
            menu.close()
        if not asked:
            QTimer.singleShot(20, close_menus)

    QTimer.singleShot(20, close_menus)
    qt_wait(lambda: lst.itemAt(lst.visualItemRect(item).center()) is item, 10)  # laid out
    point = lst.visualItemRect(item).center()
    QTest.mouseClick(lst.viewport(), Qt.MouseButton.RightButton, pos=point)
    # (a real right-click also brings a context-menu event: QTest sends the mouse events only)
    QApplication.sendEvent(
        lst.viewport(),
        QContextMenuEvent(QContextMenuEvent.Reason.Mouse, point, lst.viewport().mapToGlobal(point)),
    )
    assert asked == [item]  # the menu is for the right-clicked row
    assert [i.data(ROLE_ID) for i in lst.selectedItems()] == [second]
    assert window.chat.current_id == second


def test_a_restart_reopens_the_last_chat(make_window, tmp_path):
    data = tmp_path / "data"
    window = make_window(data_dir=data)
    first, second = _two_chats(window)
    window.chat.open(first)
    window.close()
    again = make_window(data_dir=data)
    assert again.chat.current_id == first and again.title_label.text() == "First chat"
    assert [w.message.text for w in again.transcript.widgets] == ["one"]
    # a new chat was on screen at the quit
    QTest.mouseClick(again.new_button, Qt.MouseButton.LeftButton)
    again.close()
    assert make_window(data_dir=data).chat.current_id is None


def test_export_names_the_file_without_a_double_dot_and_says_what_was_sent(
    make_window, tmp_path, monkeypatch
):
    from media_files import write_pdf

    window = make_window()
    store = window.store
    cid = store.create_conversation("Read this.")
    pdf = StoredAttachment(
        AttachmentKind.PDF,
        store.import_file(write_pdf(tmp_path / "doc.pdf", pages=4)),
        "doc.pdf",
        first_page=2,
        last_page=3,
        page_count=4,
    )
    video = StoredAttachment(
        AttachmentKind.VIDEO,
        store.import_file(write_image(tmp_path / "v.png")),
        "clip.mp4",
        fps=2.0,
        start_s=1.0,
        end_s=4.0,
        duration_s=9.0,
    )
    store.add_message(cid, "user", "Summarise", attachments=(pdf, video))
    offered: list[str] = []

    def save_dialog(_parent, _title, default, _filter):
        offered.append(default)
        return str(tmp_path / "out" / Path(default).name), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(save_dialog))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: 0))
    window.chat_list_actions.export_one(cid)
    assert Path(offered[0]).name == "Read this.md"
    text = (tmp_path / "out" / "Read this.md").read_text()
    assert "[doc.pdf](Read this_files/doc.pdf) (pages 2–3 of 4)" in text
    assert "(1.0–4.0 s at 2 fps)" in text


def test_copy_last_answer_says_so_only_when_it_copied(window, qt_wait):
    QGuiApplication.clipboard().setText("before")
    action = menu_action(window, "&Edit", "Copy last answer")
    action.trigger()  # a new chat: nothing to copy
    assert QGuiApplication.clipboard().text() == "before"
    assert "no answer to copy" in window.statusBar().currentMessage()
    send(window, qt_wait, "Hi", thinking=ThinkingMode.OFF, max_tokens=4)
    action.trigger()
    assert QGuiApplication.clipboard().text() == stored(window)[-1].text
    assert window.statusBar().currentMessage() == "Copied the last answer"


def test_the_status_bar_drops_the_previous_models_figures(window, qt_wait, tiny_text_model_dir):
    send(window, qt_wait, "Hi", thinking=ThinkingMode.OFF, max_tokens=4)
    assert "tok/s" in window.status_speed.text() and window.status_context.text()
    window.models.load(tiny_text_model_dir)
    qt_wait(
        lambda: window.models.loaded_info is not None and not window.models.loaded_info.is_vision,
        120,
    )
    assert window.status_speed.text() == "" and window.status_context.text() == ""
    window.status_bar.show_stats(
        StoredStats.from_dict(dict(generated_tokens=3, decode_tps=9.0)), 4096
    )
    menu_action(window, "&Model", "Unload model").trigger()
    qt_wait(lambda: window.models.loaded_info is None, 60)
    assert window.status_speed.text() == "" and window.status_context.text() == ""
