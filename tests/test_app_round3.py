"""Issue 15, by hand: the broken items, keyboard use and accessibility names, each operated through the real
widgets of the real window (tiny model, real SQLite) and checked where the effect lands."""

from __future__ import annotations

import pytest
import test_app_ui as ui
import test_app_window as base
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.store import MessageState, ThinkingMode

send, stored = base.send, base.stored


def active(window):
    """The window, active: keyboard focus only moves inside the active window."""
    window.activateWindow()
    assert QTest.qWaitForWindowActive(window)
    return window


# --- 1. Continue belongs to its own answer, and only the last one can be continued ------------------


def test_continue_is_offered_on_the_last_answer_only_and_an_older_one_is_refused(window, qt_wait):
    send(window, qt_wait, "Think hard", thinking=ThinkingMode.ON, max_tokens=6)
    older = stored(window)[-1]
    assert older.thinking and not older.text  # cut inside its thinking by the limit
    old_widget = window.transcript.widget_for(older.id)
    assert not old_widget.continue_button.isHidden()  # the last answer offers Continue
    send(window, qt_wait, "Now answer briefly", thinking=ThinkingMode.OFF, max_tokens=32)
    before = stored(window)
    assert before[-1].state is MessageState.COMPLETE and before[-1].text
    assert old_widget.continue_button.isHidden() and old_widget.continue_link.isHidden()
    # Its button, pressed anyway (as a stale screen would let one): refused, nothing in the history changes.
    old_widget.continue_button.click()
    assert not window.chat.busy
    assert stored(window) == before
    assert (
        window.error_banner.isVisible()
        and "Only the last answer" in window.error_banner.label.text()
    )
    # The last answer's own Continue carries on that answer, in its own row.
    window.store.update_message(before[-1].id, state=MessageState.STOPPED)
    window.chat.open(window.chat.current_id)
    last_widget = window.transcript.widget_for(before[-1].id)
    assert not last_widget.continue_link.isHidden()
    last_widget.continue_link.click()
    qt_wait(lambda: not window.chat.busy, 120)
    after = stored(window)
    assert [m.id for m in after] == [m.id for m in before]
    assert after[1] == before[1]  # the older answer untouched
    assert after[-1].text.startswith(before[-1].text) and len(after[-1].text) > len(before[-1].text)


# --- 3. Model picker ▸ Rescan -----------------------------------------------------------------------


def test_model_picker_rescan_button_lists_a_folder_added_since(
    window, qt_wait, qtbot, tiny_model_dir, tmp_path
):
    import json
    import shutil

    from app.views.model_picker import ModelPicker

    picker = ModelPicker(window.models, window, downloads=window.downloads)
    qtbot.addWidget(picker)
    picker.show()
    qt_wait(lambda: window.models.scanned)
    shelf = tmp_path / "shelf"
    shutil.copytree(tiny_model_dir, shelf / "Qwen3.5-copy")
    window.store.set_pref("model_folders", json.dumps([str(shelf)]))
    scans = []
    window.models.modelsChanged.connect(scans.append)
    qtbot.mouseClick(picker.rescan_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: scans, 60)
    qt_wait(lambda: any("Qwen3.5-copy" in str(e.path) for e in picker.entries), 30)
    names = [picker.table.item(row, 0).toolTip() for row in range(picker.table.rowCount())]
    assert any("Qwen3.5-copy" in name for name in names)


# --- 4. and 5. Search: "%" and a search hit's context menu --------------------------------------------


def _type_search(qtbot, window, text: str) -> None:
    window.search.setFocus()
    window.search.clear()
    qtbot.keyClicks(window.search, text)


