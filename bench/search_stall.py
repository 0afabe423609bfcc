"""Sidebar search over a big history: how long the GUI thread is blocked.

Builds a history of N messages (real SQLite file, FTS5), then for each query prints
  - the time ``Store.search`` takes (what the GUI thread used to spend per keystroke), and
  - through ``ChatController.search`` (run on a pool thread): the time the call blocks the GUI thread,
    the worst event-loop stall while the hits come in (a 5 ms heartbeat), and the time to the hits.
Run: .venv/bin/python bench/search_stall.py [--messages 100000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu model memory cache token"
).split()


def build(path: Path, messages: int) -> None:
    from app.store import Store

    store = Store(path / "db.sqlite3", path / "attachments")
    rng = random.Random(0)
    store._db.execute("BEGIN")
    cid = None
    for i in range(messages):
        if i % 50 == 0:
            cid = store.create_conversation(f"chat {i // 50} " + rng.choice(WORDS))
        text = " ".join(rng.choice(WORDS) for _ in range(40))
        store._db.execute(
            "INSERT INTO messages(conversation_id, position, role, text, created_at) VALUES(?,?,?,?,?)",
            (cid, i % 50, "user" if i % 2 == 0 else "assistant", text, time.time()),
        )
    store._db.execute("COMMIT")
    store.close()


def through_controller(chat, query: str) -> tuple[float, float, float, list]:
    """ChatController.search as the sidebar calls it: (ms the call blocks, worst stall ms, ms to hits, hits)."""
    from PySide6.QtCore import QEventLoop, QTimer

    got: list = []
    loop = QEventLoop()
    chat.searchFinished.connect(lambda _q, hits: (got.extend(hits), loop.quit()))
    last = [time.perf_counter()]
    worst = [0.0]

    def beat() -> None:
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(beat)
    timer.start(5)
    t0 = time.perf_counter()
    chat.search(query)
    call_ms = (time.perf_counter() - t0) * 1000
    last[0] = time.perf_counter()
    loop.exec()
    total_ms = (time.perf_counter() - t0) * 1000
    timer.stop()
    chat.searchFinished.disconnect()
    return call_ms, worst[0] * 1000, total_ms, got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: CI checks it runs (figures not meaningful)",
    )
    args = ap.parse_args()
    if args.quick:
        args.messages = 2_000
    from PySide6.QtWidgets import QApplication

    from app.controllers.chat import ChatController
    from app.store import Store
    from app.workers import EngineClient

    app = QApplication.instance() or QApplication([])
    folder = Path(tempfile.mkdtemp(prefix="qwendesk-search-"))
    started = time.perf_counter()
    build(folder, args.messages)
    print(f"history: {args.messages:,} messages in {time.perf_counter() - started:.1f} s")
    store = Store(folder / "db.sqlite3", folder / "attachments")
    # the real handle: the controller connects its signals; search never reaches it
    engine = EngineClient()
    chat = ChatController(store, engine)
    for query in ("a", "m", "mo", "model", "zulu cache"):
        t0 = time.perf_counter()
        hits = store.search(query)
        sync_ms = (time.perf_counter() - t0) * 1000
        call_ms, worst_ms, total_ms, got = through_controller(chat, query)
        print(
            f"{query!r:14} on the GUI thread before: {sync_ms:6.1f} ms ({len(hits)} hits) | now: call "
            f"{call_ms:5.2f} ms, worst stall {worst_ms:5.1f} ms, hits after {total_ms:6.1f} ms "
            f"({len(got)} hits)"
        )
    store.close()
    engine.shutdown()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
