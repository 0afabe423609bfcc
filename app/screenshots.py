"""Render the main window in light and dark with a seeded conversation; save PNGs for the README.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m app.screenshots [out_dir]

The conversation is written straight into a temporary store (no model needed), so the shots are
reproducible: an image attachment, a collapsed and an expanded thinking block, a code block and math.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .paths import app_paths
from .store import AttachmentKind, ChatSettings, MessageState, Store, StoredAttachment, StoredStats

ROOT = Path(__file__).resolve().parents[1]

QUESTION_1 = "What does this chart say about our sign-ups?"
THINKING_1 = ("The chart shows weekly sign-ups. The bars rise from week 1 to week 4, dip in week 5, then climb "
              "again. I should give the trend, the dip and one likely cause, briefly.")
ANSWER_1 = """Sign-ups **grew about 60 %** over six weeks, with one dip:

- Weeks 1–4: steady growth, roughly +15 % a week.
- Week 5: a drop of about a third — it lines up with the outage on the 14th.
- Week 6: back above the week-4 level.

The trend fits $y \\approx a \\cdot e^{0.12\\,t}$, so at this pace you would pass **2,000 a week** in about a month."""

QUESTION_2 = "Write a Python function that computes the week-over-week growth."
THINKING_2 = ("They want week-over-week growth from a list of weekly counts. Pair each week with the previous "
              "one, skip a zero denominator, return percentages. Keep it short and typed; add an example.")
ANSWER_2 = """Here is a small, typed version:

```python
def weekly_growth(counts: list[int]) -> list[float | None]:
    \"\"\"Percent change from each week to the next (None when the previous week is 0).\"\"\"
    return [
        None if prev == 0 else 100 * (cur - prev) / prev
        for prev, cur in zip(counts, counts[1:])
    ]

print(weekly_growth([820, 940, 1090, 1250, 830, 1310]))
```

Week 5 comes out at **−33.6 %**, the outage dip."""


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


def seed(data_dir: Path) -> str:
    paths = app_paths(data_dir).ensure()
    store = Store(paths.database, paths.attachments)
    chart = store.import_file(_chart(Path(tempfile.mkdtemp()) / "signups.png"))
    for title in ("Trip to Lisbon", "Rust borrow checker question", "Summarize the Q3 report"):
        other = store.create_conversation(title)
        store.add_message(other, "user", title)
    cid = store.create_conversation("Sign-ups chart", ChatSettings())
    store.add_message(cid, "user", QUESTION_1,
                      attachments=(StoredAttachment(AttachmentKind.IMAGE, chart, "signups.png"),))
    a1 = store.add_message(cid, "assistant", "", state=MessageState.STREAMING)
    store.update_message(a1.id, text=ANSWER_1, thinking=THINKING_1, thinking_s=4.2, state=MessageState.COMPLETE,
                         stats=StoredStats(prompt_tokens=1312, generated_tokens=211, thinking_tokens=58,
                                           answer_tokens=153, decode_tps=38.4, ttft_s=0.91, total_s=6.4))
    store.add_message(cid, "user", QUESTION_2)
    a2 = store.add_message(cid, "assistant", "", state=MessageState.STREAMING)
    store.update_message(a2.id, text=ANSWER_2, thinking=THINKING_2, thinking_s=2.7, state=MessageState.COMPLETE,
                         stats=StoredStats(prompt_tokens=1560, reused_tokens=1498, generated_tokens=188,
                                           thinking_tokens=49, answer_tokens=139, decode_tps=41.0, ttft_s=0.34,
                                           total_s=4.9))
    store.close()
    return cid


def shoot(out_dir: Path) -> list[Path]:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from . import theme
    from .window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("QwenDesk")
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for scheme in (theme.Scheme.LIGHT, theme.Scheme.DARK):
        theme.apply(app, scheme)
        data = Path(tempfile.mkdtemp(prefix="qwendesk-shot-"))
        cid = seed(data)
        window = MainWindow(app_paths(data), reload_last=False)
        window.resize(1360, 1020)
        window.show()
        window.chat.open(cid)
        window.refresh_conversations()
        # Pretend a model is loaded for the status bar (no engine is involved in a screenshot).
        window.status_model.setText("Qwen3.5-35B-A3B · 4-bit · vision")
        window.model_button.setText("Qwen3.5-35B-A3B")
        window.status_speed.setText("41.0 tok/s")
        window.status_context.setText("Context 1,748 / 32,768")
        window.status_memory.setText("Weights 19.4 GB · peak 21.2 GB")
        window.composer.edit.setPlainText("")
        answers = [w for w in window.transcript.widgets if w.role == "assistant"]
        answers[-1].thinking.set_expanded(True)  # one expanded, one collapsed
        loop = QEventLoop()
        QTimer.singleShot(800, loop.quit)
        loop.exec()
        window.transcript.scroll_to_bottom()
        loop = QEventLoop()
        QTimer.singleShot(300, loop.quit)
        loop.exec()
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
