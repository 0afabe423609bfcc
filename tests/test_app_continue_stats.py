"""After Continue the stats cover the whole answer, and an answer the token limit cut says so (the limit
counts thinking too); the settings name the limit for what it is."""

from __future__ import annotations

import test_app_window as base
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFormLayout

from app.controllers.chat import continued_stats
from app.store import StoredStats, ThinkingMode
from app.views.settings import SettingsDialog
from engine_mlx.events import Stats

send, stored = base.send, base.stored


def test_after_continue_the_stats_show_the_whole_answer(window, qt_wait):
    send(window, qt_wait, "Tell a long story", thinking=ThinkingMode.OFF, max_tokens=6)
    first = stored(window)[-1]
    widget = window.transcript.widget_for(first.id)
    assert "Cut off at the 6-token limit, which counts the answer" in widget.state_label.text()
    runs: list[Stats] = []
    window.engine.stats.connect(lambda _rid, stats: runs.append(stats))
    QApplication.processEvents()
    QTest.mouseClick(widget.continue_link, Qt.MouseButton.LeftButton)
    qt_wait(lambda: not window.chat.busy, 120)
    grown = stored(window)[-1]
    assert grown.id == first.id and runs
    assert grown.stats.generated_tokens == first.stats.generated_tokens + runs[-1].generated_tokens
    assert grown.stats.answer_tokens == first.stats.answer_tokens + runs[-1].answer_tokens
    assert grown.stats.run_tokens == runs[-1].generated_tokens
    # the answer's prompt, not the resume point
    assert grown.stats.prompt_tokens == first.stats.prompt_tokens
    shown = window.transcript.widget_for(grown.id)
    assert shown.stats_label.text().startswith(f"{grown.stats.generated_tokens:,} tokens")
    # The status bar's context figure counts the answer once.
    assert (
        f"{grown.stats.prompt_tokens + grown.stats.generated_tokens:,}"
        in window.status_context.text()
    )


def test_an_answer_cut_after_its_thinking_gets_a_note(window, qt_wait):
    send(
        window,
        qt_wait,
        "Think briefly",
        thinking=ThinkingMode.BUDGET,
        thinking_budget=2,
        max_tokens=10,
    )
    answer = stored(window)[-1]
    assert answer.thinking and answer.text and answer.stats.generated_tokens == 10
    note = window.transcript.widget_for(answer.id).state_label
    assert not note.isHidden()
    assert note.text().startswith(
        "Cut off at the 10-token limit, which counts its thinking and answer together"
    )
    # Reopened from the database, it says the same.
    window.chat.open(window.chat.current_id)
    assert "10-token limit" in window.transcript.widget_for(answer.id).state_label.text()


def test_an_answer_that_ended_by_itself_has_no_cut_note(window, qt_wait):
    send(window, qt_wait, "Hi", thinking=ThinkingMode.OFF, max_tokens=6)
    answer = stored(window)[-1]
    window.store.update_message(
        answer.id, stats=StoredStats.from_dict(dict(generated_tokens=3, run_tokens=3))
    )
    window.chat.open(window.chat.current_id)
    assert window.transcript.widget_for(answer.id).state_label.isHidden()


def test_continued_stats_sum_the_runs():
    before = StoredStats.from_dict(
        dict(
            prompt_tokens=20,
            generated_tokens=10,
            thinking_tokens=4,
            answer_tokens=6,
            decode_tps=10.0,
            ttft_s=0.5,
            total_s=1.5,
            peak_memory_bytes=100,
            drafted_tokens=8,
            accepted_tokens=6,
            run_tokens=10,
        )
    )
    after = StoredStats.from_dict(
        dict(
            prompt_tokens=30,
            reused_tokens=30,
            generated_tokens=30,
            answer_tokens=30,
            decode_tps=30.0,
            ttft_s=0.1,
            total_s=1.1,
            peak_memory_bytes=90,
            drafted_tokens=20,
            accepted_tokens=11,
            run_tokens=30,
        )
    )
    whole = continued_stats(before, after)
    assert (whole.prompt_tokens, whole.reused_tokens, whole.generated_tokens) == (20, 0, 40)
    assert (whole.thinking_tokens, whole.answer_tokens, whole.run_tokens) == (4, 36, 30)
    assert whole.decode_tps == 20.0  # 40 tokens in 1 s + 1 s
    assert whole.ttft_s == 0.5 and whole.total_s == 2.6 and whole.peak_memory_bytes == 100
    assert (whole.drafted_tokens, whole.accepted_tokens) == (28, 17)  # MTP: both runs' drafts


def test_the_settings_say_the_limit_counts_thinking(qtbot):
    from app.store import ChatSettings

    dialog = SettingsDialog(ChatSettings(), None)
    qtbot.addWidget(dialog)
    form = next(lay for lay in dialog.findChildren(QFormLayout))
    label = form.labelForField(dialog.max_tokens)
    assert "thinking" in label.text() and "answer" in label.text()
