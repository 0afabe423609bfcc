"""Tools in server mode, end to end: the app's tool loop over a real QwenDesk server. The server is the
real ApiServer in this process, answering with the real tiny engine; the tiny model never chooses to
call a tool, so that engine is made to write each reply (``GenerationSettings.forced``, through the real
sampler, detokenizer and the server's call parser). The app's side is operated through its widgets: the
consent card, then the call to the SDK test server (tests/mcp_server.py) and the next request."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from serve_process import KEY
from test_app_server_mode import answer_of, choose_server, connected
from test_app_tools import allow_test_server, call, card, click, send, with_server

from app.store import ChatSettings, MessageState, ThinkingMode
from engine_mlx.conversation import Role
from engine_mlx.forcing import ForcedText
from engine_mlx.jobs import EngineThread
from engine_mlx.server.config import ServerConfig
from engine_mlx.server.runner import ApiServer


@pytest.fixture
def tool_server(engine, monkeypatch):
    """``(server, seen, replies)``: the API on a free port; each request's conversation lands in
    ``seen``, and request i's reply is ``replies[i]`` (the last repeats)."""
    seen: list = []
    replies: list[str] = []
    generate = engine.generate

    def forced(conversation, settings, cancel=None):
        seen.append(conversation)
        text = replies[min(len(seen), len(replies)) - 1]
        return generate(conversation, replace(settings, forced=ForcedText(text)), cancel)

    monkeypatch.setattr(engine, "generate", forced)
    jobs = EngineThread()
    server = ApiServer(engine, jobs, ServerConfig(port=0, api_key=KEY))
    server.start()
    yield server, seen, replies
    server.stop()
    jobs.close(timeout=10)


def server_mode_with_tools(make_window, qt_wait, server):
    window = make_window()
    assert not choose_server(window, f"127.0.0.1:{server.port}")
    connected(window, qt_wait)
    with_server(window, qt_wait)
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=200)
    )
    return window


def test_a_tool_call_over_a_server_asks_runs_and_the_answer_goes_on(
    make_window, qt_wait, tool_server
):
    server, seen, replies = tool_server
    replies += [call("echo", text="over the wire"), "The echo came back."]
    window = server_mode_with_tools(make_window, qt_wait, server)
    send(window, qt_wait, "Echo something")
    shown = card(window, qt_wait)  # the server's reply was a call: the user is asked
    assert "test ▸ echo" in shown.findChildren(type(shown.error))[0].text()
    assert json.loads(shown.editor.toPlainText()) == {"text": "over the wire"}
    click(shown.run_button)
    qt_wait(lambda: not window.chat.busy, 120)

    answer = answer_of(window)
    assert answer.state is MessageState.COMPLETE, answer.error
    (stored,) = answer.tool_calls
    # the SDK test server ran the call with the arguments the server's model wrote
    assert (stored.server, stored.tool, stored.outcome) == ("test", "echo", "ran")
    assert json.loads(stored.result) == {"text": "over the wire", "count": 1, "options": None}
    # the next request carried the call and its result; the server's answer went on from there
    first, second = seen
    assert "echo" in [t.name for t in first.tools]
    assert [m.role for m in second.messages] == [Role.USER, Role.ASSISTANT, Role.TOOL]
    assert second.messages[1].tool_calls[0].name == "echo"
    assert second.messages[2].text == stored.result
    assert answer.text.endswith("The echo came back.") and "<tool_call>" not in answer.text


def test_a_tools_image_reaches_the_servers_model(make_window, qt_wait, tool_server):
    from PIL import Image

    server, seen, replies = tool_server
    replies += [call("picture"), "A red picture."]
    window = server_mode_with_tools(make_window, qt_wait, server)
    allow_test_server(window)
    send(window, qt_wait, "Draw")
    qt_wait(lambda: not window.chat.busy, 120)
    answer = answer_of(window)
    assert answer.state is MessageState.COMPLETE, answer.error  # not a 400 banner
    assert not window.error_banner.isVisible()
    (picture,) = answer.tool_calls
    assert picture.outcome == "ran" and len(picture.images) == 1
    tool = seen[1].messages[-1]
    assert tool.role is Role.TOOL
    (image,) = tool.attachments  # the server's engine got it as the tool message's image
    with Image.open(image.path) as got, Image.open(picture.images[0]) as shown:
        assert got.convert("RGB").tobytes() == shown.convert("RGB").tobytes()
    assert answer.text.endswith("A red picture.")
