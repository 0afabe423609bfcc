"""Screenshots of the real app for the README, in light and dark.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m app.screenshots [out_dir]

Nothing is staged: the demo model (tiny, random weights) is built and loaded as the first-run page's button
does, two questions are sent from the composer with a chart attached, and the answers stream from MLX.
They are gibberish, as the demo banner in the shot says; the status bar's figures are the real ones.

The grounding shot asks where a button is on a screenshot. The random model cannot answer that, so its
reply is forced token by token through the real engine, tokenizer and detokenizer (the engine's
``GenerationSettings.forced``, the hook the tests use); the boxes drawn on the image are the app's own.
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


# A fake dialog: (x1, y1, x2, y2) of its buttons in a 640 x 400 screenshot.
DIALOG_SIZE = (640, 400)
BUTTONS = {"Cancel": (380, 330, 490, 372), "Save": (505, 330, 615, 372)}
GROUNDING_QUESTION = "Where are the Save and Cancel buttons?"


def _dialog(path: Path) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", DIALOG_SIZE, (246, 247, 249))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, DIALOG_SIZE[0], 44], fill=(226, 229, 235))
    draw.text((18, 15), "Export settings", fill=(40, 40, 40))
    for i, label in enumerate(("Format", "Folder", "File name")):
        y = 80 + i * 70
        draw.text((30, y), label, fill=(60, 60, 60))
        draw.rectangle([150, y - 8, 610, y + 24], outline=(180, 184, 192), fill=(255, 255, 255))
    for label, (x1, y1, x2, y2) in BUTTONS.items():
        fill = (52, 110, 235) if label == "Save" else (255, 255, 255)
        draw.rounded_rectangle([x1, y1, x2, y2], radius=6, fill=fill, outline=(150, 155, 165))
        draw.text(
            (x1 + 35, y1 + 14), label, fill=(255, 255, 255) if label == "Save" else (40, 40, 40)
        )
    img.save(path)
    return path


def _grounding_answer() -> str:
    """The answer Qwen3.5 gives for the dialog: its buttons in its 0-1000 coordinates."""
    import json

    w, h = DIALOG_SIZE
    boxes = [
        {
            "bbox_2d": [
                round(x1 / w * 1000),
                round(y1 / h * 1000),
                round(x2 / w * 1000),
                round(y2 / h * 1000),
            ],
            "label": f"{label} button",
        }
        for label, (x1, y1, x2, y2) in BUTTONS.items()
    ]
    return (
        "Both buttons are at the bottom right of the dialog, **Save** on the right.\n\n```json\n"
        + json.dumps(boxes)
        + "\n```"
    )


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
            window.chat.set_settings(
                ChatSettings(
                    thinking=ThinkingMode.BUDGET,
                    thinking_budget=40,
                    generation=GenerationSettings(max_tokens=120, seed=11),
                )
            )
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
        if scheme is theme.Scheme.LIGHT:
            saved.append(_grounding_shot(window, out_dir))
        window.close()
    return saved


def _grounding_shot(window, out_dir: Path) -> Path:
    """A new chat: the dialog attached, the question sent, the (forced) answer's boxes on the image."""
    from dataclasses import replace

    from engine_mlx.forcing import ForcedText

    answer = _grounding_answer()
    generate = window.engine.generate
    window.engine.generate = lambda convo, settings: generate(
        convo, replace(settings, thinking=False, forced=ForcedText(answer))
    )
    try:
        window.new_chat()
        window.chat.set_settings(
            ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=400)
        )
        window.attachments.add_paths([_dialog(Path(tempfile.mkdtemp()) / "export-dialog.png")])
        _wait(lambda: len(window.attachments.items) == 1, 60)
        window.composer.edit.setPlainText(GROUNDING_QUESTION)
        window.composer.send_button.click()
        _wait(lambda: not window.chat.busy, 300)
    finally:
        window.engine.generate = generate
    _settle(800)
    window.transcript.scroll_to_bottom()
    _settle(300)
    path = out_dir / "grounding-light.png"
    window.grab().save(str(path))
    return path


def main(take=None) -> int:
    """Write the shots of ``take`` (default: this module's ``shoot``) into argv[1] or the README's folder."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "resources" / "screenshots"
    for path in (take or shoot)(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
