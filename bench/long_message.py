"""A very long message in the transcript: how long the window freezes when its chat opens.

The real ``MainWindow`` (real SQLite store, ``ChatController``, transcript and message views) opens a chat
whose user message is a pasted text of ``--chars`` characters (255,000 by default, just under the send limit)
followed by an answer of the same length, then a baseline chat of the same shape whose messages are 2,000
characters. A 5 ms heartbeat timer on the GUI thread measures the worst event-loop stall from the click
on the chat until everything is shown; then "Show all" is clicked on the long user message and on the long
answer, and the stall of laying out the whole text (what the user asked for) is measured the same way.

Goal: opening the long chat stalls the window under 5 × the baseline chat (it used to take ~2 s).
Run: QT_QPA_PLATFORM=offscreen .venv/bin/python bench/long_message.py [--chars 255000] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEARTBEAT_MS = 5
BASELINE_CHARS = 2_000
GOAL_RATIO = 5.0
LINE = "The write-ahead log lets readers continue while a writer appends, so the database stays responsive. "


def pasted(chars: int) -> str:
    """Log-like pasted text: lines of words, a blank line now and then."""
    lines, size, i = [], 0, 0
    while size < chars:
        i += 1
        line = f"{i:6d}  " + LINE * (1 + i % 3) + ("\n" if i % 9 == 0 else "")
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:chars]


def worst_stall(app, action, done) -> float:
    """Run ``action``, then the event loop until ``done()``; the longest the GUI thread was blocked (ms)."""
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    last, worst = [time.perf_counter()], [0.0]

    def beat() -> None:
        now = time.perf_counter()
        worst[0] = max(worst[0], (now - last[0]) * 1000 - HEARTBEAT_MS)
        last[0] = now

    heartbeat = QTimer()
    heartbeat.setTimerType(Qt.TimerType.PreciseTimer)
    heartbeat.setInterval(HEARTBEAT_MS)
    heartbeat.timeout.connect(beat)
    heartbeat.start()
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(20)
    deadline = time.monotonic() + 120

    def check() -> None:
        if done():
            poll.stop()
            QTimer.singleShot(200, loop.quit)  # then 200 ms of settling
        elif time.monotonic() > deadline:
            loop.quit()

    poll.timeout.connect(check)
    last[0] = time.perf_counter()
    action()  # the click, as the event it is: inside the timed loop
    poll.start()
    loop.exec()
    poll.stop()
    heartbeat.stop()
    if not done():
        raise TimeoutError("the window did not show the result within 120 s")
    beat()
    return max(worst[0], 0.0)


def one_run(app, chars: int) -> dict[str, float]:
    from app.paths import app_paths
    from app.window import MainWindow

    window = MainWindow(
        app_paths(Path(tempfile.mkdtemp(prefix="long-message-"))), reload_last=False
    )
    window.resize(1280, 860)
    window.show()
    chats = {}
    for label, size in (("baseline", BASELINE_CHARS), ("long", chars)):
        cid = window.store.create_conversation(f"{label} chat")
        window.store.add_message(cid, "user", pasted(size))
        window.store.add_message(cid, "assistant", pasted(size))
        chats[label] = cid
    window.refresh_conversations()
    app.processEvents()
    out = {}
    for label in ("long", "baseline", "long"):  # each chat opened after the other one
        cid = chats[label]

        def shown(cid=cid) -> bool:
            widgets = window.transcript.widgets
            return (
                window.chat.current_id == cid
                and len(widgets) == 2
                and all(w.isVisible() for w in widgets)
            )

        ms = worst_stall(app, lambda cid=cid: window.chat.open(cid), shown)
        out[label] = min(out.get(label, ms), ms)
    user, answer = window.transcript.widgets
    for label, widget in (("show all user", user), ("show all answer", answer)):
        # getattr: also measures a build from before it
        button = getattr(widget, "show_all_button", None)
        if button is None:
            out[label] = 0.0
            continue
        out[label] = worst_stall(app, button.click, lambda b=button: not b.isVisible())
    full = getattr(user, "full_text", None)
    shown_answer = getattr(answer.answer, "shown_chars", len(answer.answer.markdown))
    out["shown"] = float(
        len(full.toPlainText() if full is not None else user.text_label.text()) + shown_answer
    )
    window.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=255_000, help="the long message's length")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--quick", action="store_true", help="one run of a 40k message: CI checks it runs"
    )
    args = ap.parse_args()
    if args.quick:
        args.chars, args.runs = 40_000, 1

    from PySide6.QtWidgets import QApplication

    from app import theme

    app = QApplication.instance() or QApplication([])
    theme.apply(app, theme.Scheme.LIGHT)
    runs = [one_run(app, args.chars) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    ratio = med["long"] / max(med["baseline"], 1.0)
    print(
        f"a chat with a {args.chars:,}-character user message and answer vs one of {BASELINE_CHARS:,} "
        f"(median of {args.runs} runs; worst event-loop stall)"
    )
    print(f"  open the baseline chat         {med['baseline']:8.1f} ms")
    print(
        f"  open the long chat             {med['long']:8.1f} ms   ratio {ratio:.2f}  (goal <= {GOAL_RATIO:g})"
    )
    print(f"  'Show all' on the user message {med['show all user']:8.1f} ms")
    print(f"  'Show all' on the answer       {med['show all answer']:8.1f} ms")
    print(f"  characters shown after 'Show all': {int(med['shown']):,} of {2 * args.chars:,}")
    return 0 if ratio <= GOAL_RATIO or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
