"""Stream a long answer through the real transcript widget and measure how the GUI thread copes.

A producer thread emits tokens as queued Qt signals (as the engine worker does) at a fixed rate into a
TranscriptView that already holds a few hundred messages. A 5 ms heartbeat timer on the GUI thread
measures event-loop stalls; the time spent rendering (coalesced flushes of the answer) is summed per
1k tokens to show whether rendering cost grows with the answer's length.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/ui_stream.py            # 20k tokens at 200 tok/s
    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/ui_stream.py --tokens 4000 --rate 400
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QEventLoop, QObject, Qt, QTimer, Signal  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app import theme  # noqa: E402
from app.main import settle_gc  # noqa: E402
from app.store import MessageState, StoredMessage, StoredStats  # noqa: E402
from app.views import answer as answer_module  # noqa: E402
from app.views.transcript import TranscriptView  # noqa: E402

HEARTBEAT_MS = 5

PARAGRAPH = ("The write-ahead log lets readers continue while a writer appends, so the database stays "
             "responsive; a checkpoint later folds the log back into the main file. ")
CODE = "```python\ndef checkpoint(db):\n    for page in db.wal_pages():\n        db.write(page)\n    return db\n```\n\n"
LIST = "- readers never block writers\n- a crash leaves the log to replay\n- $O(n)$ work per $n$ pages\n\n"
MATH = "The cost is $$\\sum_{i=1}^{n} c_i \\leq n \\cdot c_{max}$$\n\n"


def synthetic_tokens(count: int) -> list[str]:
    """Markdown cut into ~4-character tokens: paragraphs, lists, code blocks, math, headings."""
    pieces, i = [], 0
    while sum(len(p) for p in pieces) < count * 4:
        i += 1
        pieces.append(f"## Part {i}\n\n" if i % 7 == 0 else "")
        pieces.append(PARAGRAPH * 2 + "\n\n")
        pieces.append((CODE, LIST, MATH)[i % 3])
    text = "".join(pieces)
    return [text[j:j + 4] for j in range(0, count * 4, 4)]


class Producer(QObject):
    token = Signal(str)
    done = Signal()

    def __init__(self, tokens: list[str], rate: float):
        super().__init__()
        self.tokens, self.rate = tokens, rate

    def run(self) -> None:
        start = time.perf_counter()
        for n, tok in enumerate(self.tokens):
            target = start + n / self.rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.token.emit(tok)
        self.done.emit()


def history(count: int) -> list[StoredMessage]:
    out = []
    for i in range(count):
        role = "user" if i % 2 == 0 else "assistant"
        text = f"Question {i}?" if role == "user" else (PARAGRAPH + "\n\n" + CODE + LIST)
        out.append(StoredMessage(i + 1, "bench", i, role, text, "", MessageState.COMPLETE,
                                 stats=StoredStats(generated_tokens=100, decode_tps=50.0) if role != "user" else None))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=200.0, help="tokens per second")
    parser.add_argument("--history", type=int, default=300, help="messages already in the chat")
    parser.add_argument("--verbose", action="store_true", help="list every stall over 30 ms")
    args = parser.parse_args()

    app = QApplication.instance() or QApplication([])
    colors = theme.apply(app, theme.Scheme.LIGHT)
    view = TranscriptView(colors.markdown)
    view.resize(900, 800)
    view.show()
    view.set_messages(history(args.history))
    # As the app does after its window shows: pay one-time font/lexer costs, let the first paint happen.
    answer_module.warm_up(colors.markdown, background=False)
    settle_gc()
    settle = QEventLoop()
    QTimer.singleShot(500, settle.quit)
    settle.exec()
    streaming = view.append(StoredMessage(10_000, "bench", args.history, "assistant", "", "",
                                          MessageState.STREAMING))
    answer_view = streaming.answer

    # Time every render (the coalesced flush), attributing it to the token count at that moment.
    received = [0]
    per_k: dict[int, float] = {}
    original_flush = answer_module.AnswerView.flush

    def timed_flush(self) -> None:
        t0 = time.perf_counter()
        original_flush(self)
        bucket = received[0] // 1000
        per_k[bucket] = per_k.get(bucket, 0.0) + time.perf_counter() - t0

    answer_module.AnswerView.flush = timed_flush

    tokens = synthetic_tokens(args.tokens)
    producer = Producer(tokens, args.rate)

    def on_token(tok: str) -> None:
        received[0] += 1
        streaming.append_answer(tok)

    producer.token.connect(on_token, Qt.ConnectionType.QueuedConnection)
    loop = QEventLoop()
    producer.done.connect(lambda: QTimer.singleShot(200, loop.quit), Qt.ConnectionType.QueuedConnection)

    gaps: list[float] = []
    last = [time.perf_counter()]

    big: list[tuple[float, int, float]] = []

    def beat() -> None:
        now = time.perf_counter()
        gap = (now - last[0]) * 1000 - HEARTBEAT_MS
        gaps.append(gap)
        if gap > 30:
            big.append((now - t_start, received[0], gap))
        last[0] = now

    heartbeat = QTimer()
    heartbeat.setTimerType(Qt.TimerType.PreciseTimer)
    heartbeat.setInterval(HEARTBEAT_MS)
    heartbeat.timeout.connect(beat)
    t_start = time.perf_counter()
    heartbeat.start()
    thread = threading.Thread(target=producer.run, daemon=True)
    thread.start()
    loop.exec()
    heartbeat.stop()
    streaming.finish(MessageState.COMPLETE, "")
    elapsed = time.perf_counter() - t_start

    stalls = sorted(max(0.0, g) for g in gaps)
    worst = stalls[-1] if stalls else 0.0
    p99 = stalls[int(0.99 * (len(stalls) - 1))] if stalls else 0.0
    buckets = [per_k.get(k, 0.0) * 1000 for k in range(max(per_k) + 1)] if per_k else [0.0]
    first = statistics.mean(buckets[:2])
    last_ms = statistics.mean(buckets[-3:-1] if len(buckets) > 3 else buckets[-1:])
    ok = worst < 50 and last_ms < max(3 * first, first + 20)
    print(f"streamed {received[0]:,} tokens at {args.rate:g} tok/s into a chat of {args.history} messages "
          f"in {elapsed:.1f} s ({len(answer_view.markdown):,} characters)")
    print(f"event-loop stall: worst {worst:.1f} ms, p99 {p99:.1f} ms, median {statistics.median(stalls):.1f} ms "
          f"(target < 50 ms)")
    print(f"render time per 1k tokens: start {first:.1f} ms, end {last_ms:.1f} ms "
          f"(all buckets: {', '.join(f'{b:.0f}' for b in buckets)})")
    if big and args.verbose:
        print("stalls over 30 ms (s, tokens, ms):", ", ".join(f"({t:.1f}, {n}, {g:.0f})" for t, n, g in big))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
