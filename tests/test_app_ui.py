"""The window's controls used by hand (pytest-qt clicks, keys, menu actions), checked where the effect lands:
the settings the engine received, the rows in the database, the text on screen."""

from __future__ import annotations

from dataclasses import replace

import pytest
import test_app_window as base
from conftest import record_generate
from PySide6.QtCore import Qt

from app.store import ChatSettings, MessageState, ThinkingMode

send, stored = base.send, base.stored


@pytest.fixture
def engine_requests(window):
    """What the engine was asked to do: (conversation, GenerationSettings) per generate call."""
    return record_generate(window)


def test_reply_cut_off_while_thinking_says_so_and_continue_carries_it_on(
    window, qt_wait, qtbot, engine_requests
):
    send(window, qt_wait, "Think hard", thinking=ThinkingMode.ON, max_tokens=6)
    answer = stored(window)[-1]
    # cut off in thinking
    assert answer.state is MessageState.COMPLETE and answer.thinking and not answer.text
    widget = window.transcript.widget_for(answer.id)
    assert not widget.limit_row.isHidden()
    assert "still thinking when it reached the 6-token limit" in widget.limit_label.text()
    runs = []  # the engine's own figures for the continued run
    window.engine.stats.connect(lambda _rid, stats: runs.append(stats))
    qtbot.mouseClick(widget.continue_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: not window.chat.busy, 120)
    conversation, settings = engine_requests[-1]
    assert conversation.continue_last and conversation.messages[-1].thinking == answer.thinking
    assert settings.max_tokens == 6  # six more tokens, the chat's limit unchanged
    messages = stored(window)
    assert len(messages) == 2 and messages[-1].id == answer.id  # the same answer grew
    grown = messages[-1]
    assert grown.thinking.startswith(answer.thinking) and len(grown.thinking + grown.text) > len(
        answer.thinking
    )
    # resumed at the answer's end: no prefill
    assert runs[-1].reused_tokens == runs[-1].prompt_tokens
    shown = window.transcript.widget_for(answer.id)
    assert shown.thinking.text() == grown.thinking and shown.answer.markdown == grown.text
    # A reopened chat says the same about a stored cut-off reply.
    window.store.update_message(grown.id, text="")
    window.chat.open(window.chat.current_id)
    assert "still thinking" in window.transcript.widget_for(grown.id).limit_label.text()


def test_an_answer_cut_at_the_limit_or_stopped_offers_continue(
    window, qt_wait, qtbot, engine_requests
):
    send(window, qt_wait, "Tell a long story", thinking=ThinkingMode.OFF, max_tokens=6)
    answer = stored(window)[-1]
    assert answer.text and answer.stats.generated_tokens == 6
    widget = window.transcript.widget_for(answer.id)
    assert not widget.continue_link.isHidden() and widget.limit_row.isHidden()
    qtbot.mouseClick(widget.continue_link, Qt.MouseButton.LeftButton)
    assert window.chat.busy  # streaming into the same answer, which offers no Continue meanwhile
    assert window.transcript.widget_for(answer.id).continue_link.isHidden()
    qt_wait(lambda: not window.chat.busy, 120)
    assert (
        engine_requests[-1][0].continue_last
        and engine_requests[-1][0].messages[-1].text == answer.text
    )
    grown = stored(window)[-1]
    assert (
        grown.id == answer.id
        and grown.text.startswith(answer.text)
        and len(grown.text) > len(answer.text)
    )
    assert window.transcript.widget_for(answer.id).answer.markdown == grown.text
    # A Stopped answer offers it too; a complete one that ended by itself does not.
    window.store.update_message(grown.id, state=MessageState.STOPPED)
    window.chat.open(window.chat.current_id)
    assert not window.transcript.widget_for(grown.id).continue_link.isHidden()
    window.store.update_message(grown.id, text="", thinking="stopped while thinking")
    window.chat.open(window.chat.current_id)
    assert not window.transcript.widget_for(grown.id).continue_link.isHidden()
    window.store.update_message(
        grown.id,
        text=grown.text,
        state=MessageState.COMPLETE,
        stats=replace(grown.stats, generated_tokens=3, run_tokens=3),
    )
    window.chat.open(window.chat.current_id)
    assert window.transcript.widget_for(grown.id).continue_link.isHidden()


