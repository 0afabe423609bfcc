"""Very long messages in the transcript: shown elided, with "Show all" for the whole text.

Qt lays a word-wrapped QLabel out at ~10 µs a character and a rich-text answer at ~2 µs, all at once on
the GUI thread: a 255,000-character paste froze the window for 2 s whenever its chat opened. So a message
is shown up to a line end near its first ``USER_SHOWN_CHARS`` (an answer: the Markdown blocks within its
first ``ANSWER_SHOWN_CHARS``), and "Show all" puts the whole of a user message in a read-only
plain-text box, which lays out only the lines in view (bench/long_message.py measures both).
"""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QPlainTextEdit

USER_SHOWN_CHARS = 4_000
ANSWER_SHOWN_CHARS = 40_000
FULL_TEXT_HEIGHT = 480  # the whole text scrolls inside a box this tall, not the transcript


def elide(text: str, limit: int) -> str:
    """``text`` up to its last line end within ``limit`` characters (else cut at ``limit``); whole if short."""
    if len(text) <= limit:
        return text
    end = text.rfind("\n", 0, limit)
    return text[:end] if end > 0 else text[:limit]


def shown_note(shown: int, total: int) -> str:
    return f"Showing the first {shown:,} of {total:,} characters."


def full_text_view(text: str) -> QPlainTextEdit:
    """The whole text, read-only and selectable, scrolling in a box of its own."""
    view = QPlainTextEdit()
    view.setObjectName("FullText")
    view.setReadOnly(True)
    view.setFrameShape(QFrame.Shape.NoFrame)
    # the bubble's colour shows
    view.setStyleSheet("QPlainTextEdit#FullText { background: transparent; }")
    view.setPlainText(text)
    view.setMinimumWidth(520)
    view.setFixedHeight(FULL_TEXT_HEIGHT)
    return view
