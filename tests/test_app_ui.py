"""The window's controls used by hand (pytest-qt clicks, keys, menu actions), checked where the effect lands:
the settings the engine received, the rows in the database, the text on screen."""

from __future__ import annotations

import pytest
import test_app_window as base
from PySide6.QtCore import Qt

from app.store import MessageState, ThinkingMode

make_window, window = base.make_window, base.window  # the fixtures
send, stored = base.send, base.stored


@pytest.fixture
def engine_requests(window):
    """What the engine was asked to do: (conversation, GenerationSettings) per generate call."""
    got = []
    window.engine._requestGenerate.connect(lambda _rid, conversation, settings: got.append((conversation, settings)))
    return got


def test_reply_cut_off_while_thinking_says_so_and_continue_raises_the_limit(window, qt_wait, qtbot,
                                                                             engine_requests):
    send(window, qt_wait, "Think hard", thinking=ThinkingMode.ON, max_tokens=6)
    answer = stored(window)[-1]
    assert answer.state is MessageState.COMPLETE and answer.thinking and not answer.text  # cut off in thinking
    widget = window.transcript.widget_for(answer.id)
    assert not widget.limit_row.isHidden()
    assert "still thinking when it reached the 6-token limit" in widget.limit_label.text()
    qtbot.mouseClick(widget.continue_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: not window.chat.busy, 120)
    assert engine_requests[-1][1].max_tokens == 12  # the engine got the higher limit
    assert window.store.settings(window.chat.current_id).max_tokens == 12  # and the chat keeps it
    messages = stored(window)
    assert len(messages) == 2 and messages[-1].id != answer.id  # answered again, not appended
    # A reopened chat says the same about a stored cut-off reply.
    window.store.update_message(messages[-1].id, text="")
    window.chat.open(window.chat.current_id)
    assert "still thinking" in window.transcript.widget_for(messages[-1].id).limit_label.text()


def test_a_complete_answer_has_no_limit_note(window, qt_wait):
    send(window, qt_wait, "Hi", thinking=ThinkingMode.OFF, max_tokens=6)
    answer = stored(window)[-1]
    assert answer.text
    assert window.transcript.widget_for(answer.id).limit_row.isHidden()


def click_row(qtbot, window, text: str) -> None:
    lst = window.conversation_list
    item = next(lst.item(i) for i in range(lst.count()) if lst.item(i).text().startswith(text))
    qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=lst.visualItemRect(item).center())


def test_status_bar_shows_the_open_chats_figures(window, qt_wait, qtbot):
    send(window, qt_wait, "Alpha question", thinking=ThinkingMode.OFF)
    answer = stored(window)[-1]
    used = answer.stats.prompt_tokens + answer.stats.generated_tokens
    assert f"Context {used:,} /" in window.status_context.text()
    qtbot.mouseClick(window.new_button, Qt.MouseButton.LeftButton)
    assert window.status_context.text() == "" and window.status_speed.text() == ""
    click_row(qtbot, window, "Alpha question")
    assert window.chat.current_id == answer.conversation_id
    assert f"Context {used:,} /" in window.status_context.text() and "tok/s" in window.status_speed.text()


def test_text_file_attaches_and_reaches_the_engine_as_a_fenced_block(window, qt_wait, tmp_path, engine_requests):
    from engine_mlx.prompt import template_messages

    code = tmp_path / "adder.py"
    code.write_text("def add(a, b):\n    return a + b\n")
    base.drop(window, [code])
    qt_wait(lambda: len(window.attachments.items) == 1, 30, lambda: window.error_banner.label.text())
    chip = window.composer._chips[window.attachments.items[0].key]
    assert "adder.py" in chip.caption.text() and "2 lines" in chip.caption.text()
    send(window, qt_wait, "Review this", thinking=ThinkingMode.OFF, max_tokens=4)
    user = stored(window)[0]
    assert [a.kind.value for a in user.attachments] == ["text"] and user.attachments[0].name == "adder.py"
    conversation, _settings = engine_requests[-1]
    text = template_messages(conversation, text_only=True)[0]["content"]
    assert text.startswith("adder.py\n```py\ndef add(a, b):") and text.endswith("```\n\nReview this")
    assert stored(window)[-1].state is MessageState.COMPLETE


def test_text_only_model_takes_text_files_but_not_images(window, qt_wait, tmp_path):
    window.attachments.set_model("Qwen3.5-4bit-text", False)
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n")
    base.drop(window.composer, [notes, base.write_image(tmp_path / "a.png")])
    qt_wait(lambda: len(window.attachments.items) == 1, 30)
    assert window.attachments.items[0].kind.value == "text"
    assert "text-only" in window.error_banner.label.text()


def test_image_chip_shows_the_original_size(window, qt_wait, tmp_path):
    base.drop(window.composer, [base.write_image(tmp_path / "photo.png", size=(1024, 768))])
    qt_wait(lambda: len(window.attachments.items) == 1, 30)
    chip = window.composer._chips[window.attachments.items[0].key]
    assert "1024×768" in chip.caption.text()


def test_sent_pdf_shows_its_pages_as_thumbnails(window, qt_wait, tmp_path):
    from app.views.message import AttachmentThumb

    base.drop(window.composer, [base.write_pdf(tmp_path / "report.pdf", pages=6)])
    qt_wait(lambda: len(window.attachments.items) == 1, 30)
    chip = window.composer._chips[window.attachments.items[0].key]
    chip.last.setValue(6)
    send(window, qt_wait, "Summarise", thinking=ThinkingMode.OFF, max_tokens=4)
    thumb = window.transcript.widgets[0].findChildren(AttachmentThumb)[0]
    qt_wait(lambda: len(thumb.pictures) == 4, 30)  # the first four pages, rendered off the GUI thread
    assert all(not p.pixmap().isNull() and p.pixmap().height() <= 120 for p in thumb.pictures)
    assert thumb.caption.text() == "report.pdf · pages 1–6 (+2 more)"