def test_a_reply_that_ended_inside_its_thinking_below_the_limit_is_not_blamed_on_the_limit(qtbot):
    from app import theme
    from app.store import StoredMessage, StoredStats
    from app.views.message import MessageWidget

    def widget(generated: int) -> MessageWidget:
        message = StoredMessage(
            1,
            "c",
            1,
            "assistant",
            "",
            "hmm, let me",
            MessageState.COMPLETE,
            1.0,
            StoredStats.from_dict(dict(generated_tokens=generated)),
        )
        w = MessageWidget(message, theme.LIGHT.markdown, token_limit=100)
        qtbot.addWidget(w)
        return w

    ended = widget(40)
    assert "ended its turn while still thinking" in ended.limit_label.text()
    assert ended.continue_button.isHidden() and ended.answer.isHidden()
    limited = widget(100)
    assert (
        "reached the 100-token limit" in limited.limit_label.text()
        and not limited.continue_button.isHidden()
    )


def test_a_complete_answer_has_no_limit_note(window, qt_wait):
    send(window, qt_wait, "Hi", thinking=ThinkingMode.OFF, max_tokens=6)
    answer = stored(window)[-1]
    assert answer.text
    assert window.transcript.widget_for(answer.id).limit_row.isHidden()


def click_row(qtbot, window, text: str) -> None:
    lst = window.conversation_list
    item = next(lst.item(i) for i in range(lst.count()) if lst.item(i).text().startswith(text))
    qtbot.mouseClick(
        lst.viewport(), Qt.MouseButton.LeftButton, pos=lst.visualItemRect(item).center()
    )


def test_a_chat_reopened_while_it_streams_shows_its_answer_so_far(window, qt_wait, qtbot):
    send(window, qt_wait, "Alpha question", thinking=ThinkingMode.OFF)
    qtbot.mouseClick(window.new_button, Qt.MouseButton.LeftButton)
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=4000, seed=1)
    )
    window.composer.edit.setPlainText("Beta: write a long story")
    qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: window.chat._stream is not None and len(window.chat._stream.answer) > 3, 60)
    click_row(qtbot, window, "Alpha")
    click_row(qtbot, window, "Beta")
    streaming = stored(window)[-1]
    widget = window.transcript.widget_for(streaming.id)
    # what it had
    assert widget.answer.markdown.startswith(streaming.text) and len(streaming.text) > 0
    window.act_stop.trigger()
    qt_wait(lambda: not window.chat.busy, 60)
    answer = stored(window)[-1]
    # and the rest, no gap
    assert window.transcript.widget_for(answer.id).answer.markdown == answer.text


def test_status_bar_shows_the_open_chats_figures(window, qt_wait, qtbot):
    send(window, qt_wait, "Alpha question", thinking=ThinkingMode.OFF)
    answer = stored(window)[-1]
    used = answer.stats.prompt_tokens + answer.stats.generated_tokens
    assert f"Context {used:,} /" in window.status_context.text()
    qtbot.mouseClick(window.new_button, Qt.MouseButton.LeftButton)
    assert window.status_context.text() == "" and window.status_speed.text() == ""
    click_row(qtbot, window, "Alpha question")
    assert window.chat.current_id == answer.conversation_id
    assert (
        f"Context {used:,} /" in window.status_context.text()
        and "tok/s" in window.status_speed.text()
    )


