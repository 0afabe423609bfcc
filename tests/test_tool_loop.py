"""The tool loop through the real engine, tokenizer and detokenizer: the tiny model cannot choose to call
a tool, so each step's reply is forced (``GenerationSettings.forced``) and everything after that is real:
the parser, consent, the MCP call, the tool message in the next prompt, and the state reuse."""

from __future__ import annotations

import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from engine_mlx.cancel import CancelToken
from engine_mlx.conversation import Conversation, Message, Role
from engine_mlx.events import AnswerDelta, Finished, FinishReason, Stats
from engine_mlx.forcing import ForcedText
from engine_mlx.prompt import render_text
from engine_mlx.settings import GenerationSettings
from engine_mlx.tools.config import BUILTIN_FILES, ServerConfig
from engine_mlx.tools.consent import Consent, ConsentTable
from engine_mlx.tools.host import ToolHost
from engine_mlx.tools.loop import (
    BLOCKED_TEXT,
    DENIED_TEXT,
    Approval,
    ConsentAnswer,
    Outcome,
    StepLimitReached,
    ToolCallFinished,
    ToolCallProposed,
    ToolLoop,
)

ROOT = Path(__file__).resolve().parent.parent
NOTES = "The quokka lives on Rottnest Island.\n"


def call(tool: str, **params: str) -> str:
    """A call as Qwen3.5 writes it (and its template renders it)."""
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={tool}>\n{body}</function>\n</tool_call>"


def forced(*replies: str, thinking: bool = False, budget: int | None = None):
    """Step settings: step i writes replies[i] (the last one repeats); with thinking, after the thinking
    closes (the "\n\n" that follows ``</think>`` is part of what is forced, as Qwen writes it)."""

    def step(i: int) -> GenerationSettings:
        reply = replies[min(i, len(replies) - 1)]
        return GenerationSettings(
            thinking=thinking,
            thinking_budget=budget,
            max_tokens=300,
            temperature=0.0,
            forced=ForcedText("\n\n" + reply if thinking else reply, after_thinking=thinking),
        )

    return step


