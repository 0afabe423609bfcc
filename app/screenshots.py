"""Screenshots of the real app for the README, in light and dark.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m app.screenshots [out_dir]

Nothing is staged: the demo model (tiny, random weights) is built and loaded as the first-run page's button
does, two questions are sent from the composer with a chart attached, and the answers stream from MLX.
They are gibberish, as the demo banner in the shot says; the status bar's figures are the real ones.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from engine_mlx.settings import GenerationSettings

from .paths import app_paths
from .store import ChatSettings, ThinkingMode

ROOT = Path(__file__).resolve().parents[1]

QUESTION_1 = "What does this chart say about our sign-ups?"
QUESTION_2 = "Write a Python function that computes the week-over-week growth."


def _chart(path: Path) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (520, 300), (250, 250, 252))
    draw = ImageDraw.Draw(img)
    values = [820, 940, 1090, 1250, 830, 1310]
    for i, v in enumerate(values):
        x = 40 + i * 78
        h = int(v / 1400 * 240)
        draw.rectangle([x, 270 - h, x + 50, 270], fill=(79, 107, 237) if i != 4 else (230, 120, 90))
    draw.line([30, 270, 500, 270], fill=(60, 60, 60), width=2)
    img.save(path)
    return path


def _wait(condition, timeout_s: float) -> None:
    import time

    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s")
        loop = QEventLoop()
        QTimer.singleShot(20, loop.quit)
        loop.exec()


def _settle(ms: int) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def shoot(out_dir: Path) -> list[Path]:
    """The real app with the demo model: its model is built and loaded, the questions are typed into the
    composer with a chart attached, and the (random-weight, gibberish) answers stream in for real.
    The dark shot is the same data folder opened again, as after a restart."""
    from PySide6.QtWidgets import QApplication

    from . import theme
    from .window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("QwenDesk")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="qwendesk-shot-"))
    chart = _chart(Path(tempfile.mkdtemp()) / "signups.png")
    saved = []
    for scheme in (theme.Scheme.LIGHT, theme.Scheme.DARK):
        theme.apply(app, scheme)
        window = MainWindow(app_paths(data), reload_last=False)
        window.resize(1360, 1020)
        window.show()
        window.models.use_demo()
        _wait(lambda w=window: w.models.loaded_info is not None, 300)
        if scheme is theme.Scheme.LIGHT:
            window.chat.set_settings(ChatSettings(thinking=ThinkingMode.BUDGET, thinking_budget=40,
                                                  generation=GenerationSettings(max_tokens=120, seed=11)))
            window.attachments.add_paths([chart])
            _wait(lambda w=window: len(w.attachments.items) == 1, 60)
            for question in (QUESTION_1, QUESTION_2):
                window.composer.edit.setPlainText(question)
                window.composer.send_button.click()
                _wait(lambda w=window: not w.chat.busy, 300)
        else:
            window.chat.open(window.chat.conversations()[0].id)
        answers = [w for w in window.transcript.widgets if w.role == "assistant"]
        answers[-1].thinking.set_expanded(True)  # one expanded, one collapsed
        _settle(800)
        window.transcript.scroll_to_bottom()
        _settle(300)
        path = out_dir / f"main-{scheme.value}.png"
        window.grab().save(str(path))
        saved.append(path)
        window.close()
    return saved


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "resources" / "screenshots"
    for path in shoot(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
