"""End to end through the real window: real Engine on the tiny model, real SQLite file, real media files."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from media_files import write_image, write_pdf, write_video
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QGuiApplication, QImage
from PySide6.QtTest import QTest

from app.store import GENERATION_FIELDS, ChatSettings, MessageState, StoreError, ThinkingMode
from app.window import MainWindow

FAST = dict(max_tokens=32, seed=7)


def send(window: MainWindow, qt_wait, text: str, **settings) -> None:
    settings = {**FAST, **settings}
    generation = {k: settings.pop(k) for k in GENERATION_FIELDS if k in settings}
    window.chat.set_settings(ChatSettings(**settings).with_generation(**generation))
    window.composer.edit.setPlainText(text)
    assert window.send(window.composer.text()), window.error_banner.label.text()
    assert window.composer.text() == ""
    qt_wait(lambda: not window.chat.busy, 120)


def stored(window: MainWindow):
    return window.store.messages(window.chat.current_id)


def test_send_streams_answer_and_collapses_thinking(window, qt_wait):
    deltas: list[str] = []
    window.chat.answerDelta.connect(lambda _mid, text: deltas.append(text))
    send(window, qt_wait, "Explain WAL mode", thinking=ThinkingMode.BUDGET, thinking_budget=8)
    user, answer = stored(window)
    assert user.text == "Explain WAL mode"
    assert answer.state is MessageState.COMPLETE and answer.thinking and answer.text
    assert len(deltas) > 1 and "".join(deltas) == answer.text  # it streamed
    widget = window.transcript.widget_for(answer.id)
    assert widget.answer.markdown == answer.text
    block = widget.thinking
    assert not block.isHidden() and not block.expanded
    assert block.header.text().startswith("Thought for ") and " s · " in block.header.text()
    # thinking never leaks into the answer
    assert answer.thinking not in widget.answer.toPlainText()
    block.header.click()
    assert block.expanded and block.body.toPlainText() == answer.thinking
    assert "tok/s" in widget.stats_label.text()
    assert "tok/s" in window.status_speed.text() and "Context" in window.status_context.text()
    assert window.conversation_list.count() == 1


def test_thinking_off_shows_no_block(window, qt_wait):
    window.thinking_combo.setCurrentIndex(window.thinking_combo.findData(ThinkingMode.OFF))
    send(window, qt_wait, "Hi", thinking=ThinkingMode.OFF)
    answer = stored(window)[-1]
    assert answer.thinking == "" and answer.text
    assert window.transcript.widget_for(answer.id).thinking.isHidden()


def test_stop_mid_answer_with_escape(window, qt_wait):
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=4000, seed=1)
    )
    window.composer.edit.setPlainText("Write a long story")
    window.send(window.composer.text())
    assert window.composer.send_button.text() == "Stop"
    qt_wait(lambda: window.chat._stream is not None and window.chat._stream.answer, 60)
    window.act_stop.trigger()  # Esc
    qt_wait(lambda: not window.chat.busy, 60)
    answer = stored(window)[-1]
    assert answer.state is MessageState.STOPPED
    assert answer.stats is None or answer.stats.generated_tokens < 4000
    widget = window.transcript.widget_for(answer.id)
    assert widget.state_label.text() == "Stopped." and widget.answer.markdown == answer.text
    assert window.composer.send_button.text() == "Send"


def test_regenerate_and_edit_resend(window, qt_wait):
    send(window, qt_wait, "First question", thinking=ThinkingMode.OFF)
    send(window, qt_wait, "Second question", thinking=ThinkingMode.OFF)
    assert len(stored(window)) == 4
    old_last = stored(window)[-1].id
    last_widget = window.transcript.widget_for(old_last)
    assert not last_widget.regenerate_button.isHidden()
    last_widget.regenerate_button.click()
    qt_wait(lambda: not window.chat.busy, 60)
    messages = stored(window)
    assert len(messages) == 4 and messages[-1].id != old_last and messages[-1].text
    assert window.transcript.widget_for(old_last) is None
    # Edit the first question: everything after it is replaced.
    first = window.transcript.widget_for(messages[0].id)
    first.begin_edit()
    first.editor.setPlainText("Edited question")
    first._submit_edit()
    qt_wait(lambda: not window.chat.busy, 60)
    messages = stored(window)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[0].text == "Edited question" and messages[1].text
    assert len(window.transcript.widgets) == 2


def drop(widget, paths: list[Path]) -> None:
    """A drag entering ``widget`` then dropping real file URLs on it.

    Qt only routes drop events through QApplication::notify during a real drag session, so the
    widget's handlers get the (real) events directly, as the platform's drag manager would deliver them.
    """
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(QPoint(10, 10), *args)
    widget.dragEnterEvent(enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(10, 10), *args)
    widget.dropEvent(event)
    assert event.isAccepted()


def test_drop_image_pdf_video_then_send(window, qt_wait, tmp_path):
    image = write_image(tmp_path / "photo.png")
    pdf = write_pdf(tmp_path / "doc.pdf", pages=3)
    video = write_video(tmp_path / "clip.avi", seconds=3.0)
    drop(window.composer, [image, pdf])
    drop(window, [video])  # dropping on the window works too
    qt_wait(
        lambda: len(window.attachments.items) == 3, 60, lambda: window.error_banner.label.text()
    )
    assert window.composer.chip_count() == 3
    kinds = {p.kind.value: p for p in window.attachments.items}
    assert kinds["pdf"].stored.page_count == 3
    assert kinds["image"].thumbnail is not None and not kinds["image"].thumbnail.isNull()
    # The video pane opens, samples in the background and shows the frames that will be sent.
    pane = window.video_pane
    assert pane.isVisible() and "clip.avi" in pane.title.text()
    qt_wait(lambda: pane.strip.count() > 0 and not pane.busy, 60)
    pane.fps.setValue(1)
    pane.end.setValue(2.0)
    qt_wait(lambda: pane.strip.count() == 2 and not pane.busy and not pane._debounce.isActive(), 60)
    assert kinds["video"].key == pane.key
    video_att = window.attachments.get(pane.key).stored
    assert (video_att.fps, video_att.end_s) == (1.0, 2.0)
    # Narrow the PDF to one page, then send.
    chip = window.composer._chips[kinds["pdf"].key]
    chip.last.setValue(1)
    send(window, qt_wait, "What is in these?", thinking=ThinkingMode.OFF, max_tokens=8)
    user, answer = stored(window)
    assert [a.kind.value for a in user.attachments] == ["image", "pdf", "video"]
    assert all(
        a.path.is_relative_to(window.paths.attachments) and a.path.exists()
        for a in user.attachments
    )
    assert user.attachments[1].last_page == 1 and user.attachments[2].fps == 1.0
    assert answer.state is MessageState.COMPLETE, answer.error
    assert window.composer.chip_count() == 0 and not pane.isVisible()
    # History keeps its copies when the originals move.
    image.unlink()
    window.chat.open(window.chat.current_id)
    from app.views.message import AttachmentThumb

    thumbs = window.transcript.widgets[0].findChildren(AttachmentThumb)
    assert len(thumbs) == 3 and thumbs[0].pictures and not thumbs[0].pictures[0].pixmap().isNull()


def test_paste_image(make_window, tiny_model_dir, qt_wait, tmp_path):
    leftover = tmp_path / "data" / "pasted" / "pasted-crash.png"  # a crash left it before the copy
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\x89PNG")
    window = make_window(model=tiny_model_dir)
    assert not leftover.exists()
    image = QImage(64, 48, QImage.Format.Format_RGB32)
    image.fill(QColor("orange"))
    mime = QMimeData()
    mime.setImageData(image)
    QGuiApplication.clipboard().setMimeData(mime)
    window.composer.edit.setFocus()
    QTest.keySequence(window.composer.edit, "Ctrl+V")  # as the user pastes
    qt_wait(lambda: len(window.attachments.items) == 1, 30)
    pending = window.attachments.items[0]
    assert pending.kind.value == "image" and (pending.width, pending.height) == (64, 48)
    assert (
        pending.stored.path.is_file()
        and window.store.attachments_dir in pending.stored.path.parents
    )
    scratch = window.paths.data / "pasted"
    assert not any(scratch.iterdir()), "the pasted image's scratch file was left behind"


def test_text_only_model_refuses_attachments(window, qt_wait, tmp_path):
    window.attachments.set_model("Qwen3.5-4bit-text", False)
    drop(window.composer, [write_image(tmp_path / "a.png")])
    assert "text-only" in window.error_banner.label.text() and window.error_banner.isVisible()
    assert window.attachments.items == []


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("notes.zip", b"PK hello", "not supported"),
        ("blob.txt", b"\x00\x01 binary", "is a binary file"),
        ("broken.png", b"\x89PNG\r\n\x1a\nthis is not an image", "broken.png"),
        ("broken.mp4", b"\x00\x00\x00\x18ftypmp42 not a video", "broken.mp4"),
    ],
)
def test_bad_files_get_a_specific_message(make_window, qt_wait, tmp_path, name, content, expected):
    window = make_window()
    bad = tmp_path / name
    bad.write_bytes(content)
    drop(window.composer, [bad])
    qt_wait(lambda: window.error_banner.isVisible() and not window.attachments.busy, 30)
    assert expected in window.error_banner.label.text()
    assert window.attachments.items == []


def test_search_rename_delete_undo(window, qt_wait):
    send(window, qt_wait, "Tell me about quokkas", thinking=ThinkingMode.OFF, max_tokens=4)
    first = window.chat.current_id
    window.new_chat()
    send(window, qt_wait, "Recipes with artichokes", thinking=ThinkingMode.OFF, max_tokens=4)
    assert window.conversation_list.item(0).text().startswith("Recipes")  # newest first
    window.act_find.trigger()
    window.search.setText("quokk")
    qt_wait(
        lambda: (
            window.conversation_list.count() == 1
            and "quokka" in window.conversation_list.item(0).text()
        )
    )
    window.conversation_list.itemClicked.emit(window.conversation_list.item(0))
    assert window.chat.current_id == first
    window.search.clear()
    qt_wait(lambda: window.conversation_list.count() == 2)
    window.chat.rename(first, "Marsupials")
    assert window.store.conversation(first).title == "Marsupials"
    assert any(window.conversation_list.item(i).text() == "Marsupials" for i in range(2))
    window.chat.delete(first)
    assert window.conversation_list.count() == 1 and window.info_banner.isVisible()
    assert "Marsupials" in window.info_banner.label.text()
    window.info_banner.action.click()  # Undo
    assert window.conversation_list.count() == 2 and window.chat.current_id == first
    assert window.transcript.widgets[0].message.text == "Tell me about quokkas"


def test_restart_finds_everything_and_shows_interrupted_answer(
    make_window, tiny_model_dir, qt_wait, tmp_path
):
    window = make_window(tmp_path / "data", tiny_model_dir)
    send(window, qt_wait, "A finished exchange", thinking=ThinkingMode.OFF, max_tokens=8)
    # "Crash" right after the first periodic save of the streaming answer: copy the database as it is
    # on disk at that moment into a new data folder (the copy is what a killed process leaves behind).
    crashed = tmp_path / "crashed"
    snapshot: dict[str, str] = {}
    real_update = window.store.update_message

    def update_then_snapshot(mid, **fields):
        real_update(mid, **fields)
        if not snapshot and fields.get("state") is None and fields.get("text"):
            crashed.mkdir()
            source = sqlite3.connect(window.paths.database)
            target = sqlite3.connect(crashed / "qwendesk.sqlite3")
            source.backup(target)
            source.close()
            target.close()
            shutil.copytree(window.paths.attachments, crashed / "attachments")
            snapshot["text"] = fields["text"]

    window.store.update_message = update_then_snapshot
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=4000, seed=3)
    )
    window.composer.edit.setPlainText("A long answer that will be cut off")
    window.send(window.composer.text())
    qt_wait(lambda: bool(snapshot), 30)
    partial = snapshot["text"]
    window.chat.stop()
    qt_wait(lambda: not window.chat.busy, 30)
    window.store.update_message = real_update
    stopped_state = window.store.messages(window.chat.current_id)[-1].state
    # Restart on the crashed copy: everything is there, the cut-off answer says so.
    again = make_window(crashed)
    assert again.conversation_list.count() == 1
    again.conversation_list.itemClicked.emit(again.conversation_list.item(0))
    messages = again.store.messages(again.chat.current_id)
    assert [m.text for m in messages[:3]] == [
        "A finished exchange",
        messages[1].text,
        "A long answer that will be cut off",
    ]
    assert messages[3].state is MessageState.INTERRUPTED and messages[3].text == partial
    widget = again.transcript.widget_for(messages[3].id)
    assert "Interrupted" in widget.state_label.text() and widget.answer.markdown == partial
    # A clean restart of the original folder shows the stopped answer as stopped.
    window.close()
    third = make_window(tmp_path / "data")
    third.chat.open(third.chat.conversations()[0].id)
    assert third.store.messages(third.chat.current_id)[-1].state is stopped_state
    # it may have ended by itself
    assert stopped_state in (
        MessageState.STOPPED,
        MessageState.COMPLETE,
    )


def test_export_markdown_with_thinking_and_attachments(window, qt_wait, tmp_path):
    image = write_image(tmp_path / "chart.png")
    window.attachments.add_paths([image])
    qt_wait(lambda: len(window.attachments.items) == 1)
    send(window, qt_wait, "Describe the chart", thinking=ThinkingMode.BUDGET, thinking_budget=6)
    user, answer = stored(window)
    out = window.chat_list_actions.export_file(
        window.chat.current_id, tmp_path / "out" / "chat.md", include_thinking=True
    )
    text = out.read_text()
    assert text.startswith("# Describe the chart")
    assert "![chart.png](chat_files/chart.png)" in text
    assert (tmp_path / "out" / "chat_files" / "chart.png").read_bytes() == image.read_bytes()
    assert "<summary>Thinking</summary>" in text and answer.thinking.strip() in text
    assert answer.text.strip() in text
    plain = window.chat_list_actions.export_file(
        window.chat.current_id, tmp_path / "plain.md", include_thinking=False
    ).read_text()
    assert "Thinking" not in plain


def test_copy_last_answer_shortcut(window, qt_wait):
    send(window, qt_wait, "Say something", thinking=ThinkingMode.OFF, max_tokens=8)
    window.act_copy_last.trigger()
    assert QGuiApplication.clipboard().text() == stored(window)[-1].text
    assert window.act_copy_last.shortcut().toString() == "Ctrl+Shift+C"


def test_disk_full_while_streaming_keeps_the_answer(window, qt_wait, monkeypatch):
    real_update = window.store.update_message
    calls = {"failed": 0}

    def full(*args, **kwargs):
        if kwargs.get("state") is None:  # fail the periodic saves, let the final one through
            calls["failed"] += 1
            raise StoreError(
                "Could not save the answer: the disk is full; free some space and it will be "
                "saved again."
            )
        return real_update(*args, **kwargs)

    monkeypatch.setattr(window.store, "update_message", full)
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=120, seed=2)
    )
    window.composer.edit.setPlainText("hello")
    window.send(window.composer.text())
    qt_wait(lambda: calls["failed"] > 0, 30)
    assert "disk is full" in window.error_banner.label.text()
    qt_wait(lambda: not window.chat.busy, 60)
    answer = stored(window)[-1]
    assert answer.text and answer.text == window.transcript.widget_for(answer.id).answer.markdown


def test_missing_and_oversized_models_are_explained(make_window, qt_wait, tiny_model_dir, tmp_path):
    window = make_window()
    window.models.load(tmp_path / "gone")
    assert "no longer exists" in window.error_banner.label.text()
    window.models.set_context_tokens(2**34)  # a context no machine has memory for
    window.models.load(tiny_model_dir)
    qt_wait(lambda: window.models.loading_path is None, 60)
    assert "does not fit" in window.error_banner.label.text().lower()
    assert window.models.loaded_info is None and window.isVisible()
    # The last model's folder disappears between runs.
    window.store.set_pref("last_model", str(tmp_path / "moved-away"))
    assert window.models.reload_last() is False
    assert "moved or deleted" in window.error_banner.label.text()


def test_first_run_page_and_demo_model(make_window, qt_wait):
    window = make_window()
    qt_wait(lambda: window.models.scanned)
    assert window.pages.currentWidget() is window.first_run
    assert "random weights" in window.first_run.demo_button.text()
    window.first_run.demo_button.click()
    qt_wait(lambda: window.models.loaded_info is not None, 120)
    assert window.pages.currentWidget() is window.transcript
    assert "random weights" in window.demo_banner.label.text()
    assert window.store.get_pref("last_model") == str(window.paths.demo_model)
    assert "mixed 4–8 bit · vision" in window.status_model.text()  # 4-bit with 8-bit router gates
    assert window.models.loaded_info.mtp is not None  # it ships with a trained MTP head
    assert not window.paths.demo_model.with_name(window.paths.demo_model.name + ".partial").exists()


def test_gui_stays_responsive_while_loading_and_generating(make_window, tiny_model_dir, qt_wait):
    """The GUI thread keeps running its event loop while the engine thread loads and generates.

    No timing is asserted (stall figures against the 50 ms target are bench/ui_stream.py's job): a
    load or a generation done on the GUI thread, or one that blocks it until the end, would show no
    heartbeat while the load is pending and none between the first and the last streamed delta.
    """
    from PySide6.QtCore import QTimer

    window = make_window()
    events: list[str] = []
    heartbeat = QTimer()
    heartbeat.setInterval(1)
    heartbeat.timeout.connect(
        lambda: events.append("beat-loading" if window.models.loaded_info is None else "beat")
    )
    window.chat.answerDelta.connect(lambda _mid, _text: events.append("delta"))
    heartbeat.start()

    window.models.load(tiny_model_dir)
    # not loaded on this thread
    assert window.models.loaded_info is None and window.models.loading_path is not None
    qt_wait(lambda: window.models.loaded_info is not None, 120)
    assert "beat-loading" in events, "the GUI thread ran no event loop pass while the model loaded"

    events.clear()
    send(
        window,
        qt_wait,
        "Stream for a while",
        thinking=ThinkingMode.BUDGET,
        thinking_budget=16,
        max_tokens=160,
    )
    heartbeat.stop()
    deltas = [i for i, event in enumerate(events) if event == "delta"]
    assert len(deltas) > 1, events
    between = events[deltas[0] : deltas[-1]]
    assert between.count("beat") >= 1, (
        "the streamed deltas arrived in one burst: the GUI thread was blocked"
    )


def test_files_opened_by_the_system_are_attached(window, qapp, qt_wait, tmp_path):
    """A Dock drop / "Open With" arrives as a QFileOpenEvent; before the window exists it waits."""
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QFileOpenEvent

    from app.file_open import FileOpenRouter

    router = FileOpenRouter()
    qapp.installEventFilter(router)
    try:
        early = write_image(tmp_path / "early.png")
        QCoreApplication.sendEvent(qapp, QFileOpenEvent(str(early)))
        assert window.attachments.items == []  # no target yet: kept
        router.set_target(window.open_files)
        late = write_pdf(tmp_path / "late.pdf", pages=2)
        QCoreApplication.sendEvent(qapp, QFileOpenEvent(str(late)))
        qt_wait(
            lambda: len(window.attachments.items) == 2, 60, lambda: window.error_banner.label.text()
        )
        assert sorted(p.kind.value for p in window.attachments.items) == ["image", "pdf"]
    finally:
        qapp.removeEventFilter(router)