def test_text_file_attaches_and_reaches_the_engine_as_a_fenced_block(
    window, qt_wait, tmp_path, engine_requests
):
    from engine_mlx.prompt import template_messages

    code = tmp_path / "adder.py"
    code.write_text("def add(a, b):\n    return a + b\n")
    base.drop(window, [code])
    qt_wait(
        lambda: len(window.attachments.items) == 1, 30, lambda: window.error_banner.label.text()
    )
    chip = window.composer._chips[window.attachments.items[0].key]
    assert "adder.py" in chip.caption.text() and "2 lines" in chip.caption.text()
    send(window, qt_wait, "Review this", thinking=ThinkingMode.OFF, max_tokens=4)
    user = stored(window)[0]
    assert [a.kind.value for a in user.attachments] == ["text"] and user.attachments[
        0
    ].name == "adder.py"
    conversation, _settings = engine_requests[-1]
    text = template_messages(conversation, text_only=True)[0]["content"]
    assert text.startswith("adder.py\n```py\ndef add(a, b):") and text.endswith(
        "```\n\nReview this"
    )
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
    # the first four pages, rendered off the GUI thread
    qt_wait(lambda: len(thumb.pictures) == 4, 30)
    assert all(not p.pixmap().isNull() and p.pixmap().height() <= 120 for p in thumb.pictures)
    assert thumb.caption.text() == "report.pdf · pages 1–6 (+2 more)"


# --- layout, menus, drag and search ------------------------------------------------------------


def menu_action(window, *path: str):
    """The QAction at a menu path, e.g. ("View", "Theme", "Dark"), found through the menu bar."""
    actions = window.menuBar().actions()
    for name in path:
        act = next(a for a in actions if a.text().replace("&", "") == name)
        actions = act.menu().actions() if act.menu() else []
    return act


def seed_chat(window, title: str, texts: list[str]) -> str:
    cid = window.store.create_conversation(title)
    for i, text in enumerate(texts):
        window.store.add_message(cid, "user" if i % 2 == 0 else "assistant", text)
    window.refresh_conversations()
    return cid


def test_one_banner_the_newest_wins(make_window, qt_wait, tmp_path):
    window = make_window()
    seed_chat(window, "Marsupials", ["Tell me about wombats", "They dig."])
    window.chat.open(window.conversation_list.item(0).data(Qt.ItemDataRole.UserRole))
    menu_action(window, "Chat", "Delete chat").trigger()
    from app.views.banner import Banner

    def shown():
        return [b for b in window.findChildren(Banner) if b.isVisible()]

    assert len(shown()) == 1 and "Deleted “Marsupials”" in shown()[0].label.text()
    bad = tmp_path / "notes.zip"
    bad.write_bytes(b"PK")
    base.drop(window.composer, [bad])
    qt_wait(lambda: "notes.zip" in window.banner.label.text(), 30)
    assert len(shown()) == 1 and window.banner.is_error  # replaced, not stacked


def test_banner_sticky_notice_returns_after_a_newer_message(qapp, qtbot):
    from app.views.banner import Banner

    banner = Banner()
    qtbot.addWidget(banner)
    banner.show_message("Demo model: random weights.", "Choose model…", lambda: None, sticky=True)
    banner.show_error("Could not read photo.png")
    assert banner.label.text() == "Could not read photo.png"
    qtbot.mouseClick(banner.close_button, Qt.MouseButton.LeftButton)
    assert banner.isVisible() and banner.label.text() == "Demo model: random weights."
    qtbot.mouseClick(banner.close_button, Qt.MouseButton.LeftButton)
    assert not banner.isVisible()


def test_reading_column_is_centred_and_at_most_900_px(make_window, qt_wait, qtbot):
    window = make_window()
    seed_chat(window, "Long read", ["Question " * 40, "Answer words " * 200])
    click_row(qtbot, window, "Long read")
    window.resize(1700, 900)
    qt_wait(lambda: window.transcript.widgets and window.transcript.widgets[-1].width() > 100, 10)
    qtbot.wait(50)
    view = window.transcript.viewport()
    answer = window.transcript.widgets[-1]
    left = answer.mapTo(view, answer.rect().topLeft()).x()
    right = view.width() - (left + answer.width())
    assert answer.width() <= 900 and view.width() > 1000
    assert abs(left - right) <= 2


def test_window_can_be_640_px_wide(make_window):
    window = make_window()
    for page in (window.first_run, window.transcript):
        window.pages.setCurrentWidget(page)
        assert window.minimumSizeHint().width() <= 640
    window.resize(640, 600)
    assert window.width() == 640


