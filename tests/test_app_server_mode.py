"""The app as a client of a QwenDesk server (Settings ▸ Engine ▸ A QwenDesk server), operated through its
widgets against a real ``python -m engine_mlx serve`` subprocess on 127.0.0.1: streaming with live
thinking, Stop, an image, the chat reopened after a restart, a wrong key and a server that is not there."""

from __future__ import annotations

import logging
import re
import socket
import stat
import threading

import pytest
from media_files import write_image
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialogButtonBox
from serve_process import KEY
from test_app_operated import type_and_send, with_modal

from app.engine_choice import EngineMode
from app.paths import app_paths
from app.store import ChatSettings, MessageState, ThinkingMode
from app.views.engine_settings import EngineSettingsDialog
from app.window import MainWindow
from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role
from engine_mlx.remote.engine import RemoteEngine
from engine_mlx.settings import GenerationSettings


def click_radio(button) -> None:
    """A click on the radio's circle (the button is as wide as the dialog; its text is not)."""
    QTest.mouseClick(button, Qt.MouseButton.LeftButton, pos=QPoint(8, button.height() // 2))
    assert button.isChecked()


def choose_server(window, address: str, key: str = KEY, before_ok=None) -> list:
    """Settings ▸ Engine: click "A QwenDesk server", type the address and key, press OK."""

    def fill(dialog) -> None:
        assert isinstance(dialog, EngineSettingsDialog)
        click_radio(dialog.server)
        assert dialog.url.isEnabled() and dialog.key.isEnabled()
        for field, text in ((dialog.url, address), (dialog.key, key)):
            field.selectAll()
            QTest.keyClicks(field, text)
        if before_ok is not None:
            before_ok(dialog)
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()

    errors = with_modal(fill)
    window.menus.engine.trigger()
    return errors


def connected(window, qt_wait) -> None:
    qt_wait(lambda: window.models.remote_model is not None or window.error_banner.isVisible(), 60)
    assert window.models.remote_model is not None, window.error_banner.label.text()


def answer_of(window):
    return window.store.messages(window.chat.current_id)[-1]


def server_window(make_window, qwendesk_server, qt_wait, **kwargs):
    window = make_window(**kwargs)
    assert not choose_server(window, qwendesk_server.address)
    connected(window, qt_wait)
    return window


def test_settings_engine_connects_and_no_local_model_is_loaded(
    make_window, qwendesk_server, qt_wait, tiny_model_dir, caplog
):
    caplog.set_level(logging.DEBUG)
    window = server_window(make_window, qwendesk_server, qt_wait)
    model = window.models.remote_model
    assert model.name == tiny_model_dir.name and model.is_vision
    host = qwendesk_server.address
    assert window.status_model.text() == f"{model.name} · vision · on {host}"
    assert window.model_button.text() == f"{model.name} (server)"
    engine, _jobs = window.engine.shared()
    assert isinstance(engine, RemoteEngine)  # the engine the chats use: nothing loaded here
    assert window.models.loaded_info is None
    assert window.models.engine_choice.mode is EngineMode.SERVER
    assert window.models.engine_choice.url == host
    window.chat.set_settings(ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=4))
    type_and_send(window, "Hello")
    qt_wait(lambda: not window.chat.busy, 120)
    assert answer_of(window).state is MessageState.COMPLETE
    # the key: in its own owner-only file, not in the database, never logged
    key_file = window.paths.server_key
    assert key_file.read_text() == KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    window.store.close()  # flush the database to its file
    assert KEY.encode() not in window.paths.database.read_bytes()
    assert all(KEY not in record.getMessage() for record in caplog.records)


def test_streams_live_thinking_then_a_follow_up_reuses_the_servers_cache(
    make_window, qwendesk_server, qt_wait
):
    window = server_window(make_window, qwendesk_server, qt_wait)
    window.chat.set_settings(ChatSettings(thinking=ThinkingMode.ON).with_generation(max_tokens=24))
    live: list[str] = []
    window.chat.thinkingDelta.connect(
        lambda _mid, text: live.append(text) if window.chat.busy else None
    )
    type_and_send(window, "Think about colours")
    qt_wait(lambda: not window.chat.busy, 120)
    first = answer_of(window)
    assert first.state is MessageState.COMPLETE, first.error
    assert live and "".join(live) == first.thinking  # arrived while it streamed
    widget = window.transcript.widget_for(first.id)
    assert not widget.thinking.isHidden()
    # thinking off from the header's combo: the next answer has none, and the server reused the chat
    combo = window.thinking_combo
    combo.setFocus()
    QTest.keyClick(combo, Qt.Key.Key_Home)
    QTest.keyClick(combo, Qt.Key.Key_Down)
    assert combo.currentData() == ThinkingMode.OFF
    type_and_send(window, "And now without thinking")
    qt_wait(lambda: not window.chat.busy, 120)
    second = answer_of(window)
    assert second.state is MessageState.COMPLETE and not second.thinking and second.text
    assert second.stats.reused_tokens > 0
    assert f"({second.stats.reused_tokens:,} reused)" in (
        window.transcript.widget_for(second.id).stats_label.text()
    )
    logged = qwendesk_server.wait_for_requests(len(qwendesk_server.requests()))[-1]
    assert f"cached {second.stats.reused_tokens})" in logged


def test_the_stop_button_stops_the_servers_decoding(make_window, qwendesk_server, qt_wait):
    window = server_window(make_window, qwendesk_server, qt_wait)
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=4000, seed=1)
    )
    before = len(qwendesk_server.wait_for_requests(0))
    type_and_send(window, "Write a long story")
    qt_wait(lambda: window.chat._stream is not None and window.chat._stream.answer, 60)
    button = window.composer.send_button
    assert button.text() == "Stop"
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: not window.chat.busy, 60)
    answer = answer_of(window)
    assert answer.state is MessageState.STOPPED and answer.text
    line = qwendesk_server.wait_for_requests(before + 1)[before]
    completion = int(re.search(r"completion (\d+);", line).group(1))
    assert " 499 disconnected;" in line and completion < 4000
    # Continue carries the stopped answer on, on the server (continue_final_message)
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=6, seed=1)
    )
    window.menus.continue_.trigger()  # Chat ▸ Continue answer
    qt_wait(lambda: not window.chat.busy, 60)
    carried = answer_of(window)
    assert carried.id == answer.id and carried.state is MessageState.COMPLETE, carried.error
    assert carried.text.startswith(answer.text) and len(carried.text) > len(answer.text)


