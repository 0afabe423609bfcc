"""MCP resources and prompts in the composer (issue 17), operated through the real widgets: the + menu's
submenus and actions, the / completer's popup and keys, the prompt's argument form. The real MCP host and
the SDK-written test server (tests/mcp_server.py) answer; the effects are checked where they land: the
attachment chips, the conversation the engine gets, the composer's text and the database rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtTest import QTest

from app.store import AttachmentKind
from engine_mlx.conversation import ImageAttachment, Role, TextAttachment
from engine_mlx.prompt import message_text
from tests.test_app_round3 import unnamed_controls
from tests.test_app_tools import (
    allow_test_server,
    click,
    forced,
    last_answer,
    run_forced,
    with_server,
)


@pytest.fixture
def served_window(make_window, tiny_model_dir, qt_wait):
    """The window with the tiny vision model and the test server (its tools, resources and prompts)."""
    window = make_window(model=tiny_model_dir)
    with_server(window, qt_wait)
    return window


def submenu(window, server: str):
    menu = window.composer.attach_menu
    return next((a.menu() for a in menu.actions() if a.menu() and a.text() == server), None)


def resource_action(window, server: str, name: str):
    sub = submenu(window, server)
    return next((a for a in sub.actions() if a.text() == name), None) if sub else None


def open_plus_menu(window):
    composer = window.composer
    assert composer.attach_button.menu() is composer.attach_menu  # + is a menu with tool servers
    composer.attach_menu.popup(composer.attach_button.mapToGlobal(QPoint(0, 0)))
    return composer.attach_menu


def record_turns(window) -> list:
    sent: list = []
    plain = window.tools.turn_for
    window.tools.turn_for = lambda c, convo, settings: (
        sent.append(convo),
        plain(c, convo, settings),
    )[1]
    return sent


def test_resources_from_the_plus_menu_are_attached_and_sent_as_context(served_window, qt_wait):
    window = served_window
    composer = window.composer
    menu = open_plus_menu(window)
    # The menu shows at once ("Listing…"), and fills in when the server answers.
    qt_wait(lambda: resource_action(window, "test", "quokka-note"), 30, lambda: str(menu.actions()))
    sub = submenu(window, "test")
    assert [a.text() for a in sub.actions()] == [
        "quokka-note",
        "big-note",
        "slow-note",
        "red-square",
    ]
    quokka = resource_action(window, "test", "quokka-note")
    assert quokka.toolTip() == "A note on quokkas."
    quokka.trigger()
    assert composer.chip_count() == 0  # read off the GUI thread: the chip follows
    qt_wait(lambda: composer.chip_count() == 1, 30)
    resource_action(window, "test", "red-square").trigger()
    qt_wait(lambda: composer.chip_count() == 2, 30)
    menu.hide()
    kinds = [(p.kind, p.stored.name) for p in window.attachments.items]
    assert kinds == [
        (AttachmentKind.TEXT, "quokka-note.md"),
        (AttachmentKind.IMAGE, "red-square.png"),
    ]
    # the scratch copies are gone
    assert not list(window.attachments.scratch_dir.glob("resource-*"))

    allow_test_server(window)
    sent = record_turns(window)
    answer = run_forced(window, qt_wait, "Noted.", text="What does the note say?")
    (convo,) = sent
    question = convo.messages[-1]
    assert question.role is Role.USER
    (text, image) = question.attachments
    assert isinstance(text, TextAttachment) and text.display_name == "quokka-note.md"
    assert isinstance(image, ImageAttachment)
    # The note's text is in the prompt, as a block headed by its name, before the question.
    assert message_text(question).startswith("quokka-note.md")
    assert "The quokka lives on Rottnest Island.\nIt smiles." in message_text(question)
    assert answer.text.endswith("Noted.")
    stored = window.store.messages(answer.conversation_id)[-2]
    assert [(a.kind, a.name) for a in stored.attachments] == [
        (AttachmentKind.TEXT, "quokka-note.md"),
        (AttachmentKind.IMAGE, "red-square.png"),
    ]
    assert Path(stored.attachments[1].path).read_bytes().startswith(b"\x89PNG")


def test_reading_a_slow_resource_never_blocks_the_window(served_window, qt_wait):
    window = served_window
    events: list[str] = []
    heartbeat = QTimer()
    heartbeat.setInterval(1)
    heartbeat.timeout.connect(lambda: events.append("beat"))
    window.attachments.added.connect(lambda _p: events.append("chip"))
    menu = open_plus_menu(window)
    qt_wait(lambda: resource_action(window, "test", "slow-note"), 30)
    heartbeat.start()
    events.append("chosen")
    resource_action(window, "test", "slow-note").trigger()  # the server takes 1.5 s to answer
    events.append("returned")
    qt_wait(lambda: "chip" in events, 30)
    heartbeat.stop()
    menu.hide()
    order = [e for e in events if e != "beat"]
    assert order == ["chosen", "returned", "chip"], order
    between = events[events.index("returned") : events.index("chip")]
    assert between.count("beat") >= 3  # the GUI thread ran while the server was reading
    (pending,) = window.attachments.items
    assert pending.stored.name == "slow-note.txt"
    assert Path(pending.stored.path).read_text() == "Worth the wait."


def test_the_plus_menu_still_attaches_files_and_says_when_the_chat_uses_no_server(
    served_window, qt_wait, tmp_path, monkeypatch
):
    from PySide6.QtWidgets import QFileDialog

    window = served_window
    notes = tmp_path / "notes.txt"
    notes.write_text("milk\n")
    monkeypatch.setattr(
        QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: ([str(notes)], ""))
    )
    menu = open_plus_menu(window)
    files = next(a for a in menu.actions() if a.text() == "Files…")
    files.trigger()
    qt_wait(lambda: window.composer.chip_count() == 1, 30)
    menu.hide()

    window.tools.set_chat_servers(window.chat.current_id, set())  # this chat uses no server
    open_plus_menu(window)
    texts = [a.text() for a in menu.actions()]
    assert any("No tool server runs for this chat" in t for t in texts) and not submenu(
        window, "test"
    )
    menu.hide()

    window.tools.save_servers(())  # no server at all: + opens the file picker directly again
    qt_wait(lambda: window.composer.attach_button.menu() is None, 10)
    QTest.mouseClick(window.composer.attach_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: window.composer.chip_count() == 2, 30)


def type_command(window, qt_wait, text: str):
    edit = window.composer.edit
    edit.setFocus()
    QTest.keyClicks(edit, text)
    popup = window.composer_context.completer.popup()
    qt_wait(lambda: popup.isVisible(), 30)
    model = popup.model()
    return popup, [model.index(i, 0).data() for i in range(model.rowCount())]


def test_a_prompt_chosen_with_slash_asks_its_arguments_and_fills_the_composer(
    served_window, qt_wait
):
    window = served_window
    edit = window.composer.edit
    popup, shown = type_command(window, qt_wait, "/re")
    assert shown == ["/review  —  Review a piece of code for one concern.  (test)"]
    QTest.keyClick(popup, Qt.Key.Key_Return)  # Enter picks the prompt; it does not send "/re"
    assert not window.chat.busy and not popup.isVisible()
    form = window.composer_context.form
    qt_wait(lambda: form.isVisible(), 10)
    assert not form.ok_button.isEnabled()  # "language" is required
    assert not unnamed_controls(form), unnamed_controls(form)
    QTest.keyClicks(form.fields["language"], "Rust")
    assert form.ok_button.isEnabled()
    click(form.ok_button)
    assert edit.toPlainText() == "/re"  # the server fills it in off the GUI thread
    qt_wait(lambda: edit.toPlainText() != "/re", 30)
    assert edit.toPlainText() == "Please review this Rust code, looking for bugs."
    assert not popup.isVisible()

    # A prompt without arguments fills in at once; Enter then sends what it wrote, as the user's message.
    edit.clear()
    popup, shown = type_command(window, qt_wait, "/")
    assert [s.split()[0] for s in shown] == ["/review", "/greet"]
    QTest.keyClicks(edit, "g")
    qt_wait(lambda: popup.model().rowCount() == 1, 10)
    QTest.keyClick(popup, Qt.Key.Key_Tab)
    qt_wait(lambda: edit.toPlainText() == "Hello there.\n\nHi! How can I help?", 30)
    allow_test_server(window)
    window.tools.step_settings = forced("Hello!")
    QTest.keyClick(edit, Qt.Key.Key_Return)
    qt_wait(lambda: not window.chat.busy, 120)
    question = window.store.messages(window.chat.current_id)[-2]
    assert question.text == "Hello there.\n\nHi! How can I help?"
    assert last_answer(window).text.endswith("Hello!")


def test_escape_closes_the_prompt_popup_and_keeps_the_text(served_window, qt_wait):
    window = served_window
    popup, _shown = type_command(window, qt_wait, "/gr")
    QTest.keyClick(popup, Qt.Key.Key_Escape)
    assert not popup.isVisible() and window.composer.edit.toPlainText() == "/gr"
    assert not window.chat.busy
