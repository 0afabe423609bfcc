"""The collapsible thinking trace of one assistant message."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QPlainTextEdit, QSizePolicy, QToolButton, QVBoxLayout, QWidget

MAX_BODY_HEIGHT = 180
FLUSH_MS = 50


def thought_label(seconds: float | None, tokens: int | None) -> str:
    parts = []
    if seconds is not None:
        parts.append(f"Thought for {seconds:.1f} s")
    else:
        parts.append("Thought")
    if tokens:
        parts.append(f"{tokens:,} tokens")
    return " · ".join(parts)


class ThinkingBlock(QWidget):
    """Live: "Thinking… 3.2 s" with an auto-scrolling, height-capped trace. Done: a collapsed summary."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.live = False
        self.seconds: float | None = None
        self.tokens: int | None = None
        self._started = 0.0
        self._pending: list[str] = []
        self._static_text = ""
        self.header = QToolButton(self)
        self.header.setObjectName("ThinkingHeader")
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setArrowType(Qt.ArrowType.RightArrow)
        self.header.setCursor(Qt.CursorShape.PointingHandCursor)
        self.header.setAutoRaise(True)
        # View ▸ Show thinking (Ctrl+T) toggles it
        self.header.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.header.setAccessibleName("Show or hide the thinking")
        self.header.clicked.connect(self.toggle)
        self.body = QPlainTextEdit(self)
        self.body.setObjectName("ThinkingBody")
        self.body.setReadOnly(True)
        self.body.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.body.setAccessibleName("Thinking")
        self.body.setFixedHeight(40)
        self.body.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.body.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.body.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.setSpacing(2)
        layout.addWidget(self.header, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.body)
        self._timer = QTimer(self)
        self._timer.setInterval(FLUSH_MS)
        self._timer.timeout.connect(self._tick)

    # --- states -------------------------------------------------------------------------------
    def start(self, already_s: float = 0.0) -> None:
        """Go live; ``already_s`` is the thinking time of an answer being continued."""
        self.live = True
        self._started = time.monotonic() - already_s
        self.body.show()
        self.header.setArrowType(Qt.ArrowType.DownArrow)
        self.header.setText("Thinking… 0.0 s")
        self._timer.start()
        self.show()

    def append(self, text: str) -> None:
        if not self.live:
            self.start()
        self._pending.append(text)

    def finish(self, seconds: float | None = None) -> None:
        """The answer started (or the message ended): collapse to a summary line."""
        if seconds is None and self.live:
            seconds = time.monotonic() - self._started
        self._flush()
        self._timer.stop()
        self.live = False
        self.seconds = seconds
        self.set_expanded(False)
        self._update_header()

    def set_tokens(self, tokens: int) -> None:
        self.tokens = tokens or None
        if not self.live:
            self._update_header()

    def set_static(self, text: str, seconds: float | None, tokens: int | None) -> None:
        """A stored message: collapsed, text loaded only when first expanded (cheap for long histories)."""
        self._static_text = text
        self.seconds, self.tokens = seconds, tokens
        self.live = False
        self.set_expanded(False)
        self._update_header()

    # --- display ------------------------------------------------------------------------------
    @property
    def expanded(self) -> bool:
        return not self.body.isHidden()

    def text(self) -> str:
        if self.body.document().isEmpty() and not self._pending:
            return self._static_text
        return self.body.toPlainText() + "".join(self._pending)

    def toggle(self) -> None:
        self.set_expanded(not self.expanded)

    def set_expanded(self, expanded: bool) -> None:
        if expanded and self.body.document().isEmpty() and self._static_text:
            self.body.setPlainText(self._static_text)
        self.body.setVisible(expanded)
        if expanded:
            self._fit_body()
        self.header.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)

    def _update_header(self) -> None:
        if self.live:
            self.header.setText(f"Thinking… {time.monotonic() - self._started:.1f} s")
        else:
            self.header.setText(thought_label(self.seconds, self.tokens))

    def _tick(self) -> None:
        self._flush()
        self._update_header()

    def _flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        bar = self.body.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        cursor = QTextCursor(self.body.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        self._fit_body()
        if at_bottom:
            bar.setValue(bar.maximum())

    def _fit_body(self) -> None:
        """As tall as the text, up to MAX_BODY_HEIGHT; then it scrolls."""
        lines = self.body.document().documentLayout().documentSize().height()  # visual lines
        spacing = self.body.fontMetrics().lineSpacing()
        wanted = int(lines * spacing + 2 * self.body.document().documentMargin() + 6)
        height = max(spacing + 12, min(MAX_BODY_HEIGHT, wanted))
        if height != self.body.height():
            self.body.setFixedHeight(height)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.expanded:
            self._fit_body()
