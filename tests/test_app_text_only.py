"""The app chats on a text-only conversion: follow-ups reuse the model state, also after a restart.

Real window, real Engine on the tiny text-only model (mlx-lm's model and cache classes), real SQLite.
"""

from __future__ import annotations

from pathlib import Path

from app import theme
from app.paths import app_paths
from app.store import ChatSettings, MessageState, ThinkingMode
from app.window import MainWindow

SETTINGS = ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=8, seed=7)


def open_window(qapp, qt_wait, data: Path, model: Path) -> MainWindow:
    theme.apply(qapp, theme.Scheme.LIGHT)
    window = MainWindow(app_paths(data), reload_last=False)
    window.resize(1000, 700)
    window.show()
    window.models.load(model)
    qt_wait(lambda: window.models.loaded_info is not None or window.error_banner.isVisible(), 120)
    assert window.models.loaded_info is not None, window.error_banner.label.text()
    assert not window.models.loaded_info.is_vision
    return window


def send(window: MainWindow, qt_wait, text: str):
    window.chat.set_settings(SETTINGS)
    window.composer.edit.setPlainText(text)
    assert window.send(window.composer.text()), window.error_banner.label.text()
    qt_wait(lambda: not window.chat.busy, 120)
    answer = window.store.messages(window.chat.current_id)[-1]
    assert answer.state is MessageState.COMPLETE, (answer.state, answer.error)
    assert answer.stats is not None and answer.stats.generated_tokens > 0
    return answer


def test_text_only_model_chats_with_reuse_and_after_a_restart(
    qapp, qt_wait, tmp_path, tiny_text_model_dir
):
    data = tmp_path / "data"
    window = open_window(qapp, qt_wait, data, tiny_text_model_dir)
    first = send(window, qt_wait, "Hello there, what is MLX?")
    assert first.stats.reused_tokens == 0
    second = send(window, qt_wait, "Tell me more about the fox and the dog.")
    assert second.stats.reused_tokens > 0  # the follow-up resumed from the first turn's state
    assert second.stats.reused_tokens < second.stats.prompt_tokens
    conversation = window.chat.current_id
    states = app_paths(data).engine_state
    qt_wait(lambda: any(states.glob("*.safetensors")), 30, "the state was never saved")
    window.close()

    again = open_window(qapp, qt_wait, data, tiny_text_model_dir)
    try:
        again.chat.open(conversation)
        third = send(again, qt_wait, "And the cat on the mat?")
        assert third.stats.reused_tokens >= second.stats.prompt_tokens // 2  # restored from disk
        assert [m.role for m in again.store.messages(conversation)] == ["user", "assistant"] * 3
    finally:
        again.close()
