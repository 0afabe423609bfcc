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
