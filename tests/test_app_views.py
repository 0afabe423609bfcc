"""Views on their own: transcript paging, thinking block, answer streaming, settings dialog, model picker."""

from __future__ import annotations

import pytest

from app import theme
from app.controllers.models import ModelEntry, fit_label
from app.render import LIGHT
from app.store import ChatSettings, MessageState, StoredMessage, ThinkingMode
from app.views.answer import AnswerView
from app.views.settings import SettingsDialog
from app.views.thinking import ThinkingBlock
from app.views.transcript import PAGE, TranscriptView
from engine_mlx.sizes import human_bytes


def message(i: int, role: str = "user", text: str = "", **kw) -> StoredMessage:
    return StoredMessage(i, "c", i, role, text or f"message {i}", **kw)


def test_transcript_creates_widgets_lazily_for_long_chats(qtbot):
    view = TranscriptView(LIGHT)
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    history = [message(i, "user" if i % 2 == 0 else "assistant") for i in range(300)]
    view.set_messages(history)
    assert len(view.widgets) == PAGE and view.hidden_count == 300 - PAGE
    assert view.widgets[-1].message_id == 299
    view.load_earlier()
    assert len(view.widgets) == 2 * PAGE and view.widgets[0].message_id == 300 - 2 * PAGE
    view.remove_from(290)
    assert view.widgets[-1].message_id == 289
    assert not view.widgets[
        -1
    ].regenerate_button.isHidden()  # only the last answer offers regenerate
    assert view.widgets[-3].regenerate_button.isHidden()


def test_streaming_answer_matches_final_render(qtbot):
    text = "Intro with $a^2$.\n\n```python\nprint('x')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- one\n- two\n"
    streamed = AnswerView(LIGHT)
    qtbot.addWidget(streamed)
    streamed.resize(500, 100)
    streamed.show()
    for i in range(0, len(text), 5):
        streamed.append(text[i : i + 5])
        streamed.flush()
    streamed.finish()
    whole = AnswerView(LIGHT)
    qtbot.addWidget(whole)
    whole.set_markdown(text)

    def lines(view):
        return [line for line in view.toPlainText().splitlines() if line.strip()]

    assert lines(streamed) == lines(whole)
    assert streamed.markdown == text
    assert streamed.code_count() == 1
    streamed.copy_code(0)
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == "print('x')"
    assert streamed.height() > 60  # grows with its document instead of scrolling


def test_answer_coalesces_tokens(qtbot):
    view = AnswerView(LIGHT)
    qtbot.addWidget(view)
    flushes = []
    original = view._insert
    view._insert = lambda blocks, tail: (flushes.append(1), original(blocks, tail))
    for _ in range(200):
        view.append("tok ")
    assert flushes == []  # nothing rendered per token
    qtbot.waitSignal(view._timer.timeout, timeout=1000).wait()
    assert len(flushes) == 1 and view.toPlainText().startswith("tok tok")


def test_thinking_block_live_then_collapsed(qtbot):
    block = ThinkingBlock()
    qtbot.addWidget(block)
    block.show()
    block.append("considering the question… ")
    assert block.live and block.expanded and block.header.text().startswith("Thinking…")
    with qtbot.waitSignal(block._timer.timeout, timeout=1000):
        pass
    assert "considering" in block.body.toPlainText()
    block.finish(12.34)
    block.set_tokens(1234)
    assert not block.expanded and block.header.text() == "Thought for 12.3 s · 1,234 tokens"
    block.header.click()
    assert block.expanded
    stored = ThinkingBlock()
    qtbot.addWidget(stored)
    stored.set_static("old reasoning", 3.0, None)
    assert stored.body.toPlainText() == ""  # loaded only when expanded
    stored.set_expanded(True)
    assert stored.body.toPlainText() == "old reasoning" and stored.text() == "old reasoning"


def test_settings_dialog_round_trip(qtbot):
    original = ChatSettings(
        system_prompt="Be brief.", thinking=ThinkingMode.BUDGET, thinking_budget=300
    ).with_generation(max_tokens=1000, temperature=0.0, top_k=None, seed=42)
    dialog = SettingsDialog(original)
    qtbot.addWidget(dialog)
    assert dialog.value() == original  # temperature 0 stays 0, None stays "Qwen default"
    dialog.mode_off.setChecked(True)
    dialog.temperature.setValue(dialog.temperature.minimum())
    value = dialog.value()
    assert (
        value.thinking is ThinkingMode.OFF
        and value.generation.temperature is None
        and not dialog.budget.isEnabled()
    )


def test_model_picker_lists_the_tiny_model(qtbot, tiny_model_dir, tmp_path, request):
    from app.controllers.models import ModelsController
    from app.paths import app_paths
    from app.store import Store
    from app.views.model_picker import ModelPicker
    from app.workers import EngineClient
    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.memory import estimate_fit

    paths = app_paths(tmp_path).ensure()
    store = Store(paths.database, paths.attachments)
    engine = EngineClient(paths.engine_state)
    models = ModelsController(store, engine, paths)
    info = inspect_checkpoint(tiny_model_dir)
    fit = estimate_fit(info, 4096)
    models.scanned = True
    models.entries = [ModelEntry(info, fit)]
    picker = ModelPicker(models)
    qtbot.addWidget(picker)
    request.addfinalizer(lambda: (engine.shutdown(), store.close()))
    row = [picker.table.item(0, c).text() for c in range(picker.table.columnCount())]
    assert row[0] == info.name and row[1] == human_bytes(info.weight_bytes)
    # 8-bit router gates
    assert row[2] == info.precision == "mixed 4–8 bit" and row[3] == "Vision + text"
    assert row[4].startswith(fit_label(fit)) and "GiB" in row[4]
    assert "needs" in picker.details.text()  # the fit summary with numbers


@pytest.mark.parametrize("scheme", [theme.Scheme.LIGHT, theme.Scheme.DARK])
def test_theme_applies_palette(qapp, scheme):
    colors = theme.apply(qapp, scheme)
    assert colors.dark == (scheme is theme.Scheme.DARK)
    assert theme.current(qapp) is colors
    assert qapp.palette().window().color().name() == colors.window
    theme.apply(qapp, theme.Scheme.LIGHT)


def test_interrupted_message_is_labelled(qtbot):
    view = TranscriptView(LIGHT)
    qtbot.addWidget(view)
    view.set_messages(
        [message(1), message(2, "assistant", "half an ans", state=MessageState.INTERRUPTED)]
    )
    assert "Interrupted" in view.widgets[1].state_label.text()
