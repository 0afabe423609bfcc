"""The context meter under the message box, operated as a person does: typing and attaching fill it, the
engine's count replaces the estimate (and is what a send prefills), and near the limit its warning's two
ways out land in the database and in the next prompt."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import record_generate
from media_files import write_image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from app.chat_summary import extract_summary
from app.store import ChatSettings, StoredMessage, ThinkingMode

SENTENCE = "The quick brown fox jumps over the lazy dog. "
SETTINGS = ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=8, seed=1)


def rows(window, sql: str, *args):
    db = sqlite3.connect(window.paths.database)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def loaded(make_window, model_dir, qt_wait, context_tokens: int):
    """A window whose model is loaded with a small context, so the limit is near."""
    window = make_window()
    window.models.set_context_tokens(context_tokens)
    window.models.load(model_dir)
    qt_wait(lambda: window.models.loaded_info is not None or window.error_banner.isVisible(), 120)
    assert window.models.loaded_info is not None, window.error_banner.label.text()
    window.chat.set_settings(SETTINGS)
    return window


def engine_requests(window):
    return record_generate(window, lambda conversation, _settings: conversation)


def long_chat(window, qt_wait, qtbot, turns: int = 3) -> str:
    """A chat of ``turns`` long turns (about 110 tokens each), opened by clicking its row."""
    cid = window.store.create_conversation("Long chat", SETTINGS)
    for i in range(turns):
        window.store.add_message(cid, "user", f"Question {i}: " + SENTENCE * 4)
        window.store.add_message(cid, "assistant", f"Answer {i}: " + SENTENCE * 3)
    window.refresh_conversations()
    lst = window.conversation_list
    item = next(lst.item(i) for i in range(lst.count()) if lst.item(i).text() == "Long chat")
    qtbot.mouseClick(
        lst.viewport(), Qt.MouseButton.LeftButton, pos=lst.visualItemRect(item).center()
    )
    assert window.chat.current_id == cid
    return cid


def exact(window, qt_wait):
    view = window.context_meter_view
    qt_wait(
        lambda: view.reading is not None and view.reading.exact,
        60,
        "the engine never counted the prompt",
    )
    return view.reading


def test_typing_and_attaching_fill_the_meter_and_its_count_is_what_the_send_prefills(
    make_window, tiny_model_dir, qt_wait, qtbot, tmp_path, monkeypatch
):
    window = loaded(make_window, tiny_model_dir, qt_wait, 4096)
    view = window.context_meter_view
    assert view.isVisible() and view.label.text().endswith("/ 4,096 tokens")
    empty = exact(window, qt_wait).used
    assert empty > 0 and view.label.text() == f"{empty:,} / 4,096 tokens"
    edit = window.composer.edit
    edit.setFocus()
    qtbot.keyClicks(edit, SENTENCE * 2)
    typed = view.reading  # at once, on the GUI thread: an estimate, marked "~"
    assert typed.used > empty and not typed.exact and view.label.text().startswith("~")
    text_only = exact(window, qt_wait).used
    assert (
        text_only > empty
        and not view.label.text().startswith("~")
        and view.bar.value() == text_only
    )
    # Attach an image with the + button.
    image = write_image(tmp_path / "cat.png", size=(320, 240))
    monkeypatch.setattr(
        QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: ([str(image)], ""))
    )
    qtbot.mouseClick(window.composer.attach_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: window.composer.chip_count() == 1, 30)
    assert view.reading.used > text_only and not view.reading.exact
    with_image = exact(window, qt_wait).used
    assert with_image > text_only
    assert not view.warning.isVisible()
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qt_wait(lambda: not window.chat.busy, 120)
    answer = window.store.messages(window.chat.current_id)[-1]
    # the meter's count is the prompt the engine prefilled
    assert answer.stats.prompt_tokens == with_image


def test_near_the_limit_it_warns_and_dropping_the_oldest_turns_leaves_them_out_of_the_next_prompt(
    make_window, tiny_model_dir, qt_wait, qtbot
):
    window = loaded(make_window, tiny_model_dir, qt_wait, 420)
    requests = engine_requests(window)
    view = window.context_meter_view
    cid = long_chat(window, qt_wait, qtbot)
    history = exact(window, qt_wait).used
    assert 300 < history < 400 and not view.warning.isVisible()
    edit = window.composer.edit
    edit.setFocus()
    qtbot.keyClicks(edit, SENTENCE * 6)
    reading = exact(window, qt_wait)
    assert reading.overflow and view.warning.isVisible()
    assert "420-token context" in view.warning_label.text() and view.drop_button.isVisible()
    qtbot.mouseClick(view.drop_button, Qt.MouseButton.LeftButton)
    messages = window.store.messages(cid)
    assert rows(window, "SELECT context_from_id FROM conversations WHERE id=?", cid) == [
        (messages[2].id,)
    ]
    assert "1 oldest turn is no longer sent" in window.banner.label.text()
    after = exact(window, qt_wait)
    assert after.used < reading.used and not after.overflow and not view.warning.isVisible()
    assert view.label.text() == f"{after.used:,} / 420 tokens · oldest turns not sent"
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qt_wait(lambda: not window.chat.busy, 120)
    sent = [m.text for m in requests[-1].messages]
    assert not any("Question 0" in t or "Answer 0" in t for t in sent)
    assert sent[0].startswith("Question 1") and sent[-1] == (SENTENCE * 6).strip()
    assert window.store.messages(cid)[0].text.startswith("Question 0")  # kept in the history
    assert window.store.messages(cid)[-1].stats.prompt_tokens == after.used


def test_new_chat_with_a_summary_carries_an_extract_and_keeps_the_message(
    make_window, tiny_model_dir, qt_wait, qtbot
):
    window = loaded(make_window, tiny_model_dir, qt_wait, 420)
    requests = engine_requests(window)
    view = window.context_meter_view
    old = long_chat(window, qt_wait, qtbot)
    edit = window.composer.edit
    edit.setFocus()
    qtbot.keyClicks(edit, SENTENCE * 6)
    assert exact(window, qt_wait).overflow and view.summary_button.isVisible()
    qtbot.mouseClick(view.summary_button, Qt.MouseButton.LeftButton)
    new = window.chat.current_id
    assert new != old and window.title_label.text() == "Long chat (continued)"
    ((title, settings),) = rows(window, "SELECT title, settings FROM conversations WHERE id=?", new)
    prompt = json.loads(settings)["system_prompt"]
    assert title == "Long chat (continued)"
    assert prompt.startswith("Summary of the earlier chat “Long chat”") and "Question 2" in prompt
    assert rows(window, "SELECT COUNT(*) FROM messages WHERE conversation_id=?", new) == [(0,)]
    assert edit.toPlainText() == SENTENCE * 6  # the message waits in the box
    assert not exact(window, qt_wait).overflow and not view.warning.isVisible()
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qt_wait(lambda: not window.chat.busy, 120)
    system = requests[-1].messages[0]
    assert system.role.value == "system" and system.text == prompt
    assert len(window.store.messages(old)) == 6  # the old chat is untouched


@pytest.mark.parametrize("limit", [2000, 200])
def test_extract_summary_keeps_the_newest_turns_within_its_size(limit):
    messages = []
    for i in range(6):
        messages.append(StoredMessage(2 * i, "c", 2 * i, "user", f"Question {i}? " + "word " * 80))
        messages.append(
            StoredMessage(2 * i + 1, "c", 2 * i + 1, "assistant", f"Answer {i}. " + "more " * 90)
        )
    text = extract_summary("Chat", messages, limit)
    lines = text.splitlines()
    assert lines[0].startswith("Summary of the earlier chat “Chat”") and "Question 5" in text
    assert len(text) <= limit or len([ln for ln in lines if ln.startswith("- You:")]) == 1
    left_out = 6 - len([ln for ln in lines if ln.startswith("- You:")])
    assert (f"({left_out} earlier turn" in text) == (left_out > 0)
    # each message clipped (questions 200, answers 300)
    assert all(len(ln) <= 310 for ln in lines[1:])


def test_regenerate_after_every_turn_was_dropped_still_sends_the_question(
    make_window, tiny_model_dir, qt_wait, qtbot
):
    window = loaded(make_window, tiny_model_dir, qt_wait, 4096)
    requests = engine_requests(window)
    cid = long_chat(window, qt_wait, qtbot, turns=2)
    last = window.store.messages(cid)[-1]
    window.store.set_context_from(cid, last.id + 1)  # what dropping every turn leaves
    window.context_meter.history_changed()
    assert not window.context_meter.reading.droppable
    window.act_regenerate.trigger()
    qt_wait(lambda: not window.chat.busy, 120)
    assert [m.text for m in requests[-1].messages] == [window.store.messages(cid)[-2].text]
    assert requests[-1].messages[0].text.startswith("Question 1")
