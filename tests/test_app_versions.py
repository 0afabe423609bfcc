"""Answer versions operated by hand: Regenerate and Edit keep the earlier versions, ``< n/m >`` switches
them on the message, the choice is in the database (and survives a restart), and a follow-up continues the
version on screen (checked in the prompt the engine received)."""

from __future__ import annotations

import test_app_window as base
from conftest import record_generate
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QPushButton

from app.store import ThinkingMode
from engine_mlx.conversation import Role

send, stored = base.send, base.stored


def engine_requests(window) -> list:
    return record_generate(window, lambda conversation, _settings: conversation)


def click(button) -> None:
    QApplication.processEvents()  # new widgets are shown from the event loop
    assert button.isVisible() and button.isEnabled(), button.text()
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def test_regenerate_keeps_the_earlier_answer_and_a_follow_up_continues_the_one_shown(
    window, make_window, qt_wait, tmp_path
):
    requests = engine_requests(window)
    send(window, qt_wait, "Tell me a story", thinking=ThinkingMode.OFF, max_tokens=8, seed=1)
    first = stored(window)[-1]
    window.chat.set_settings(window.chat.settings().with_generation(seed=2))
    click(window.transcript.widget_for(first.id).regenerate_button)
    assert window.chat.busy
    streaming = window.transcript.last_answer()
    assert not streaming.versions.older.isEnabled()  # no switching while it streams
    qt_wait(lambda: not window.chat.busy, 120)
    second = stored(window)[-1]
    assert second.id != first.id and second.position == first.position
    assert (second.version, second.version_count) == (2, 2)
    assert first.text != second.text  # (another seed: the check below can tell them apart)
    shown = window.transcript.widget_for(second.id)
    assert shown.versions.label.text() == "2/2" and not shown.versions.isHidden()
    assert not shown.versions.newer.isEnabled()
    # "<": the first answer is back, on screen and in the database.
    click(shown.versions.older)
    assert window.transcript.widget_for(second.id) is None
    back = window.transcript.widget_for(first.id)
    assert back.answer.markdown == first.text and back.versions.label.text() == "1/2"
    assert [m.id for m in stored(window)] == [stored(window)[0].id, first.id]
    # A follow-up continues the version shown: the prompt holds the first answer, not the second.
    base_count = len(requests)
    window.composer.edit.setFocus()
    QTest.keyClicks(window.composer.edit, "And then?")
    QTest.keyClick(window.composer.edit, Qt.Key.Key_Return)
    qt_wait(lambda: not window.chat.busy, 120)
    prompt = requests[base_count]
    assert [(m.role, m.text) for m in prompt.messages] == [
        (Role.USER, "Tell me a story"),
        (Role.ASSISTANT, first.text),
        (Role.USER, "And then?"),
    ]
    follow_up = stored(window)[2]
    parent = window.store._db.execute(
        "SELECT parent_id FROM messages WHERE id=?", (follow_up.id,)
    ).fetchone()
    assert follow_up.text == "And then?" and parent[0] == first.id
    # The choice survives a restart.
    cid, data = window.chat.current_id, window.paths.data
    window.close()
    again = make_window(data_dir=data)
    again.chat.open(cid)
    reopened = again.transcript.widget_for(first.id)
    assert reopened is not None and reopened.versions.label.text() == "1/2"
    assert [m.text for m in stored(again)][:3] == ["Tell me a story", first.text, "And then?"]


def test_edit_keeps_the_earlier_message_with_its_answer(window, qt_wait):
    send(window, qt_wait, "First question", thinking=ThinkingMode.OFF, max_tokens=8)
    question, answer = stored(window)
    widget = window.transcript.widget_for(question.id)
    click(widget.edit_button)
    QTest.keySequence(widget.editor, "Ctrl+A")
    QTest.keyClicks(widget.editor, "Second question")
    save = next(b for b in widget.edit_buttons.findChildren(QPushButton) if "send" in b.text())
    click(save)
    qt_wait(lambda: not window.chat.busy, 120)
    edited, new_answer = stored(window)
    assert edited.text == "Second question" and (edited.version, edited.version_count) == (2, 2)
    assert new_answer.id != answer.id
    switch = window.transcript.widget_for(edited.id).versions
    assert switch.label.text() == "2/2"
    click(switch.older)
    assert [m.id for m in stored(window)] == [question.id, answer.id]
    original = window.transcript.widget_for(question.id)
    assert (
        original.text_label.text() == "First question" and original.versions.label.text() == "1/2"
    )
    assert window.transcript.widget_for(answer.id).answer.markdown == answer.text
    click(original.versions.newer)
    assert [m.id for m in stored(window)] == [edited.id, new_answer.id]
    assert window.transcript.widget_for(new_answer.id) is not None


def test_a_failed_empty_answer_is_replaced_not_kept_as_a_version(window, qt_wait):
    send(window, qt_wait, "Hello", thinking=ThinkingMode.OFF, max_tokens=8)
    answer = stored(window)[-1]
    window.store.update_message(answer.id, text="", error="The engine failed.")
    window.chat.open(window.chat.current_id)
    click(window.transcript.widget_for(answer.id).regenerate_button)
    qt_wait(lambda: not window.chat.busy, 120)
    latest = stored(window)[-1]
    assert latest.id != answer.id and latest.version_count == 1
    assert window.store.message(answer.id) is None