def test_sidebar_collapses_from_the_view_menu_and_shortcut(make_window, qtbot):
    window = make_window()
    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=5000)
    menu_action(window, "View", "Show sidebar").trigger()
    assert window.sidebar.isHidden() and not window.act_sidebar.isChecked()
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_B, Qt.KeyboardModifier.ControlModifier)
    assert not window.sidebar.isHidden() and window.act_sidebar.isChecked()
    window.sidebar.hide()
    # search shows it
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert not window.sidebar.isHidden()


def test_long_titles_elide_instead_of_scrolling_sideways(make_window, qt_wait):
    window = make_window()
    title = "Supercalifragilisticexpialidocious" * 4
    seed_chat(window, title, ["hello"])
    lst = window.conversation_list
    qt_wait(lambda: lst.count() == 1, 5)
    lst.doItemsLayout()
    assert lst.horizontalScrollBar().maximum() == 0
    assert lst.visualItemRect(lst.item(0)).width() <= lst.viewport().width()
    assert lst.item(0).toolTip() == title


def test_window_geometry_splitter_and_sidebar_are_remembered(qapp, qt_wait, tmp_path):
    from app.paths import app_paths
    from app.window import MainWindow

    data = tmp_path / "data"
    first = MainWindow(app_paths(data), reload_last=False)
    first.show()
    first.resize(720, 540)  # within the offscreen platform's 800×600 screen
    first.splitter.setSizes([250, 470, 0])
    qapp.processEvents()
    sizes = first.splitter.sizes()
    assert (first.width(), first.height()) == (720, 540)
    first.close()
    second = MainWindow(app_paths(data), reload_last=False)
    second.show()
    qapp.processEvents()
    assert (second.width(), second.height()) == (720, 540)
    assert second.splitter.sizes()[0] == sizes[0]
    menu_action(second, "View", "Show sidebar").trigger()
    second.close()
    third = MainWindow(app_paths(data), reload_last=False)
    third.show()
    assert third.sidebar.isHidden() and not third.act_sidebar.isChecked()
    third.close()


def test_theme_menu_applies_live_and_is_remembered(make_window, qapp, tmp_path):
    from app import theme

    window = make_window(tmp_path / "themed")
    assert menu_action(window, "View", "Theme", "System").isChecked()
    menu_action(window, "View", "Theme", "Dark").trigger()
    assert window.palette().color(window.backgroundRole()).lightness() < 128
    assert window.colors.dark and menu_action(window, "View", "Theme", "Dark").isChecked()
    window.close()
    theme.apply(qapp, theme.Scheme.LIGHT)  # as a fresh start would be
    again = make_window(tmp_path / "themed")
    assert again.colors.dark and menu_action(again, "View", "Theme", "Dark").isChecked()
    menu_action(again, "View", "Theme", "Light").trigger()
    assert again.palette().color(again.backgroundRole()).lightness() > 128


def test_help_about_names_version_device_and_folders(make_window, qtbot):
    window = make_window()
    menu_action(window, "Help", "About QwenDesk").trigger()
    box = window.about
    qtbot.waitUntil(box.isVisible, timeout=5000)
    text = box.text()
    assert "Version" in text and "MLX device" in text and "cpu" in text
    assert str(window.paths.data) in text and str(window.paths.logs) in text
    box.close()


def test_drop_zone_lights_up_while_dragging(make_window, qt_wait, tmp_path):
    from PySide6.QtCore import QMimeData, QPoint, QPointF, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDropEvent

    window = make_window()
    image = base.write_image(tmp_path / "photo.png")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(image))])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    window.dragEnterEvent(QDragEnterEvent(QPoint(300, 300), *args))
    zone = window.drop_zone
    assert zone.isVisible() and zone.geometry() == window.centralWidget().geometry()
    window.dragLeaveEvent(QDragLeaveEvent())
    assert not zone.isVisible()
    window.dragEnterEvent(QDragEnterEvent(QPoint(300, 300), *args))
    window.dropEvent(QDropEvent(QPointF(300, 300), *args))
    assert not zone.isVisible()
    qt_wait(lambda: len(window.attachments.items) == 1, 30)


