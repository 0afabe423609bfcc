"""A very long message in the real window: shown elided (no 2 s freeze), whole after "Show all", found by search.

The freeze itself is measured in bench/long_message.py; here the text each state shows is checked.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from test_app_ui import click_row, seed_chat

from app.views import long_text

PASTE_END = "THE-LAST-LINE-OF-THE-PASTE"
ANSWER_END = "The closing paragraph names the aardvark."


def _paste(chars: int, last: str) -> str:
    lines = [
        f"{i:6d} the write-ahead log lets readers continue while a writer appends."
        for i in range(chars // 70)
    ]
    return "\n".join(lines) + "\n" + last


def _answer(chars: int, last: str) -> str:
    paragraphs = [
        f"Paragraph {i}: a checkpoint folds the log back into the main file."
        for i in range(chars // 70)
    ]
    return "\n\n".join(paragraphs) + "\n\n" + last + "\n"


def _open_long_chat(make_window, qt_wait, qtbot):
    window = make_window()
    paste, answer = _paste(255_000, PASTE_END), _answer(120_000, ANSWER_END)
    seed_chat(window, "Short chat", ["Hi", "Hello."])
    seed_chat(window, "Long paste", [paste, answer])
    click_row(qtbot, window, "Long paste")
    qt_wait(
        lambda: (
            len(window.transcript.widgets) == 2
            and window.transcript.widgets[0].message.text == paste
            and all(w.isVisible() for w in window.transcript.widgets)
        ),
        10,
    )
    user, reply = window.transcript.widgets
    return window, user, reply, paste, answer


def test_a_long_message_shows_elided_then_whole_after_show_all(make_window, qt_wait, qtbot):
    window, user, reply, paste, answer = _open_long_chat(make_window, qt_wait, qtbot)

    shown = user.text_label.text()
    assert (
        len(shown) <= long_text.USER_SHOWN_CHARS
        and paste.startswith(shown)
        and PASTE_END not in shown
    )
    assert user.show_all_button.isVisible()
    assert (
        f"of {len(paste):,} characters" in user.show_all_row.findChild(type(user.text_label)).text()
    )
    assert ANSWER_END not in reply.answer.toPlainText()
    assert reply.answer.markdown == answer  # Copy still copies the whole answer

    qtbot.mouseClick(user.show_all_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: user.full_text is not None and user.full_text.isVisible(), 5)
    assert user.full_text.toPlainText() == paste and not user.text_label.isVisible()
    assert not user.show_all_button.isVisible()

    qtbot.mouseClick(reply.show_all_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: not reply.show_all_button.isVisible(), 5)
    shown_answer = reply.answer.toPlainText()
    assert shown_answer.rstrip().endswith(ANSWER_END) and "Paragraph 1000:" in shown_answer
    assert reply.answer.markdown == answer


def test_editing_an_elided_message_edits_the_whole_text(make_window, qt_wait, qtbot):
    window, user, _, paste, _ = _open_long_chat(make_window, qt_wait, qtbot)
    qtbot.mouseClick(user.edit_button, Qt.MouseButton.LeftButton)
    assert user.editor.toPlainText() == paste and not user.text_label.isVisible()


def test_search_finds_a_match_past_the_elided_part(make_window, qt_wait, qtbot):
    window, user, reply, paste, _ = _open_long_chat(make_window, qt_wait, qtbot)
    assert user.mark(PASTE_END.lower()) and user.marked_text == PASTE_END
    qt_wait(lambda: user.full_text is not None and user.full_text.isVisible(), 5)
    assert reply.mark("aardvark") and reply.marked_text == "aardvark"
    assert not reply.show_all_button.isVisible()