@pytest.fixture(scope="module")
def files_host(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    (root / "notes.md").write_text(NOTES, encoding="utf-8")
    host = ToolHost(tmp_path_factory.mktemp("logs"), files_roots=[root])
    host.configure([], builtin_files=True)
    host.wait_ready(30)
    yield host
    host.close()


def run(loop: ToolLoop, convo: Conversation, step, cancel=None):
    events = list(
        loop.run(convo, GenerationSettings(thinking=False), cancel=cancel, step_settings=step)
    )
    assert isinstance(events[-1], Finished)
    return events


def test_a_call_with_consent_runs_and_the_next_step_prefills_only_the_result(engine, files_host):
    asked: list[ToolCallProposed] = []

    def approve(proposed, _cancel):
        asked.append(proposed)
        return ConsentAnswer(Approval.RUN_ONCE)

    loop = ToolLoop(engine, files_host, approve=approve)
    convo = Conversation((Message(Role.USER, "What do my notes say?"),), id="loop-ok")
    events = run(
        loop, convo, forced(call("read_text", path="notes.md"), "The notes are about quokkas.")
    )

    assert [(p.server, p.tool, p.arguments) for p in asked] == [
        (BUILTIN_FILES, "read_text", {"path": "notes.md"})
    ]
    (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
    # the server got the exact arguments
    assert done.outcome is Outcome.RAN and done.result == NOTES
    assistant, result = loop.conversation.messages[1:]
    assert assistant.role is Role.ASSISTANT and [c.name for c in assistant.tool_calls] == [
        "read_text"
    ]
    assert result.role is Role.TOOL and result.text == NOTES
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert answer.endswith("The notes are about quokkas.")  # the answer went on after the call
    assert events[-1].reason is FinishReason.STOP

    first, second = [e for e in events if isinstance(e, Stats)]
    # The second step resumes from the end of the first (its prompt, its reply and the end-of-turn
    # token) and prefills only what follows: the tool result and the template's few tokens around it.
    assert second.reused_tokens == first.prompt_tokens + first.generated_tokens + 1
    loaded = engine._loaded
    prompt2 = render_text(loop.conversation, loaded.apply_template, thinking=False, text_only=False)
    tail = prompt2[prompt2.rindex("<|im_end|>", 0, prompt2.index("<tool_response>")) :]
    assert second.prefilled_tokens == len(loaded.encode(tail)) - 1  # the <|im_end|> was already in
    assert NOTES.strip() in tail


def test_denied_and_blocked_calls_tell_the_model_and_run_nothing(engine, tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    (root / "notes.md").write_text(NOTES, encoding="utf-8")
    host = ToolHost(tmp_path, files_roots=[root])
    try:
        host.configure([], builtin_files=True)
        host.wait_ready(30)
        loop = ToolLoop(engine, host, approve=lambda p, c: ConsentAnswer(Approval.DENY))
        events = run(
            loop,
            Conversation((Message(Role.USER, "notes?"),), id="loop-deny"),
            forced(call("read_text", path="notes.md"), "Understood."),
        )
        (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
        assert done.outcome is Outcome.DENIED and loop.conversation.messages[-1].text == DENIED_TEXT

        blocked = ToolLoop(
            engine,
            host,
            consent=ConsentTable().with_tool(BUILTIN_FILES, "read_text", Consent.BLOCK),
            approve=lambda p, c: pytest.fail("a blocked tool must not ask"),
        )
        events = run(
            blocked,
            Conversation((Message(Role.USER, "notes?"),), id="loop-block"),
            forced(call("read_text", path="notes.md"), "Understood."),
        )
        (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
        assert (
            done.outcome is Outcome.BLOCKED
            and blocked.conversation.messages[-1].text == BLOCKED_TEXT
        )
    finally:
        host.close()


def test_always_allow_is_remembered_and_reported(engine, files_host):
    saved: list[ConsentTable] = []
    answers = iter([ConsentAnswer(Approval.ALWAYS)])
    loop = ToolLoop(engine, files_host, approve=lambda p, c: next(answers), on_consent=saved.append)
    convo = Conversation((Message(Role.USER, "notes twice"),), id="loop-always")
    run(
        loop,
        convo,
        forced(call("read_text", path="notes.md"), call("read_text", path="notes.md"), "Done."),
    )
    assert saved[-1].decide(BUILTIN_FILES, "read_text") is Consent.ALLOW
    # the second ran unasked
    assert sum(m.role is Role.TOOL for m in loop.conversation.messages) == 2


def test_edited_arguments_are_what_runs(engine, files_host):
    loop = ToolLoop(
        engine,
        files_host,
        approve=lambda p, c: ConsentAnswer(Approval.RUN_ONCE, {"path": "missing.md"}),
    )
    events = run(
        loop,
        Conversation((Message(Role.USER, "notes?"),), id="loop-edit"),
        forced(call("read_text", path="notes.md"), "ok"),
    )
    (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
    assert done.arguments == {"path": "missing.md"} and "not a file" in done.result


def test_unknown_tool_and_malformed_call_text(engine, files_host):
    loop = ToolLoop(engine, files_host, approve=lambda p, c: pytest.fail("nothing to ask"))
    events = run(
        loop,
        Conversation((Message(Role.USER, "x"),), id="loop-unknown"),
        forced(call("format_disk", device="sda"), "ok"),
    )
    (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
    assert done.outcome is Outcome.FAILED and "no tool named 'format_disk'" in done.result
    assert "read_text" in done.result  # the model is told which tools there are

    broken = "<tool_call>\n<function=read_text>\n<parameter=path>\nnotes.md\n"  # never closed
    events = run(
        loop, Conversation((Message(Role.USER, "y"),), id="loop-malformed"), forced(broken)
    )
    # not a call: the turn just ends
    assert not [e for e in events if isinstance(e, ToolCallFinished)]
    assert events[-1].reason is FinishReason.STOP


def test_the_loop_stops_at_the_step_limit(engine, files_host):
    loop = ToolLoop(
        engine, files_host, approve=lambda p, c: ConsentAnswer(Approval.RUN_ONCE), max_steps=2
    )
    events = run(
        loop,
        Conversation((Message(Role.USER, "loop forever"),), id="loop-limit"),
        forced(call("read_text", path="notes.md")),
    )
    assert [e.steps for e in events if isinstance(e, StepLimitReached)] == [2]
    assert sum(isinstance(e, ToolCallFinished) for e in events) == 2


def test_stop_during_a_call_cancels_it(engine, tmp_path):
    server = ServerConfig(
        "test",
        command=sys.executable,
        args=(str(ROOT / "tests" / "mcp_server.py"),),
        env={"PYTHONPATH": str(ROOT)},
    )
    host = ToolHost(tmp_path)
    try:
        host.configure([server])
        host.wait_ready(60)
        cancel = CancelToken()
        loop = ToolLoop(engine, host, consent=ConsentTable().with_server("test", Consent.ALLOW))

        events = []
        for event in loop.run(
            Conversation((Message(Role.USER, "wait"),), id="loop-stop"),
            GenerationSettings(thinking=False),
            cancel=cancel,
            step_settings=forced(call("slow", seconds="30")),
        ):
            events.append(event)
            if isinstance(event, Stats):
                threading.Timer(0.5, cancel.cancel).start()
        (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
        assert done.outcome is Outcome.CANCELLED
        assert events[-1] == Finished(FinishReason.CANCELLED)
    finally:
        host.close()


def test_reasoning_between_calls_is_kept_as_the_template_keeps_it(engine, files_host):
    loop = ToolLoop(engine, files_host, approve=lambda p, c: ConsentAnswer(Approval.RUN_ONCE))
    convo = Conversation((Message(Role.USER, "notes?"),), id="loop-think")
    events = list(
        loop.run(
            convo,
            GenerationSettings(),
            step_settings=forced(
                call("read_text", path="notes.md"), "Done.", thinking=True, budget=6
            ),
        )
    )
    assert events[-1].reason is FinishReason.STOP
    step = loop.conversation.messages[1]
    assert step.thinking.strip()  # the budget closed a few thinking tokens before the forced call
    loaded = engine._loaded
    within = render_text(loop.conversation, loaded.apply_template, thinking=True, text_only=False)
    assert step.thinking.strip() in within  # after the last user message: the template keeps it
    later = replace(
        loop.conversation,
        messages=loop.conversation.messages
        + (Message(Role.ASSISTANT, "Done."), Message(Role.USER, "thanks")),
    )
    after = render_text(later, loaded.apply_template, thinking=True, text_only=False)
    assert step.thinking.strip() not in after  # a later user turn: the template drops it


def test_allow_tools_names_servers_tools_or_all():
    from engine_mlx.tools.commands import allowed_consent

    table = allowed_consent("files, time/get_current_time, search")
    assert table.decide("files", "anything") is Consent.ALLOW
    assert table.decide("time", "get_current_time") is Consent.ALLOW
    assert table.decide("time", "convert_time") is Consent.ASK
    assert table.decide("other", "search") is Consent.ALLOW  # a bare name may be a tool's
    assert allowed_consent("all").decide("x", "y") is Consent.ALLOW
    assert allowed_consent(None).decide("x", "y") is Consent.ASK


def test_chat_with_files_offers_the_tool_to_the_model(tiny_model_dir, tmp_path):
    import json
    import os
    import subprocess

    (tmp_path / "shared").mkdir()

    def chat(*extra: str) -> list[dict]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine_mlx",
                "chat",
                "--model",
                str(tiny_model_dir),
                "--json",
                "--no-think",
                "--max-tokens",
                "4",
                "--seed",
                "1",
                *extra,
                "hello",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "MLX_DISABLE_COMPILE": "1",
                "QWENDESK_DATA_DIR": str(tmp_path / "data"),
            },
        )
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    def prompt_tokens(events):
        return next(e for e in events if e["type"] == "stats")["prompt_tokens"]

    plain = chat()
    with_tools = chat("--files", str(tmp_path / "shared"))
    assert prompt_tokens(with_tools) > prompt_tokens(plain)  # the template rendered the Files tool
    assert with_tools[-1]["type"] == "done"


def test_a_tools_images_go_to_a_vision_model_and_a_text_only_one_is_told_of_them(tmp_path):
    """The one builder of a tool message (the loop's step and the app's rebuilt history both use it)."""
    from engine_mlx.conversation import ImageAttachment
    from engine_mlx.tools.loop import tool_message

    image = tmp_path / "call-0.png"
    seen = tool_message("a picture", [image], vision=True)
    assert seen.role is Role.TOOL and seen.text == "a picture"
    assert seen.attachments == (ImageAttachment(image),)
    told = tool_message("a picture", [image, image], vision=False)
    assert told.attachments == () and told.text == (
        "a picture\n[The tool returned 2 images; this model is text-only and cannot see images.]"
    )
    assert tool_message("", [], vision=False) == Message(Role.TOOL, "")


def test_a_steps_text_and_reasoning_are_reported_and_make_its_message(engine, files_host):
    from engine_mlx.tools.loop import StepWritten, step_message

    loop = ToolLoop(engine, files_host, approve=lambda p, c: ConsentAnswer(Approval.RUN_ONCE))
    events = list(
        loop.run(
            Conversation((Message(Role.USER, "notes?"),), id="loop-step-text"),
            GenerationSettings(),
            step_settings=forced(
                "Let me read them.\n\n" + call("read_text", path="notes.md"),
                "Done.",
                thinking=True,
                budget=3,
            ),
        )
    )
    (written,) = [e for e in events if isinstance(e, StepWritten)]
    first_call = next(i for i, e in enumerate(events) if isinstance(e, ToolCallFinished))
    assert events.index(written) < first_call  # reported before its calls run
    assert written.step == 0 and written.text.strip() == "Let me read them."
    assert written.thinking.strip()
    step = loop.conversation.messages[1]
    assert step == step_message(written.text, written.thinking, step.tool_calls)
    assert (step.text, step.thinking) == ("Let me read them.", written.thinking)


def test_continuing_a_cut_step_runs_the_call_it_writes_and_resumes_exactly(engine, files_host):
    from engine_mlx.tools.loop import StepWritten

    loop = ToolLoop(engine, files_host, approve=lambda p, c: ConsentAnswer(Approval.RUN_ONCE))
    convo = Conversation((Message(Role.USER, "notes?"),), id="loop-continue")
    cut = run(
        loop,
        convo,
        lambda i: replace(forced("I should read the notes file. " * 5)(i), max_tokens=6),
    )
    assert cut[-1].reason is FinishReason.LENGTH
    so_far = "".join(e.text for e in cut if isinstance(e, AnswerDelta))
    # what Continue sends: the cut message last
    carried = replace(convo.with_message(Message(Role.ASSISTANT, so_far)), continue_last=True)
    events = list(
        loop.run(
            carried,
            GenerationSettings(thinking=False),
            step_settings=forced(" Now.\n\n" + call("read_text", path="notes.md"), "Quokkas."),
            first_step=2,
        )
    )
    (written,) = [e for e in events if isinstance(e, StepWritten)]
    # the step is the whole message
    assert written.step == 2 and written.text == so_far + " Now.\n\n"
    (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
    assert (done.step, done.outcome, done.result) == (2, Outcome.RAN, NOTES)
    assert not loop.conversation.continue_last
    user, step, result = loop.conversation.messages
    assert step.text == (so_far + " Now.").strip() and result.text == NOTES
    continued = next(e for e in events if isinstance(e, Stats))
    assert continued.prefilled_tokens <= 2  # it went on from the end of the cut step
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)).endswith("Quokkas.")