def test_a_file_dropped_on_the_search_field_is_attached(make_window, qt_wait, tmp_path):
    """Through the window's own drag routing (its QWindow finds the widget under the drop point), as a
    Finder drag delivers it: file URLs with their text form."""
    from PySide6.QtCore import QCoreApplication, QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent

    window = make_window()
    url = QUrl.fromLocalFile(str(base.write_image(tmp_path / "photo.png")))
    mime = QMimeData()
    mime.setUrls([url])
    mime.setText(url.toString())
    at = window.search.mapTo(window, window.search.rect().center())
    args = (
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    for event in (
        QDragEnterEvent(at, *args),
        QDragMoveEvent(at, *args),
        QDropEvent(QPointF(at), *args),
    ):
        QCoreApplication.sendEvent(window.windowHandle(), event)
    qt_wait(lambda: len(window.attachments.items) == 1, 30)
    assert window.search.text() == ""  # not a search for the file's path


def test_search_hit_opens_the_chat_scrolled_to_the_marked_match(make_window, qt_wait, qtbot):
    window = make_window()
    texts = [f"Filler message number {i} about nothing in particular." for i in range(90)]
    texts[5] = "Somewhere early on, the quokkas were mentioned once."
    seed_chat(window, "Animals", texts)
    seed_chat(window, "Recipes", ["Bread", "Flour and water"])
    qtbot.keyClicks(window.search, "quokk")
    qt_wait(
        lambda: (
            window.conversation_list.count() == 1
            and "quokkas" in window.conversation_list.item(0).text()
        ),
        10,
    )
    click_row(qtbot, window, "Animals")
    messages = window.store.messages(window.chat.current_id)
    target = window.transcript.widget_for(messages[5].id)
    assert target is not None and target.marked_text == "quokkas"
    view = window.transcript.viewport()

    def on_screen():
        top = target.mapTo(view, target.rect().topLeft()).y()
        return 0 <= top < view.height()

    qt_wait(on_screen, 5)


def test_dragged_text_lands_in_the_composer_through_the_window(make_window):
    from PySide6.QtCore import QMimeData, QPoint, QPointF
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    window = make_window()
    assert not window.composer.acceptDrops() and not window.composer.edit.viewport().acceptDrops()
    mime = QMimeData()
    mime.setText("quoted from elsewhere")
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(QPoint(300, 300), *args)
    window.dragEnterEvent(enter)
    assert enter.isAccepted() and window.drop_zone.isVisible()
    window.dropEvent(QDropEvent(QPointF(300, 300), *args))
    assert window.composer.text() == "quoted from elsewhere" and not window.drop_zone.isVisible()


def test_a_long_answer_flushes_less_often(qtbot):
    """Qt's layout per flush grows a little with the document; the flush interval grows with it."""
    from app import theme
    from app.views.answer import FLUSH_MS, MAX_FLUSH_MS, SLOW_FLUSH_CHARS, AnswerView

    view = AnswerView(theme.LIGHT.markdown)
    qtbot.addWidget(view)
    view.append("word ")
    assert view._timer.interval() == FLUSH_MS
    qtbot.waitSignal(view._timer.timeout, timeout=1000).wait()
    view.append("x" * SLOW_FLUSH_CHARS)
    qtbot.waitSignal(view._timer.timeout, timeout=1000).wait()
    view.append("more")
    assert view._timer.interval() == MAX_FLUSH_MS


def test_send_with_media_to_a_text_only_model_offers_add_vision(
    window, qt_wait, qtbot, tmp_path, tiny_text_model_dir
):
    """An image attached under a vision model, then a text-only model loaded: Send is refused by the chat
    controller, nothing is stored, and the banner offers the way out (add vision to this model)."""
    base.drop(window.composer, [base.write_image(tmp_path / "photo.png")])
    qt_wait(lambda: len(window.attachments.items) == 1, 30)
    window.models.load(tiny_text_model_dir)
    qt_wait(
        lambda: window.models.loaded_info is not None and not window.models.loaded_info.is_vision,
        120,
    )
    qtbot.keyClicks(window.composer.edit, "What is in this photo?")
    qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
    assert window.error_banner.isVisible() and "text-only" in window.error_banner.label.text()
    assert window.error_banner.action.text().startswith("Add vision")
    assert window.chat.current_id is None  # no chat was created, no message stored
    assert len(window.attachments.items) == 1  # the attachment stays for a vision model
