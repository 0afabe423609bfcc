"""The one message area above the transcript: the newest message wins (errors, undo, notices never stack).

A *sticky* message (the demo-model notice) stays underneath: it comes back when a newer message is
closed or times out, until it is cleared.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget


@dataclass(frozen=True)
class _Message:
    text: str
    action: str = ""
    callback: object = None
    error: bool = False


class Banner(QFrame):
    """A one-line message with an optional action button and a close button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Banner")
        row = QHBoxLayout(self)
        row.setContentsMargins(12, 6, 8, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.label, 1)
        self.action = QPushButton()
        self.action.setAccessibleName("Act on the message")  # named after its text when shown
        self.action.hide()
        row.addWidget(self.action)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Dismiss")
        self.close_button.setAccessibleName("Dismiss the message")
        self.close_button.setAutoRaise(True)
        self.close_button.clicked.connect(self._closed)
        row.addWidget(self.close_button)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.dismiss)
        self._current: _Message | None = None
        self._sticky: _Message | None = None
        self.action.clicked.connect(self._act)
        self.hide()

    def show_message(
        self,
        text: str,
        action: str = "",
        callback=None,
        timeout_ms: int = 0,
        *,
        error: bool = False,
        sticky: bool = False,
    ) -> None:
        """Replace whatever is shown. ``sticky``: shown again whenever a newer message goes away."""
        message = _Message(text, action, callback, error)
        if sticky:
            self._sticky = message
        self._show(message)
        if timeout_ms and not sticky:
            self._timer.start(timeout_ms)
        else:
            self._timer.stop()

    def show_error(self, text: str, action: str = "", callback=None) -> None:
        self.show_message(text, action, callback, error=True)

    def dismiss(self, *, errors_only: bool = False) -> None:
        """Hide the current message (or only an error); the sticky one, if any, comes back."""
        if self._current is None or (errors_only and not self._current.error):
            return
        self._timer.stop()
        if self._sticky is not None and self._current is not self._sticky:
            self._show(self._sticky)
        else:
            self._current = None
            self.hide()

    def clear_sticky(self) -> None:
        sticky, self._sticky = self._sticky, None
        if sticky is not None and self._current is sticky:
            self._current = None
            self.hide()

    @property
    def is_error(self) -> bool:
        return self._current is not None and self._current.error

    @property
    def text(self) -> str:
        return self.label.text() if self._current is not None else ""

    def _show(self, message: _Message) -> None:
        self._current = message
        self.label.setText(message.text)
        self.action.setText(message.action)
        self.action.setAccessibleName(message.action.replace("&&", "&"))
        self.action.setVisible(bool(message.action))
        name = "ErrorBanner" if message.error else "Banner"
        if self.objectName() != name:
            self.setObjectName(name)
            self.style().unpolish(self)
            self.style().polish(self)
        self.show()

    def _closed(self) -> None:
        if self._current is self._sticky:
            self.clear_sticky()
        else:
            self.dismiss()

    def _act(self) -> None:
        message = self._current
        if message is self._sticky:
            self._sticky = None
        self._current = None
        self.hide()
        if message is not None and message.callback:
            message.callback()
        if self._current is None and self._sticky is not None:
            self._show(self._sticky)
