"""Tools in the app (issue 17), operated through the real widgets: the consent card, the call blocks, the
header's per-chat menu and Settings ▸ Tools. The tiny model cannot choose to call a tool, so the tools
controller's test hook forces each loop step's reply (``GenerationSettings.forced``); the real engine,
tokenizer, detokenizer, tool loop, MCP host and servers (tests/mcp_server.py, the built-in Files tool) run."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest

from app.controllers.chat import build_conversation
from app.controllers.tools import STOPPED_TEXT
from engine_mlx.forcing import ForcedText
from engine_mlx.prompt import render_text
from engine_mlx.settings import GenerationSettings
from engine_mlx.tools.config import BUILTIN_FILES, ServerConfig, load_config
from engine_mlx.tools.consent import Consent, load_consent
from engine_mlx.tools.host import ServerState
from engine_mlx.tools.loop import DENIED_TEXT

ROOT = Path(__file__).resolve().parent.parent
TEST_SERVER = ServerConfig(
    "test",
    command=sys.executable,
    args=(str(ROOT / "tests" / "mcp_server.py"),),
    env={"PYTHONPATH": str(ROOT)},
)
NOTES = "The quokka lives on Rottnest Island.\n"


def call(tool: str, **params: str) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={tool}>\n{body}</function>\n</tool_call>"


def forced(*replies: str):
    """Step i of the loop writes replies[i] (the last repeats)."""

    def step(i: int) -> GenerationSettings:
        return GenerationSettings(
            thinking=False,
            max_tokens=300,
            temperature=0.0,
            forced=ForcedText(replies[min(i, len(replies) - 1)]),
        )

    return step


def ready(window, name: str) -> bool:
    return any(s.name == name and s.state is ServerState.READY for s in window.tools.status())


def with_server(window, qt_wait, server: ServerConfig = TEST_SERVER) -> None:
    window.tools.save_servers((server,))
    qt_wait(lambda: ready(window, server.name), 60, lambda: str(window.tools.status()))


def send(window, qt_wait, text: str) -> None:
    window.composer.edit.setPlainText(text)
    QTest.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
    assert window.chat.busy


def card(window, qt_wait):
    qt_wait(lambda: window.tools_wiring.cards, 60, "no consent card was shown")
    (only,) = window.tools_wiring.cards.values()
    return only


def last_answer(window):
    return window.store.messages(window.chat.current_id)[-1]


def click(button) -> None:
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


@pytest.fixture
def tool_window(make_window, tiny_model_dir, qt_wait):
    window = make_window(model=tiny_model_dir)
    with_server(window, qt_wait)
    return window


def test_a_call_with_edited_arguments_runs_and_the_answer_goes_on(
    tool_window, qt_wait, make_window, tmp_path
):
    from app.views.tool_call import call_blocks

    window = tool_window
    window.tools.step_settings = forced(call("echo", text="hi ```code```"), "The echo came back.")
    send(window, qt_wait, "Echo something")
    shown = card(window, qt_wait)
    assert "test ▸ echo" in shown.findChildren(type(shown.error))[0].text()
    # The keyboard is on the card (the composer was empty), and Tab walks its controls.
    qt_wait(lambda: window.focusWidget() is shown.run_button, 10)
    window.activateWindow()
    assert QTest.qWaitForWindowActive(window)
    assert shown.run_button.hasFocus()
    QTest.keyClick(shown.run_button, Qt.Key.Key_Backtab)
    assert shown.always_button.hasFocus()
    QTest.keyClick(shown.always_button, Qt.Key.Key_Tab)
    assert shown.run_button.hasFocus()
    assert json.loads(shown.editor.toPlainText()) == {
        "text": "hi ```code```"
    }  # formatted JSON, as proposed
    shown.editor.setPlainText('{"text": "edited", "count": 2')  # broken JSON: refused, nothing runs
    click(shown.run_button)
    assert "not valid JSON" in shown.error.text() and shown.run_button.isEnabled()
    shown.editor.setPlainText('{"text": "edited ```", "count": 2}')
    click(shown.run_button)
    qt_wait(lambda: not window.chat.busy, 60)

    answer = last_answer(window)
    (stored,) = answer.tool_calls
    # The server received exactly the edited arguments (echo returns what it was given).
    assert json.loads(stored.result) == {"text": "edited ```", "count": 2, "options": None}
    assert (stored.server, stored.tool, stored.outcome) == ("test", "echo", "ran")
    assert answer.text.endswith("The echo came back.") and "<tool_call>" not in answer.text
    widget = window.transcript.widget_for(answer.id)
    assert "<tool_call>" not in widget.answer.markdown
    (block,) = call_blocks(widget)
    assert not window.tools_wiring.cards  # the card gave way to the block
    assert not block.expanded
    click(block.toggle)
    assert block.expanded and json.loads(block.arguments.toPlainText()) == {
        "text": "edited ```",
        "count": 2,
    }
    # The next turn's prompt holds the call and its result.
    convo = build_conversation(
        answer.conversation_id,
        window.store.settings(answer.conversation_id),
        window.store.messages(answer.conversation_id),
    )
    assert [m.role.value for m in convo.messages] == ["user", "assistant", "tool", "assistant"]
    assert convo.messages[2].text == stored.result
    # The step after the call prefilled only what follows the call: the result and the template's tokens
    # around it (the tiny model's tokenizer spells the template's tags out, so they are counted exactly).
    loaded = window.engine._engine._loaded
    prompt = render_text(
        replace(convo, messages=convo.messages[:3]),
        loaded.apply_template,
        thinking=False,
        text_only=False,
    )
    tail = prompt[prompt.rindex("<|im_end|>", 0, prompt.index("<tool_response>")) :]
    assert stored.result in tail
    assert answer.stats.prompt_tokens - answer.stats.reused_tokens == len(loaded.encode(tail)) - 1
    # The Markdown export holds it.
    out = window.chat_list_actions.export_file(answer.conversation_id, tmp_path / "chat.md", False)
    exported = out.read_text()
    # kept as it is
    assert "Tool: test ▸ echo" in exported and f"````\n{stored.result}\n````" in exported

    # A restart shows the call again.
    cid = answer.conversation_id
    window.close()
    again = make_window(data_dir=tmp_path / "data")
    again.chat.open(cid)
    (block,) = call_blocks(again.transcript.widget_for(answer.id))
    assert block.call == stored


def test_deny_tells_the_model_and_always_allow_is_remembered(tool_window, qt_wait):
    window = tool_window
    window.tools.step_settings = forced(call("echo", text="no"), "Fine, I won't.")
    send(window, qt_wait, "Try it")
    click(card(window, qt_wait).deny_button)
    qt_wait(lambda: not window.chat.busy, 60)
    answer = last_answer(window)
    assert [(c.outcome, c.result) for c in answer.tool_calls] == [("denied", DENIED_TEXT)]
    assert answer.text.endswith("Fine, I won't.")

    window.tools_wiring.settings_action.trigger()  # Settings ▸ Tools open meanwhile follows the card's choice
    dialog = window.tools_dialog
    assert dialog.consent_combos[("test", None)].currentData() == Consent.ASK
    window.tools.step_settings = forced(
        call("echo", text="a"), call("echo", text="b"), "Both done."
    )
    send(window, qt_wait, "Twice")
    click(card(window, qt_wait).always_button)
    qt_wait(lambda: not window.chat.busy, 60)
    qt_wait(lambda: ("test", "echo") in dialog.consent_combos, 10)
    assert dialog.consent_combos[("test", "echo")].currentData() == Consent.ALLOW
    # the second did not ask
    assert [c.outcome for c in last_answer(window).tool_calls] == [
        "ran",
        "ran",
    ]
    assert load_consent(window.tools.consent_path).decide("test", "echo") is Consent.ALLOW
    # A result is data: consent changed only through the card's button, nothing else did.
    assert load_consent(window.tools.consent_path).tools == {"test/echo": Consent.ALLOW}


def test_a_waiting_card_comes_back_when_its_chat_is_opened_again(tool_window, qt_wait):
    window = tool_window
    window.tools.step_settings = forced(call("echo", text="later"), "Answered after all.")
    send(window, qt_wait, "Ask me")
    first = card(window, qt_wait)
    cid = window.chat.current_id
    window.new_chat()  # the user looks elsewhere while the loop waits for the answer
    qt_wait(lambda: not first.isVisible())
    window.chat.open(cid)
    qt_wait(lambda: any(c.isVisible() for c in window.tools_wiring.cards.values()), 10)
    (again,) = window.tools_wiring.cards.values()
    assert again is not first and json.loads(again.editor.toPlainText()) == {"text": "later"}
    click(again.run_button)
    qt_wait(lambda: not window.chat.busy, 60)
    assert [c.outcome for c in last_answer(window).tool_calls] == ["ran"]
    assert last_answer(window).text.endswith("Answered after all.")


def test_continuing_an_answer_that_called_tools_sends_its_tool_steps(tool_window, qt_wait):
    from engine_mlx.conversation import Role

    window = tool_window
    allow_test_server(window)
    window.tools.step_settings = lambda i: replace(
        forced(call("echo", text="x"), "A long answer " * 20)(i), max_tokens=300 if i == 0 else 40
    )
    send(window, qt_wait, "Go")
    qt_wait(lambda: not window.chat.busy, 60)
    answer = last_answer(window)
    # the step after the call was cut at the limit
    assert answer.stats.run_tokens == 40 and answer.tool_calls
    sent = []
    plain = window.tools.turn_for
    window.tools.turn_for = lambda c, convo, settings, first_step: (
        sent.append((convo, first_step)),
        plain(c, convo, settings, first_step),
    )[1]
    window.tools.step_settings = forced(" And that is all.")
    window.chat.continue_answer()
    qt_wait(lambda: not window.chat.busy, 60)
    ((convo, first_step),) = sent  # through the tool loop, as the turn was written
    assert first_step == 1  # the cut step is the turn's second
    assert [m.role for m in convo.messages] == [
        Role.USER,
        Role.ASSISTANT,
        Role.TOOL,
        Role.ASSISTANT,
    ]
    assert convo.messages[2].text == answer.tool_calls[0].result and convo.continue_last


def test_the_quit_leaves_no_server_process_even_with_a_card_waiting(
    tool_window, qt_wait, make_window, tmp_path
):
    from app.store import MessageState

    window = tool_window
    pid = int(window.tools.host.call("test", "pid", {}).text)
    assert _alive(pid)
    window.tools.step_settings = forced(call("echo", text="unanswered"), "never written")
    send(window, qt_wait, "Ask and quit")
    card(window, qt_wait)
    cid, answer_id = window.chat.current_id, last_answer(window).id
    window.close()  # the waiting loop is stopped, the servers too
    assert not _alive(pid)
    again = make_window(data_dir=tmp_path / "data")
    answer = again.store.message(answer_id)
    assert answer.state is MessageState.STOPPED and answer.conversation_id == cid
    # Never run, and saved as stopped (the user pressed no Deny)
    assert [(c.outcome, c.result) for c in answer.tool_calls] == [("cancelled", STOPPED_TEXT)]


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if status.parent.parent.is_dir() and Path("/proc/self").exists():
        return status.exists() and "\nState:\tZ" not in status.read_text()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- faults -------------------------------------------------------------------------------------------


def allow_test_server(window) -> None:
    from engine_mlx.tools.consent import ConsentTable

    window.tools.set_consent(ConsentTable().with_server("test", Consent.ALLOW))


def run_forced(window, qt_wait, *replies: str, text: str = "Go"):
    window.tools.step_settings = forced(*replies)
    send(window, qt_wait, text)
    qt_wait(lambda: not window.chat.busy, 120)
    return last_answer(window)


def test_stop_during_a_call_cancels_it_and_the_gui_runs_meanwhile(tool_window, qt_wait):
    from app.store import MessageState

    window = tool_window
    allow_test_server(window)
    events: list[str] = []
    heartbeat = QTimer()
    heartbeat.setInterval(1)
    heartbeat.timeout.connect(lambda: events.append("beat"))
    window.chat.statsReady.connect(lambda *_: events.append("step done"))
    window.tools.callFinished.connect(lambda _mid, c: events.append(f"call {c.outcome}"))
    window.chat.streamFinished.connect(lambda *_: events.append("finished"))
    window.tools.step_settings = forced(call("slow", seconds="30"), "never written")
    heartbeat.start()
    send(window, qt_wait, "Wait for it")
    qt_wait(
        lambda: "step done" in events and events[events.index("step done") :].count("beat") >= 3, 60
    )
    # the call runs (30 s unless stopped) while the GUI thread keeps ticking
    assert window.chat.busy
    click(window.composer.send_button)  # it reads "Stop" while busy
    qt_wait(lambda: not window.chat.busy, 30)
    heartbeat.stop()
    order = [e for e in events if e != "beat"]
    assert order == ["step done", "call cancelled", "finished"], order
    answer = last_answer(window)
    assert answer.state is MessageState.STOPPED
    assert [c.outcome for c in answer.tool_calls] == ["cancelled"]


def test_a_timeout_a_crash_and_an_unknown_tool_end_clearly_and_the_answer_goes_on(
    make_window, tiny_model_dir, qt_wait
):
    window = make_window(model=tiny_model_dir)
    with_server(window, qt_wait, replace(TEST_SERVER, timeout_s=1.0))
    allow_test_server(window)

    answer = run_forced(window, qt_wait, call("slow", seconds="20"), "It took too long.")
    (timed_out,) = answer.tool_calls
    assert timed_out.outcome == "failed" and "did not answer within 1 s" in timed_out.result
    assert answer.text.endswith("It took too long.")

    qt_wait(lambda: ready(window, "test"), 60)  # restarted after the timeout
    answer = run_forced(window, qt_wait, call("crash"), "The tool crashed.")
    (crashed,) = answer.tool_calls
    assert crashed.outcome == "failed" and "stopped during the call" in crashed.result
    assert answer.text.endswith("The tool crashed.")
    qt_wait(lambda: ready(window, "test"), 60)  # and back after the crash

    answer = run_forced(window, qt_wait, call("format_disk", device="sda"), "No such tool.")
    (unknown,) = answer.tool_calls
    assert unknown.outcome == "failed" and "no tool named 'format_disk'" in unknown.result
    assert "echo" in unknown.result  # the model is told which tools there are
    assert not window.tools_wiring.cards  # none of these asked

    broken = "<tool_call>\n<function=echo>\n<parameter=text>\nnever closed\n"
    answer = run_forced(window, qt_wait, broken)
    # not a call: what the model wrote stays
    assert answer.tool_calls == () and answer.text == broken


def test_a_huge_result_is_cut_and_the_step_limit_stops_the_loop(tool_window, qt_wait):
    from app.views.tool_call import call_blocks

    window = tool_window
    allow_test_server(window)
    window.tools.host.max_result_chars = (
        3000  # the tiny model's context is small; the cap works the same
    )
    answer = run_forced(window, qt_wait, call("big", n="50000"), "That was long.")
    (big,) = answer.tool_calls
    assert big.truncated and "truncated by QwenDesk" in big.result and len(big.result) < 3200
    (block,) = call_blocks(window.transcript.widget_for(answer.id))
    assert "result truncated" in block.toggle.text()

    window.tools.set_prefs(replace(window.tools.prefs, max_steps=2))
    answer = run_forced(window, qt_wait, call("echo", text="again"))
    assert [c.step for c in answer.tool_calls] == [0, 1]
    assert "2 times in a row" in window.banner.label.text()


def test_an_image_a_tool_returns_is_shown_and_sent_to_the_vision_model(tool_window, qt_wait):
    from app.views.tool_call import call_blocks

    window = tool_window
    allow_test_server(window)
    answer = run_forced(window, qt_wait, call("picture"), "A red picture.")
    (picture,) = answer.tool_calls
    assert picture.outcome == "ran" and len(picture.images) == 1 and picture.images[0].is_file()
    (block,) = call_blocks(window.transcript.widget_for(answer.id))
    assert block.expanded and not block.images[0].pixmap().isNull()
    assert block.images[0].pixmap().width() > 0
    # The loop gave the model the image (written for the vision model's next step), and the answer went on.
    assert list(window.tools.model_image_dir.glob(f"{picture.call_id}-0.png"))
    assert answer.text.endswith("A red picture.")


def test_a_tools_image_is_sent_again_in_later_turns_and_the_prompt_still_reuses(
    tool_window, qt_wait, make_window, tiny_model_dir, tmp_path
):
    """A later request rebuilds the conversation from the store: the tool message carries its image again.
    Continuing the answer resumes from its snapshot, which only a prompt equal token for token (the image's
    pixels included) can do; a next turn, and one after a restart, send the image too."""
    from engine_mlx.conversation import ImageAttachment, Role
    from engine_mlx.events import Stats

    window = tool_window
    allow_test_server(window)
    window.tools.step_settings = lambda i: replace(
        forced(call("picture"), "A red picture " * 20)(i), max_tokens=300 if i == 0 else 30
    )
    send(window, qt_wait, "Draw")
    qt_wait(lambda: not window.chat.busy, 120)
    answer = last_answer(window)
    (picture,) = answer.tool_calls
    assert answer.stats.run_tokens == 30  # the step after the picture was cut at the limit
    cid = answer.conversation_id
    convo = build_conversation(cid, window.store.settings(cid), window.store.messages(cid))
    tool = next(m for m in convo.messages if m.role is Role.TOOL)
    assert tool.attachments == (ImageAttachment(picture.images[0]),)

    runs: list[Stats] = []
    window.engine.stats.connect(lambda _rid, stats: runs.append(stats))
    window.tools.step_settings = forced(" It is red.")  # Continue runs through the loop too
    window.chat.continue_answer()
    qt_wait(lambda: not window.chat.busy, 60)
    (continued,) = runs
    # The whole prompt, the picture's image and the 30 tokens written so far, came from the snapshot:
    # without the image the rebuilt prompt differs from the tool message on, and all that is prefilled.
    assert continued.prefilled_tokens <= 2, continued
    assert continued.reused_tokens >= answer.stats.prompt_tokens + 30

    sent: list = []
    plain = window.tools.turn_for
    window.tools.turn_for = lambda c, convo, settings: (
        sent.append(convo),
        plain(c, convo, settings),
    )[1]
    run_forced(window, qt_wait, "It was red.", text="What colour was it?")
    (later,) = sent
    assert [m.attachments for m in later.messages if m.role is Role.TOOL] == [tool.attachments]

    window.close()  # the images stay in the data folder
    again = make_window(data_dir=tmp_path / "data", model=tiny_model_dir)
    qt_wait(lambda: ready(again, "test"), 60)
    again.chat.open(cid)
    sent.clear()
    plain = again.tools.turn_for
    again.tools.turn_for = lambda c, convo, settings: (
        sent.append(convo),
        plain(c, convo, settings),
    )[1]
    last = run_forced(again, qt_wait, "Still red.", text="And now?")
    (after,) = sent
    assert [m.attachments for m in after.messages if m.role is Role.TOOL] == [tool.attachments]
    assert last.text.endswith("Still red.")


def test_a_text_only_model_is_told_of_a_tools_image_and_goes_on(
    make_window, tiny_text_model_dir, qt_wait
):
    """A text-only model cannot read images: the tool message says there was one (in the step, and in the
    history later turns rebuild), instead of failing the turn."""
    from engine_mlx.conversation import Role

    window = make_window(model=tiny_text_model_dir)
    with_server(window, qt_wait)
    allow_test_server(window)
    answer = run_forced(window, qt_wait, call("picture"), "I cannot see it.")
    assert answer.error == "" and answer.text.endswith("I cannot see it."), answer.error
    (picture,) = answer.tool_calls
    assert picture.outcome == "ran" and picture.images[0].is_file()  # still kept and shown
    later = run_forced(window, qt_wait, "Still no.", text="And now?")
    assert later.error == "" and later.text.endswith("Still no.")
    cid = answer.conversation_id
    convo = build_conversation(
        cid, window.store.settings(cid), window.store.messages(cid), vision=False
    )
    (tool,) = [m for m in convo.messages if m.role is Role.TOOL]
    assert tool.attachments == () and "this model is text-only and cannot see images" in tool.text


# --- Settings ▸ Tools and the header's per-chat menu ---------------------------------------------------


def test_settings_tools_form_raw_json_import_log_folders_consent_and_step_limit(
    make_window, qt_wait, tmp_path
):
    from PySide6.QtWidgets import QLabel

    from app.controllers.tools import TOOLS_PREF, ToolPrefs
    from tests.test_app_round3 import unnamed_controls

    window = make_window()
    window.tools_wiring.settings_action.trigger()
    dialog = window.tools_dialog
    assert any("may use the network" in label.text() for label in dialog.findChildren(QLabel))

    click(dialog.add_button)
    form = dialog.server_dialog
    assert any(
        "QwenDesk itself stays offline" in label.text() for label in form.findChildren(QLabel)
    )
    form.name.setText("test")
    form.command.setText(sys.executable)
    form.args.setText(str(ROOT / "tests" / "mcp_server.py"))
    # not NAME=value: refused, the form stays open with the reason
    form.env.setPlainText("PYTHONPATH")
    form.timeout.setValue(30)
    form.accept()
    assert form.isVisible() and "is not NAME=value" in form.error.text()
    form.env.setPlainText(f"PYTHONPATH={ROOT}")
    form.accept()
    assert not form.isVisible()
    assert load_config(window.tools.config_path) == (replace(TEST_SERVER, timeout_s=30.0),)
    qt_wait(
        lambda: [dialog.table.item(0, c).text() for c in range(3)] == ["test", "ready", "7"],
        60,
        lambda: str(window.tools.status()),
    )
    assert not unnamed_controls(form), unnamed_controls(form)

    dialog.table.selectRow(0)
    click(dialog.log_button)
    assert dialog.log_dialog.isVisible() and dialog.log_view.toPlainText()
    assert not unnamed_controls(dialog.log_dialog)

    dialog.tabs.setCurrentIndex(1)
    broken = '{"mcpServers": {"web": {"url": "ftp://example.org"}}}'
    dialog.json_edit.setPlainText(broken)
    click(dialog.json_apply)
    assert '"url" must be an http:// or https:// address' in dialog.json_error.text()
    assert dialog.json_edit.toPlainText() == broken  # nothing lost
    window.tools.statusChanged.emit()  # a server's state changing meanwhile does not replace the text
    assert dialog.json_edit.toPlainText() == broken
    assert [s.name for s in load_config(window.tools.config_path)] == ["test"]  # nothing applied

    home = tmp_path / "home"
    (home / ".lmstudio").mkdir(parents=True)
    (home / ".lmstudio" / "mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": "uvx", "args": ["mcp-server-time"]},
                    "test": {"url": "http://x"},
                }
            }
        )
    )
    dialog.import_home = home
    click(dialog.import_button)
    servers = load_config(window.tools.config_path)
    # new ones start off
    assert [(s.name, s.enabled) for s in servers] == [
        ("test", True),
        ("time", False),
    ]
    assert "LM Studio: 1 new server" in dialog.message.text()

    shared = tmp_path / "shared"
    shared.mkdir()
    dialog.add_folder(shared)
    assert ToolPrefs.from_json(window.store.get_pref(TOOLS_PREF)).files_roots == (str(shared),)
    qt_wait(lambda: ready(window, "files"), 60)
    assert dialog.folders.item(0).text() == str(shared)

    dialog.fill_consent()
    combo = dialog.consent_combos[("test", None)]
    combo.setCurrentIndex(combo.findData(Consent.BLOCK))
    combo.activated.emit(combo.currentIndex())
    assert load_consent(window.tools.consent_path).servers == {"test": Consent.BLOCK}

    dialog.steps.setValue(3)
    assert ToolPrefs.from_json(window.store.get_pref(TOOLS_PREF)).max_steps == 3
    assert not unnamed_controls(dialog), unnamed_controls(dialog)

    dialog.table.selectRow(1)  # "time": enabled in its form
    click(dialog.edit_button)
    form = dialog.server_dialog
    assert (form.name.text(), form.command.text(), form.args.text()) == (
        "time",
        "uvx",
        "mcp-server-time",
    )
    assert not form.enabled.isChecked()
    form.name.setText("test")  # taken
    form.accept()
    assert "already a server named 'test'" in form.error.text()
    form.name.setText("clock")
    form.timeout.setValue(5)
    form.accept()
    assert [(s.name, s.timeout_s, s.enabled) for s in load_config(window.tools.config_path)] == [
        ("test", 30.0, True),
        ("clock", 5.0, False),
    ]

    dialog.table.selectRow(1)
    click(dialog.remove_button)
    assert [s.name for s in load_config(window.tools.config_path)] == ["test"]


def test_the_files_tool_and_the_header_choice_of_servers_per_chat(
    make_window, tiny_model_dir, qt_wait, tmp_path
):
    from app.views.tool_call import call_blocks
    from tests.test_app_round3 import unnamed_controls

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.md").write_text(NOTES, encoding="utf-8")
    window = make_window(model=tiny_model_dir)
    window.tools_wiring.settings_action.trigger()
    window.tools_dialog.add_folder(shared)
    window.tools_dialog.close()
    qt_wait(lambda: ready(window, BUILTIN_FILES), 60)

    wiring = window.tools_wiring
    assert wiring.button.text() == "Tools · 1"  # the Files tool
    wiring.fill_menu()  # what the header's Tools button shows
    (files,) = [a for a in wiring.menu.actions() if a.isCheckable()]
    assert files.text() == "Files (built-in)" and files.isChecked()

    window.tools.step_settings = forced(call("read_text", path="notes.md"), "Quokkas, it says.")
    send(window, qt_wait, "What do my notes say?")
    shown = card(window, qt_wait)
    assert "Read a text file" in " ".join(
        lbl.text() for lbl in shown.findChildren(type(shown.error))
    )
    assert not unnamed_controls(window), unnamed_controls(window)  # the card's controls are named
    click(shown.run_button)
    qt_wait(lambda: not window.chat.busy, 60)
    answer = last_answer(window)
    assert [c.result for c in answer.tool_calls] == [NOTES]
    assert not unnamed_controls(window), unnamed_controls(window)  # and the call block's
    assert len(call_blocks(window.transcript.widget_for(answer.id))) == 1

    wiring.fill_menu()
    (files,) = [a for a in wiring.menu.actions() if a.isCheckable()]
    files.trigger()  # this chat stops using the Files tool
    cid = window.chat.current_id
    assert window.store.tool_servers(cid) == () and wiring.button.text() == "Tools"
    send(window, qt_wait, "And now?")
    qt_wait(lambda: not window.chat.busy, 60)
    # a plain turn: no tools offered
    assert last_answer(window).tool_calls == () and not wiring.cards

    window.new_chat()  # another chat still uses every enabled server
    wiring.fill_menu()
    (files,) = [a for a in wiring.menu.actions() if a.isCheckable()]
    assert files.isChecked()
    # The context meter counts the tools' definitions: they are part of the prompt.
    meter = window.context_meter
    qt_wait(lambda: meter.reading.exact, 30)
    with_files = meter.reading.used
    files.trigger()
    qt_wait(lambda: meter.reading.exact and meter.reading.used != with_files, 30)
    assert meter.reading.used < with_files


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in entry.read_bytes():
                found.append(int(entry.parent.name))
        except OSError:
            continue
    return [pid for pid in found if _alive(pid) and pid != os.getpid()]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="lists processes through /proc")
def test_a_server_that_never_answers_holds_up_neither_the_window_nor_the_quit(
    make_window, qt_wait, tmp_path
):
    marker = f"mute-server-{tmp_path.name}"
    window = make_window()
    mute = ServerConfig(
        "mute", command=sys.executable, args=("-c", f"import time; time.sleep(120)  # {marker}")
    )
    # returns at once: the start runs on the thread pool and the host's thread
    window.tools.save_servers((mute,))
    qt_wait(lambda: _processes_with(marker), 30)
    # The window runs while the server, started, says nothing (a GUI waiting on it would still be blocked,
    # and would then see it failed or timed out, not starting).
    window.tools_wiring.settings_action.trigger()
    assert [window.tools_dialog.table.item(0, c).text() for c in range(2)] == ["mute", "starting"]
    window.close()
    assert not _processes_with(marker)


# --- what a step writes before its calls, and Continue through the loop ----------------------------------


def thinking_steps(*replies: str, last_max: int = 300):
    """Step i writes a few thinking tokens (the budget closes them), then replies[i] (the last repeats); the
    step after the first stops at ``last_max`` tokens."""

    def step(i: int) -> GenerationSettings:
        return GenerationSettings(
            thinking=True,
            thinking_budget=3,
            max_tokens=300 if i == 0 else last_max,
            temperature=0.0,
            forced=ForcedText("\n\n" + replies[min(i, len(replies) - 1)], after_thinking=True),
        )

    return step


def record_steps(window) -> list:
    """Each loop step the real engine runs: (its conversation, its events), observed, not replaced."""
    real = window.engine._engine
    plain = real.generate
    seen: list = []

    def generate(conversation, settings=GenerationSettings(), cancel=None):
        events: list = []
        seen.append((conversation, events))
        for event in plain(conversation, settings, cancel):
            events.append(event)
            yield event

    real.generate = generate
    return seen


def test_a_steps_text_and_reasoning_are_kept_and_the_history_reads_as_the_model_saw_it(
    tool_window, qt_wait, make_window, tiny_model_dir, tmp_path
):
    from engine_mlx.conversation import Message, Role
    from engine_mlx.events import AnswerDelta, Stats, ThinkingDelta

    window = tool_window
    allow_test_server(window)
    steps = record_steps(window)
    window.tools.step_settings = thinking_steps(
        "I will echo it first.\n\n" + call("echo", text="x"), "The echo said x. " * 20, last_max=30
    )
    send(window, qt_wait, "Echo x")
    qt_wait(lambda: not window.chat.busy, 120)
    answer = last_answer(window)
    cid = answer.conversation_id
    (written,) = answer.tool_steps
    assert written.text.strip() == "I will echo it first." and written.thinking.strip()
    assert "<tool_call>" not in answer.text and answer.stats.run_tokens == 30
    # The live turn: the final step's conversation (the step's message as the loop built it, the result).
    live_convo, final_events = steps[-1]
    assert live_convo.messages[1].text == "I will echo it first."

    # Continue's prompt is the cut step's own, token for token: the engine resumes from the end of what
    # it wrote (with the steps' text and reasoning in the final step's, the prompt differs from there on).
    runs: list[Stats] = []
    window.engine.stats.connect(lambda _rid, stats: runs.append(stats))
    window.tools.step_settings = lambda i: GenerationSettings(
        thinking=True, max_tokens=20, temperature=0.0, forced=ForcedText(" That is all.")
    )
    window.chat.continue_answer()
    qt_wait(lambda: not window.chat.busy, 60)
    (continued,) = runs
    assert continued.prefilled_tokens <= 2, continued
    assert continued.reused_tokens >= answer.stats.prompt_tokens + 30
    events = final_events + steps[-1][1]
    final = Message(
        Role.ASSISTANT,
        "".join(e.text for e in events if isinstance(e, AnswerDelta)),
        thinking="".join(e.text for e in events if isinstance(e, ThinkingDelta)),
    )
    answer = last_answer(window)
    assert answer.text.endswith("That is all.") and answer.tool_steps == (written,)
    # the answer shows every step's
    assert (answer.text, answer.thinking) == (
        written.text + final.text,
        written.thinking + final.thinking,
    )
    live = live_convo.with_message(final)

    # The next turn: the template drops the reasoning of the steps before the new question, so the turn
    # is read again from its first step on; nothing before it is.
    runs.clear()
    window.tools.step_settings = thinking_steps("Fine.")
    send(window, qt_wait, "Thanks")
    qt_wait(lambda: not window.chat.busy, 60)
    (later,) = runs
    loaded = window.engine._engine._loaded
    convo = build_conversation(cid, window.store.settings(cid), window.store.messages(cid)[:-1])
    prompt = render_text(
        replace(convo, tools=window.tools.offered_tools(cid)),
        loaded.apply_template,
        thinking=True,
        text_only=False,
    )
    turn = prompt[prompt.rindex("<|im_end|>", 0, prompt.index("I will echo it first.")) :]
    assert later.reused_tokens > 0
    assert later.prefilled_tokens <= len(loaded.encode(turn)) + 16, later

    # A restart (a new window on the same data folder) rebuilds the turn as the model saw it.
    window.close()
    again = make_window(data_dir=tmp_path / "data", model=tiny_model_dir)
    qt_wait(lambda: ready(again, "test"), 60)
    again.chat.open(cid)
    rebuilt = build_conversation(cid, again.store.settings(cid), again.store.messages(cid)[:2])
    rebuilt = replace(rebuilt, tools=again.tools.offered_tools(cid))
    # the step's text and reasoning, as the model wrote them
    assert rebuilt.messages == live.messages
    loaded = again.engine._engine._loaded

    def tokens(convo):
        return loaded.encode(
            render_text(convo, loaded.apply_template, thinking=True, text_only=False)
        )

    assert tokens(rebuilt) == tokens(live)
    exported = again.chat_list_actions.export_file(cid, tmp_path / "chat.md", True).read_text()
    step_at, call_at = exported.index("I will echo it first."), exported.index("Tool: test ▸ echo")
    assert step_at < call_at < exported.index("That is all.")  # in the order they were written
    # the step's reasoning, then the final's
    assert exported.count("<summary>Thinking</summary>") >= 2


def test_continue_of_a_tool_turn_runs_the_calls_it_writes_through_the_consent_card(
    tool_window, qt_wait, make_window, tmp_path
):
    from app.store import MessageState
    from app.views.tool_call import call_blocks

    window = tool_window
    window.chat.set_settings(window.chat.settings().with_generation(max_tokens=40))
    window.tools.step_settings = lambda i: replace(
        forced(call("echo", text="first"), "A long answer " * 20)(i),
        max_tokens=300 if i == 0 else 40,
    )
    send(window, qt_wait, "Echo twice")
    click(card(window, qt_wait).run_button)
    qt_wait(lambda: not window.chat.busy, 60)
    answer = last_answer(window)
    assert answer.stats.run_tokens == 40 and [c.step for c in answer.tool_calls] == [0]
    widget = window.transcript.widget_for(answer.id)
    assert widget.continue_link.isVisible()  # cut by the token limit

    # The continuation writes a call: it asks, runs, and the answer goes on after its result.
    window.tools.step_settings = forced(
        " Let me check again.\n\n" + call("echo", text="second"), "Both echoes came back."
    )
    click(widget.continue_link)
    shown = card(window, qt_wait)
    assert json.loads(shown.editor.toPlainText()) == {"text": "second"}
    assert "<tool_call>" not in window.transcript.widget_for(answer.id).answer.markdown
    click(shown.run_button)
    qt_wait(lambda: not window.chat.busy, 60)

    answer = window.store.message(answer.id)
    assert answer.state is MessageState.COMPLETE and answer.error == ""
    assert [(c.step, c.tool, c.outcome) for c in answer.tool_calls] == [
        (0, "echo", "ran"),
        (1, "echo", "ran"),  # the continued step is the turn's second
    ]
    assert json.loads(answer.tool_calls[1].result)["text"] == "second"
    first, second = answer.tool_steps
    assert (first.step, first.text) == (0, "")
    assert second.step == 1 and second.text.startswith("A long answer")
    assert second.text.endswith("Let me check again.\n\n")
    assert answer.text == second.text + "Both echoes came back."
    assert "<tool_call>" not in answer.text
    widget = window.transcript.widget_for(answer.id)
    assert "<tool_call>" not in widget.answer.markdown
    assert widget.answer.markdown.endswith("Both echoes came back.")
    assert len(call_blocks(widget)) == 2 and not window.tools_wiring.cards
    # The final step read the second result after the continued step's message, as the loop built it.
    convo = build_conversation(
        answer.conversation_id,
        window.store.settings(answer.conversation_id),
        window.store.messages(answer.conversation_id),
    )
    roles = [m.role.value for m in convo.messages]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert convo.messages[3].text == second.text.strip() and convo.messages[3].tool_calls
    assert convo.messages[-1].text == "Both echoes came back."

    # A call the token limit cut in the middle of its markup is run once Continue completes it.
    whole = call("echo", text="third")
    window.tools.step_settings = lambda i: replace(
        forced(whole, "Third done.")(i), max_tokens=6 if i == 0 else 300
    )
    send(window, qt_wait, "Once more")
    qt_wait(lambda: not window.chat.busy, 60)
    cut = last_answer(window)
    assert cut.tool_calls == () and whole.startswith(cut.text) and cut.text  # shown as written
    window.tools.step_settings = forced(whole[len(cut.text) :], "Third done.")
    window.chat.continue_answer()
    click(card(window, qt_wait).run_button)
    qt_wait(lambda: not window.chat.busy, 60)
    done = window.store.message(cut.id)
    assert [json.loads(c.arguments) for c in done.tool_calls] == [{"text": "third"}]
    assert done.text == "Third done." and done.tool_steps[0].text == ""
    assert window.transcript.widget_for(cut.id).answer.markdown == "Third done."