def test_an_image_attachment_reaches_the_server(
    make_window, qwendesk_server, qt_wait, engine, tmp_path
):
    window = server_window(make_window, qwendesk_server, qt_wait)
    window.chat.set_settings(ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=6))
    image = write_image(tmp_path / "red.png")
    window.attachments.add_paths([image])  # as a drop on the window or File ▸ Attach does
    qt_wait(lambda: window.attachments.items and not window.attachments.busy, 30)
    type_and_send(window, "What colour is this?")
    qt_wait(lambda: not window.chat.busy, 120)
    question, answer = window.store.messages(window.chat.current_id)[-2:]
    assert answer.state is MessageState.COMPLETE, answer.error
    (sent,) = question.attachments
    # the server counted the image's tokens as this Mac's engine counts them
    here = engine.count_tokens(
        Conversation((Message(Role.USER, question.text, (ImageAttachment(sent.path),)),)),
        GenerationSettings(thinking=False),
    )
    assert answer.stats.prompt_tokens == here


def test_a_restarted_window_reconnects_and_the_chat_continues(
    make_window, qwendesk_server, qt_wait, tmp_path
):
    data = tmp_path / "data"
    first = server_window(make_window, qwendesk_server, qt_wait, data_dir=data)
    first.chat.set_settings(ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=12))
    type_and_send(first, "Remember the word lighthouse")
    qt_wait(lambda: not first.chat.busy, 120)
    cid = first.chat.current_id
    first.close()
    again = MainWindow(app_paths(data), reload_last=True)  # as the app starts
    try:
        again.show()
        connected(again, qt_wait)  # the server mode is remembered: it reconnects by itself
        assert again.chat.current_id == cid and len(again.transcript.widgets) == 2
        type_and_send(again, "Which word?")
        qt_wait(lambda: not again.chat.busy, 120)
        answer = answer_of(again)
        assert answer.state is MessageState.COMPLETE, answer.error
        assert answer.stats.reused_tokens > 0  # the server still held the first turn
    finally:
        again.close()


def test_a_wrong_key_and_a_missing_server_are_banners(make_window, qwendesk_server, qt_wait):
    window = make_window()
    problems: list[str] = []

    def typo_first(dialog) -> None:
        address = dialog.url.text()
        dialog.url.setText("ftp://" + address)
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
        assert dialog.isVisible()  # refused, with the reason, and nothing typed is lost
        problems.append(dialog.error.text())
        assert dialog.key.text() == "wrong-key"
        dialog.url.setText(address)

    assert not choose_server(window, qwendesk_server.address, "wrong-key", typo_first)
    assert "is not an http:// or https:// address" in problems[0]
    qt_wait(lambda: window.error_banner.isVisible(), 60)
    text = window.error_banner.label.text()
    assert "refused the API key (401)" in text and "Settings ▸ Engine" in text
    assert window.models.remote_model is None and not window.chat.model_loaded
    assert window.status_model.text() == "Not connected to the server"
    window.error_banner.dismiss()
    type_and_send(window, "Hello?")  # refused, saying why, and the text stays in the box
    assert "not connected to its server" in window.error_banner.label.text()
    assert window.composer.edit.toPlainText() == "Hello?"
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    window.error_banner.dismiss()
    assert not choose_server(window, f"127.0.0.1:{port}")
    qt_wait(lambda: window.error_banner.isVisible(), 60)
    assert f"Cannot reach the QwenDesk server at 127.0.0.1:{port}" in (
        window.error_banner.label.text()
    )

    # and back to this Mac: the server is left alone, nothing is loaded until a model is chosen
    def this_mac(dialog) -> None:
        click_radio(dialog.this_mac)
        assert not dialog.url.isEnabled()
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()

    errors = with_modal(this_mac)
    window.menus.engine.trigger()
    assert not errors, errors
    assert window.models.engine_choice.mode is EngineMode.LOCAL