def test_searching_punctuation_finds_messages_and_titles(make_window, qt_wait, qtbot):
    window = active(make_window())
    ui.seed_chat(window, "Discounts", ["What is 15% of 80?", "12."])
    ui.seed_chat(window, "100% sure", ["Are you?", "Yes."])
    ui.seed_chat(window, "Wombats", ["They dig.", "Yes."])
    _type_search(qtbot, window, "%")
    lst = window.conversation_list
    qt_wait(
        lambda: lst.count() == 2 and lst.item(0).flags() != Qt.ItemFlag.NoItemFlags,
        30,
        lambda: [lst.item(i).text() for i in range(lst.count())],
    )
    texts = sorted(lst.item(i).text() for i in range(lst.count()))
    assert texts[0] == "100% sure\n100% sure"  # the title matched
    assert texts[1].startswith("Discounts\n") and "15[%] of 80" in texts[1]
    ui.click_row(qtbot, window, "Discounts")
    assert window.transcript.widgets[0].marked_text == "%"


def _menu_texts(window, row_text: str) -> list[str]:
    """The texts of the menu a right-click on the row opens (built as the click builds it: the offscreen
    platform cannot run a popup menu's modal loop)."""
    lst = window.conversation_list
    item = next(lst.item(i) for i in range(lst.count()) if lst.item(i).text().startswith(row_text))
    assert lst.itemAt(lst.visualItemRect(item).center()) is item
    return [a.text() for a in window.conversation_menu(item).actions() if a.text()]


def test_a_search_hit_offers_no_rename_and_f2_renames_the_chat_itself(make_window, qt_wait, qtbot):
    window = active(make_window())
    cid = ui.seed_chat(window, "Marsupials", ["Tell me about quokkas", "Small."])
    window.chat.open(cid)
    assert "Rename" in _menu_texts(window, "Marsupials")
    _type_search(qtbot, window, "quokka")
    qt_wait(
        lambda: (
            window.conversation_list.count() == 1
            and "\n" in window.conversation_list.item(0).text()
        )
    )
    texts = _menu_texts(window, "Marsupials")
    assert "Rename" not in texts and "Export as Markdown…" in texts
    # F2 on a search result: back to the list of chats, editing this chat's title.
    active(window).conversation_list.setFocus()
    QTest.keyClick(window.conversation_list, Qt.Key.Key_F2)
    editor = window.conversation_list.findChild(type(window.search))
    assert window.search.text() == "" and editor is not None and editor.isVisible()
    editor.selectAll()
    QTest.keyClicks(editor, "Quokkas")
    QTest.keyClick(editor, Qt.Key.Key_Return)
    qt_wait(lambda: window.store.conversation(cid).title == "Quokkas")


# --- 6. A long title does not widen the window ---------------------------------------------------------


def test_renaming_a_chat_to_a_long_title_keeps_the_window_width(make_window, qt_wait, qtbot):
    window = active(make_window())
    cid = ui.seed_chat(window, "Short", ["Hi", "Hello."])
    window.chat.open(cid)
    window.resize(867, 700)
    qt_wait(lambda: window.width() == 867)
    window.rename_current()  # F2
    editor = window.conversation_list.findChild(type(window.search))
    title = (
        "A rather long chat title about the migration patterns of the arctic tern across the oceans"
    )
    editor.selectAll()
    QTest.keyClicks(editor, title)
    QTest.keyClick(editor, Qt.Key.Key_Return)  # (the delegate commits on the next event loop pass)
    qt_wait(lambda: window.store.conversation(cid).title == title)
    for _ in range(
        5
    ):  # the layout requests travel up one parent per pass; the window grows at the top
        QApplication.processEvents()
    assert window.width() == 867 and window.minimumSizeHint().width() <= 867
    assert window.title_label.text() == title and window.title_label.toolTip() == title
    assert window.title_label.shown_text().endswith("…")  # elided on screen


# --- 8. Get models ▸ Check sizes online, offline ---------------------------------------------------


