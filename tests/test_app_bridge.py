"""The app's one engine thread and its background operations: the bridge's typed signals, and failures that
reach the user."""

from __future__ import annotations

import threading

from app.operations import Operation
from app.store import ChatSettings, MessageState, ThinkingMode
from app.workers import EngineClient
from engine_mlx.events import FinishReason, Stats


def test_an_answer_stopped_while_it_waits_for_the_engine_ends_as_stopped(window, qt_wait):
    """Stop pressed while the answer is queued behind other engine work (an API request, a token count):
    the job is skipped, and the chat still hears that it ended (before, it stayed busy for good)."""
    _engine, jobs = window.engine.shared()
    gate = threading.Event()
    jobs.submit(gate.wait)  # the engine thread is busy with someone else's job
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=8, seed=1)
    )
    finished: list = []
    window.engine.finished.connect(
        lambda request, reason, error: finished.append((request, reason, error))
    )
    assert window.send("Hello")
    assert window.chat.busy
    window.chat.stop()
    gate.set()
    qt_wait(lambda: not window.chat.busy, 60)
    answer = window.store.messages(window.chat.current_id)[-1]
    assert answer.role == "assistant" and answer.state is MessageState.STOPPED and answer.text == ""
    assert [reason.value for _r, reason, _e in finished] == ["cancelled"]


def test_the_bridge_answers_on_the_gui_thread_with_typed_values(window, qt_wait):
    """Every engine event reaches the GUI thread as its own signal with its own types."""
    seen: dict[str, list] = {"progress": [], "answer": [], "stats": [], "finished": []}
    gui = threading.current_thread()
    client: EngineClient = window.engine

    def note(kind: str, *values) -> None:
        assert threading.current_thread() is gui
        seen[kind].append(values)

    client.progress.connect(lambda r, done, total: note("progress", r, done, total))
    client.answerDelta.connect(lambda r, text: note("answer", r, text))
    client.stats.connect(lambda r, stats: note("stats", r, stats))
    client.finished.connect(lambda r, reason, error: note("finished", r, reason, error))
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=4, seed=2)
    )
    assert window.send("Hi")
    qt_wait(lambda: not window.chat.busy, 120)

    request = seen["finished"][-1][0]
    assert all(
        isinstance(done, int) and isinstance(total, int) for _r, done, total in seen["progress"]
    )
    assert (
        "".join(text for r, text in seen["answer"] if r == request)
        == window.store.messages(window.chat.current_id)[-1].text
    )
    assert (
        isinstance(seen["stats"][-1][1], Stats) and seen["finished"][-1][1] is FinishReason.LENGTH
    )


def test_a_background_failure_nobody_handles_reaches_the_banner(make_window, qt_wait):
    window = make_window()
    results: list = []

    def op(_ctx) -> int:
        raise OSError("the folder vanished")

    Operation(window.chat, op, results.append, label="Reading the folder").run_in_background()
    qt_wait(lambda: window.error_banner.isVisible(), 30)
    assert window.error_banner.label.text() == "Reading the folder failed: the folder vanished"
    assert results == []


def test_a_handled_failure_goes_to_its_handler_and_a_result_to_success(make_window, qt_wait):
    window = make_window()
    failures: list[Exception] = []
    results: list[int] = []
    progress: list[tuple[int, int]] = []

    def counting(ctx) -> int:
        ctx.progress(1, 2)
        return 42

    Operation(window, counting, results.append).with_progress(
        lambda d, t: progress.append((d, t))
    ).run_in_background()
    Operation(window, lambda _ctx: 1 // 0, results.append).failure(
        failures.append
    ).run_in_background()
    qt_wait(lambda: results and failures, 30)
    assert results == [42] and progress == [(1, 2)] and isinstance(failures[0], ZeroDivisionError)
    assert not window.error_banner.isVisible()


def test_an_answer_asked_for_after_shutdown_ends_as_cancelled_once_the_caller_has_its_id(
    qapp, qt_wait, tmp_path
):
    from engine_mlx.conversation import Conversation, Message, Role
    from engine_mlx.settings import GenerationSettings

    client = EngineClient(tmp_path / "state")
    client.shutdown()
    got: list = []
    client.finished.connect(lambda request, reason, _error: got.append((request, reason)))
    request = client.generate(Conversation((Message(Role.USER, "Hi"),)), GenerationSettings())
    assert got == [] and not client.running
    qt_wait(lambda: got, 10)
    assert got == [(request, FinishReason.CANCELLED)]


def test_a_tool_loop_turns_events_arrive_as_their_own_typed_signals_in_order(
    qapp, qt_wait, tmp_path
):
    """``run_turn`` relays what the tool loop yields besides the answer: each kind on its own signal,
    in the order the loop yielded them (a scripted turn: this checks the relay, not the loop)."""
    from engine_mlx.events import AnswerDelta, Finished
    from engine_mlx.tools.loop import Outcome, StepLimitReached, ToolCallFinished, ToolCallProposed

    proposed = ToolCallProposed(1, "c1", "files", "read", "Read a file", {"path": "a.txt"})
    done = ToolCallFinished(1, "c1", "files", "read", {"path": "a.txt"}, Outcome.RAN, "hello")
    threads: set = set()

    def turn(_engine, _cancel):
        threads.add(threading.current_thread().name)
        yield from (
            proposed,
            done,
            AnswerDelta("It says hello."),
            StepLimitReached(10),
            Finished(FinishReason.STOP),
        )

    client = EngineClient(tmp_path / "state")
    got: list = []
    client.toolCallProposed.connect(lambda r, event: got.append(("proposed", r, event)))
    client.toolCallFinished.connect(lambda r, event: got.append(("finished call", r, event)))
    client.answerDelta.connect(lambda r, text: got.append(("answer", r, text)))
    client.stepLimitReached.connect(lambda r, steps: got.append(("limit", r, steps)))
    client.finished.connect(lambda r, reason, error: got.append(("end", r, reason)))
    try:
        request = client.run_turn(turn)
        qt_wait(lambda: got and got[-1][0] == "end", 30)
    finally:
        client.shutdown()
    assert threads == {"engine"}  # the turn ran on the engine thread
    assert got == [
        ("proposed", request, proposed),
        ("finished call", request, done),
        ("answer", request, "It says hello."),
        ("limit", request, 10),
        ("end", request, FinishReason.STOP),
    ]