def test_a_server_that_goes_away_mid_answer_is_a_banner(make_window, tiny_model_dir, qt_wait):
    from serve_process import ServeProcess

    server = ServeProcess(tiny_model_dir)  # its own: this test ends it
    try:
        window = server_window(make_window, server, qt_wait)
        window.chat.set_settings(
            ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=4000, seed=1)
        )
        type_and_send(window, "Write a long story")
        qt_wait(lambda: window.chat._stream is not None and window.chat._stream.answer, 60)
        server.process.kill()  # the power cord
        qt_wait(lambda: not window.chat.busy, 60)
        answer = answer_of(window)
        assert answer.state is MessageState.ERROR and answer.text  # what arrived is kept
        text = window.error_banner.label.text()
        assert f"The connection to the server at {server.address} broke mid-answer" in text
        window.error_banner.dismiss()
        type_and_send(window, "Are you there?")
        qt_wait(lambda: not window.chat.busy and window.error_banner.isVisible(), 60)
        assert f"Cannot reach the QwenDesk server at {server.address}" in (
            window.error_banner.label.text()
        )
    finally:
        server.stop()


def test_the_context_meter_shows_the_servers_count(make_window, qwendesk_server, qt_wait):
    """Server mode has no model here to count with: the meter's figure is the server's POST /tokenize,
    of the server's context."""
    window = server_window(make_window, qwendesk_server, qt_wait)
    window.chat.set_settings(ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=4))
    view, limit = window.context_meter_view, window.models.remote_model.context_length
    before = len(qwendesk_server.requests("/tokenize"))
    window.composer.edit.setFocus()
    QTest.keyClicks(window.composer.edit, "How many tokens is this message?")
    qt_wait(lambda: view.reading is not None and view.reading.exact, 60)
    logged = qwendesk_server.wait_for_requests(before + 1, "/tokenize")[-1]
    counted = int(re.search(r" 200 -; prompt (\d+) ", logged).group(1))
    assert view.isVisible() and view.reading.limit == limit
    assert view.label.text() == f"{counted:,} / {limit:,} tokens"  # exact: no "~"
    # the count is what the send then uses
    QTest.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: not window.chat.busy, 120)
    answer = answer_of(window)
    assert answer.state is MessageState.COMPLETE and answer.stats.prompt_tokens == counted


def test_the_local_api_is_off_in_server_mode_and_says_why(
    make_window, qwendesk_server, qt_wait, tmp_path
):
    """The local API serves a model loaded here: in server mode it stays off (remembered), the
    dialog says where to point apps instead, and it comes back with This Mac, serving this Mac's
    engine; with both on at start-up nothing listens (no 503s from a stale engine)."""
    from engine_mlx.engine import Engine

    data = tmp_path / "data"
    window = make_window(data_dir=data)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    window.local_api.set_port(port)
    dialog = window.open_local_api()
    click_radio(dialog.switch)  # on
    assert window.local_api.running and window.local_api.remembered_on
    assert not choose_server(window, qwendesk_server.address)
    connected(window, qt_wait)
    expected = f"Off while QwenDesk chats with the server at {qwendesk_server.base_url}"
    assert not window.local_api.running and window.local_api.remembered_on
    assert not dialog.switch.isEnabled() and not dialog.switch.isChecked()
    assert dialog.status.text().startswith(expected) and "This Mac" in dialog.status.text()
    assert not window.status_api.isVisible()
    window.close()

    again = MainWindow(app_paths(data), reload_last=True)  # both on, as the app starts
    try:
        again.show()
        connected(again, qt_wait)
        with pytest.raises(ConnectionRefusedError):  # nothing listens: no 503 from the old engine
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        shown = again.open_local_api()
        assert shown.status.text().startswith(expected) and not shown.switch.isEnabled()

        def this_mac(dialog) -> None:
            click_radio(dialog.this_mac)
            dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()

        busy = threading.Event()  # the engine thread is busy meanwhile (an answer, a count)
        again.engine._jobs.submit(lambda: busy.wait(30))
        errors = with_modal(this_mac)
        try:
            again.menus.engine.trigger()
            assert not errors, errors
            assert again.local_api.running  # the switch was left on: back with This Mac
            assert isinstance(again.local_api._server.context.engine, Engine)  # this Mac's
        finally:
            busy.set()
        assert shown.switch.isEnabled() and shown.switch.isChecked()
        assert shown.status.text().startswith("Running on 127.0.0.1")
    finally:
        again.close()
