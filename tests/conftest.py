"""Shared fixtures: the tiny Qwen3.5 model is built once per session and loaded once per session."""

from __future__ import annotations

import os

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from engine_mlx.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_text_model_dir(tmp_path_factory):
    """The tiny model as a text-only conversion (loaded through mlx-lm, no vision tower)."""
    from engine_mlx.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-text"), vision=False)


@pytest.fixture(scope="session")
def tiny_mtp_model_dir(tmp_path_factory):
    """The tiny vision model with an MTP head trained on its replies to the demo's first messages
    (``python -m engine_mlx tiny --mtp``): speculative decoding on it keeps most drafts."""
    from engine_mlx.tiny import build_tiny_model
    from engine_mlx.tiny_mtp import train_head

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-mtp"))
    train_head(folder)
    return folder


@pytest.fixture(scope="session")
def engine(tiny_model_dir, tmp_path_factory):
    from engine_mlx.engine import Engine

    eng = Engine(state_dir=tmp_path_factory.mktemp("state"))
    eng.load(tiny_model_dir)
    return eng


# --- app (Qt) helpers ---------------------------------------------------------------------------


@pytest.fixture
def qt_wait(qapp):
    """``qt_wait(condition, timeout_s)``: run the Qt event loop until ``condition()`` is true."""
    import time

    from PySide6.QtCore import QEventLoop, QTimer

    def wait(condition, timeout: float = 60.0, message="") -> None:
        if condition():
            return
        loop = QEventLoop()
        deadline = time.monotonic() + timeout
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: (condition() or time.monotonic() > deadline) and loop.quit())
        timer.start()
        loop.exec()
        timer.stop()
        message = message() if callable(message) else message
        assert condition(), message or f"timed out after {timeout} s waiting for {condition}"

    return wait


@pytest.fixture
def make_window(qapp, qt_wait, tmp_path):
    """``make_window(data_dir=None, model=None)``: a shown MainWindow on a data folder, with the model
    loaded if one is given; closed at the end of the test."""
    from app import theme
    from app.paths import app_paths
    from app.window import MainWindow

    theme.apply(qapp, theme.Scheme.LIGHT)
    windows = []

    def make(data_dir=None, model=None):
        window = MainWindow(app_paths(data_dir or tmp_path / "data"), reload_last=False)
        window.resize(1100, 760)
        window.show()
        windows.append(window)
        if model is not None:
            window.models.load(model)
            qt_wait(
                lambda: window.models.loaded_info is not None or window.error_banner.isVisible(),
                120,
            )
            assert window.models.loaded_info is not None, window.error_banner.label.text()
        return window

    yield make
    for window in windows:
        window.close()


@pytest.fixture
def window(make_window, tiny_model_dir):
    """The main window with the tiny vision model loaded."""
    return make_window(model=tiny_model_dir)


def record_generate(window, pick=lambda conversation, settings: (conversation, settings)) -> list:
    """What the window's engine client is asked to generate, in order: ``pick(conversation, settings)``
    per request ((conversation, GenerationSettings) by default)."""
    seen: list = []
    real = window.engine.generate

    def generate(conversation, settings):
        seen.append(pick(conversation, settings))
        return real(conversation, settings)

    window.engine.generate = generate  # the chat controller calls it through the same client
    return seen


# --- the tiny HF-layout release and the conversions users download (tests/test_conformance.py) ---


@pytest.fixture(scope="session")
def tiny_release_dir(tmp_path_factory):
    """The tiny Qwen3.5-MoE release as Qwen publishes it (HF layout, original key names, real vocabulary)."""
    from engine_mlx.tiny_release import build_tiny_release

    return build_tiny_release(tmp_path_factory.mktemp("release") / "Qwen3.5-Tiny-A1B")


@pytest.fixture(scope="session")
def qwendesk_server(tiny_model_dir):
    """``python -m engine_mlx serve`` on the tiny vision model, 127.0.0.1, a free port, key
    ``serve_process.KEY``: the server the app's server mode and engine_mlx.remote talk to."""
    from serve_process import ServeProcess

    server = ServeProcess(tiny_model_dir)
    yield server
    server.stop()