def test_checking_sizes_offline_says_so_in_the_dialog(make_window, qt_wait, qtbot, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on: the Hub cannot be reached
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    window = make_window()
    ui.menu_action(window, "Model", "Get models…").trigger()
    dialog = window.downloads_dialog
    qtbot.mouseClick(dialog.refresh_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: dialog.refresh_button.isEnabled(), 60)
    assert not dialog.notice.isHidden()
    assert dialog.notice.text().startswith("Could not check the sizes online: ")
    assert "check the internet connection" in dialog.notice.text()
    dialog.close()


# --- 7. Keyboard ---------------------------------------------------------------------------------


def _chat_of_two_turns(window, qt_wait):
    send(window, qt_wait, "First question", thinking=ThinkingMode.ON, max_tokens=24)
    send(window, qt_wait, "Second question", thinking=ThinkingMode.OFF, max_tokens=8)
    window.chat.open(window.chat.current_id)
    active(window)
    return stored(window)


def _accent_in_frame(widget) -> bool:
    """Whether the focus frame's colour is painted on the widget's left edge."""
    from app import theme

    image = widget.grab().toImage()
    accent = QColor(theme.current().accent)
    return any(image.pixelColor(x, image.height() // 2) == accent for x in range(3))


def test_tab_enters_the_transcript_at_the_newest_message_and_arrows_walk_the_messages(
    window, qt_wait
):
    messages = _chat_of_two_turns(window, qt_wait)
    transcript = window.transcript
    bar = transcript.verticalScrollBar()
    window.model_button.setFocus()
    QTest.keyClick(window.model_button, Qt.Key.Key_Tab)
    last = transcript.widget_for(messages[-1].id)
    assert QApplication.focusWidget() is last  # Tab lands on the newest message ...
    assert bar.value() == bar.maximum()  # ... without scrolling the transcript to its top
    assert _accent_in_frame(last)  # with a visible focus frame
    QTest.keyClick(last, Qt.Key.Key_Up)
    above = transcript.widget_for(messages[-2].id)
    assert QApplication.focusWidget() is above and not _accent_in_frame(last)
    QTest.keyClick(above, Qt.Key.Key_Home)
    assert QApplication.focusWidget() is transcript.widget_for(messages[0].id)
    QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_End)
    assert QApplication.focusWidget() is last
    # Space on a message clicks nothing: the clipboard keeps what it had.
    QGuiApplication.clipboard().setText("before")
    QTest.keyClick(last, Qt.Key.Key_Space)
    assert QGuiApplication.clipboard().text() == "before"
    # Tab leaves the transcript for the composer; Shift+Tab comes back to the same message.
    QTest.keyClick(last, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is window.composer.attach_button
    QTest.keyClick(window.composer.attach_button, Qt.Key.Key_Backtab)
    assert QApplication.focusWidget() is last
    QTest.keyClick(last, Qt.Key.Key_Backtab)
    assert QApplication.focusWidget() is window.model_button


def _chain(window, start, steps: int) -> list:
    chain, widget = [], start
    widget.setFocus()
    for _ in range(steps):
        assert QApplication.focusWidget() is not None, chain
        QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        chain.append(QApplication.focusWidget())
    return chain


def test_the_tab_chain_runs_sidebar_header_transcript_composer(window, qt_wait):
    messages = _chat_of_two_turns(window, qt_wait)
    chain = _chain(window, window.new_button, 8)
    assert chain == [
        window.search,
        window.conversation_list,
        window.thinking_combo,
        window.settings_button,
        window.model_button,
        window.transcript.widget_for(messages[-1].id),
        window.composer.attach_button,
        window.composer.edit,
    ]


def test_message_shortcuts_are_in_the_menus_and_act_on_the_focused_message(window, qt_wait):
    messages = _chat_of_two_turns(window, qt_wait)
    chat = {
        a.text(): a.shortcut().toString() for a in ui.menu_action(window, "Chat").menu().actions()
    }
    assert chat["Continue answer"] == "Ctrl+Shift+Return" and chat["Edit message"] == "Ctrl+E"
    assert chat["Regenerate answer"] == "Ctrl+R" and chat["Show or hide thinking"] == "Ctrl+T"
    transcript = window.transcript
    first_answer = transcript.widget_for(messages[1].id)
    transcript.focus_message(first_answer)
    # its thinking opens
    QTest.keyClick(first_answer, Qt.Key.Key_T, Qt.KeyboardModifier.ControlModifier)
    assert (
        first_answer.thinking.expanded
        and first_answer.thinking.body.toPlainText() == messages[1].thinking
    )
    QTest.keyClick(
        first_answer,
        Qt.Key.Key_C,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    assert QGuiApplication.clipboard().text() == messages[1].text
    first_question = transcript.widget_for(messages[0].id)
    transcript.focus_message(first_question)
    QTest.keyClick(first_question, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)  # Edit ▸ Copy
    assert QGuiApplication.clipboard().text() == messages[0].text
    QTest.keyClick(first_question, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert first_question.editor is not None and QApplication.focusWidget() is first_question.editor
    first_question.cancel_edit()
    # Continue on the focused older answer is refused; from the last it carries that one on.
    transcript.focus_message(first_answer)
    QTest.keyClick(
        first_answer,
        Qt.Key.Key_Return,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    assert not window.chat.busy and stored(window) == messages
    last = transcript.widget_for(messages[-1].id)
    transcript.focus_message(last)
    QTest.keyClick(
        last,
        Qt.Key.Key_Return,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    qt_wait(lambda: not window.chat.busy, 120)
    grown = stored(window)[-1]
    assert grown.id == messages[-1].id and grown.text.startswith(messages[-1].text)
    assert len(grown.text) > len(messages[-1].text)


def test_the_edit_menu_acts_on_the_focused_text_field(window, qt_wait):
    active(window)
    edit_menu = {a.text(): a for a in ui.menu_action(window, "Edit").menu().actions()}
    for name in ("Undo", "Redo", "Cut", "Copy", "Paste", "Select All"):
        assert not edit_menu[name].shortcut().isEmpty(), name
    box = window.composer.edit
    box.setFocus()
    QTest.keyClicks(box, "hello world")
    edit_menu["Select All"].trigger()
    edit_menu["Cut"].trigger()
    assert box.toPlainText() == "" and QGuiApplication.clipboard().text() == "hello world"
    edit_menu["Undo"].trigger()
    assert box.toPlainText() == "hello world"
    edit_menu["Redo"].trigger()
    assert box.toPlainText() == ""
    window.search.setFocus()
    edit_menu["Paste"].trigger()
    assert window.search.text() == "hello world"
    edit_menu["Select All"].trigger()
    edit_menu["Copy"].trigger()
    assert window.search.selectedText() == "hello world"


def test_escape_clears_the_search_and_then_stops_nothing_else(make_window, qt_wait, qtbot):
    window = active(make_window())
    ui.seed_chat(window, "Wombats", ["They dig.", "Yes."])
    _type_search(qtbot, window, "dig")
    qt_wait(lambda: "\n" in window.conversation_list.item(0).text())
    QTest.keyClick(window.search, Qt.Key.Key_Escape)
    assert window.search.text() == ""
    qt_wait(lambda: window.conversation_list.item(0).text() == "Wombats")


# --- accessibility names ---------------------------------------------------------------------------

BUTTONS = ("QAbstractButton",)
FIELDS = (
    "QLineEdit",
    "QTextEdit",
    "QPlainTextEdit",
    "QComboBox",
    "QAbstractSpinBox",
    "QAbstractSlider",
    "QAbstractItemView",
    "QProgressBar",
)


def unnamed_controls(root) -> list[str]:
    """Every control under ``root`` (itself included) a screen reader could not name: a button whose
    accessible name (what VoiceOver reads: ``accessibleName``, else its text) has no letter ("⚙", "×"), and a
    field (text, list, combo, spin box) with neither an ``accessibleName`` nor a label naming it (a buddy)."""
    from PySide6.QtGui import QAccessible
    from PySide6.QtWidgets import QHeaderView, QLabel, QScrollBar, QWidget

    buddies = {
        id(label.buddy()) for label in root.findChildren(QLabel) if label.buddy() is not None
    }
    out = []
    for widget in [root, *root.findChildren(QWidget)]:
        parent = widget.parentWidget()
        if widget.objectName().startswith("qt_") or _inside(widget, "QComboBox"):
            continue  # Qt's own parts (a table's corner button, a combo's popup list)
        if isinstance(widget, QScrollBar | QHeaderView):  # parts of their view, named by it
            continue
        if parent is not None and parent.inherits("QAbstractSpinBox"):
            continue  # a spin box's own line edit: the spin box carries the name
        if any(widget.inherits(kind) for kind in BUTTONS):
            interface = QAccessible.queryAccessibleInterface(widget)
            name = interface.text(QAccessible.Text.Name) if interface is not None else ""
            if not any(ch.isalpha() for ch in name):
                out.append(
                    f"{type(widget).__name__} {widget.objectName()!r} reads as {name!r} in {_owner(widget)}"
                )
        elif any(widget.inherits(kind) for kind in FIELDS):
            if not widget.accessibleName().strip() and id(widget) not in buddies:
                out.append(
                    f"{type(widget).__name__} {widget.objectName()!r} tip={widget.toolTip()!r} in {_owner(widget)}"
                )
    return out


def _inside(widget, kind: str) -> bool:
    parent = widget.parentWidget()
    while parent is not None:
        if parent.inherits(kind):
            return True
        parent = parent.parentWidget()
    return False


def _owner(widget) -> str:
    """The nearest ancestor of a class of the app's own (where to look for the control)."""
    parent = widget.parentWidget()
    while parent is not None and type(parent).__module__.startswith("PySide6"):
        parent = parent.parentWidget()
    return type(parent).__name__ if parent is not None else "-"


def test_every_control_of_the_main_window_has_an_accessible_name(window, qt_wait):
    _chat_of_two_turns(window, qt_wait)
    transcript = window.transcript
    transcript.widgets[0].begin_edit()  # the editor and its buttons exist only while editing
    unnamed = unnamed_controls(window)
    assert not unnamed, "\n".join(unnamed)


@pytest.mark.parametrize("opener", ["settings", "picker", "downloads", "add_vision", "local_api"])
def test_every_control_of_the_main_dialogs_has_an_accessible_name(
    window, qtbot, opener, tiny_text_model_dir
):
    from app.views.model_picker import ModelPicker
    from app.views.settings import SettingsDialog

    if opener == "settings":
        dialog = SettingsDialog(window.chat.settings(), window)
    elif opener == "picker":
        dialog = ModelPicker(window.models, window, downloads=window.downloads)
    elif opener == "downloads":
        window.models_presenter.open_downloads()
        dialog = window.downloads_dialog
    elif opener == "add_vision":
        window.models_presenter.open_add_vision(tiny_text_model_dir)
        dialog = window.add_vision_dialog
    else:
        dialog = window.open_local_api()
    qtbot.addWidget(dialog)
    dialog.show()
    unnamed = unnamed_controls(dialog)
    assert not unnamed, "\n".join(unnamed)
    dialog.close()


def test_unnamed_controls_finds_an_unnamed_button(qtbot):
    from PySide6.QtWidgets import QLineEdit, QPushButton, QVBoxLayout, QWidget

    root = QWidget()
    qtbot.addWidget(root)
    layout = QVBoxLayout(root)
    named, unnamed = QPushButton("OK"), QPushButton("⚙")
    named.setAccessibleName("OK")
    layout.addWidget(named)
    layout.addWidget(unnamed)
    assert unnamed_controls(root) == ["QPushButton '' reads as '⚙' in -"]
    field = QLineEdit()
    layout.addWidget(field)
    assert unnamed_controls(root)[1:] == ["QLineEdit '' tip='' in -"]


def test_a_message_widget_has_no_focusable_buttons(window, qt_wait):
    """Space on a focused message used to click its Copy button: no button inside a message takes focus."""
    from PySide6.QtWidgets import QAbstractButton

    _chat_of_two_turns(window, qt_wait)
    for widget in window.transcript.widgets:
        assert [
            b.text()
            for b in widget.findChildren(QAbstractButton)
            if b.focusPolicy() & Qt.FocusPolicy.TabFocus and b.isVisible()
        ] == []
