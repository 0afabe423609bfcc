"""A one-line message above the transcript with an optional action and a close button."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget


class Banner(QFrame):
    """A one-line message above the transcript with optional action and a close button."""

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName(name)
        row = QHBoxLayout(self)
        row.setContentsMargins(12, 6, 8, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.label, 1)
        self.action = QPushButton()
        self.action.hide()
        row.addWidget(self.action)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        row.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self._callback = None
        self.action.clicked.connect(self._act)
        self.hide()

    def show_message(self, text: str, action: str = "", callback=None, timeout_ms: int = 0) -> None:
        self.label.setText(text)
        self.action.setText(action)
        self.action.setVisible(bool(action))
        self._callback = callback
        self.show()
        if timeout_ms:
            self._timer.start(timeout_ms)
        else:
            self._timer.stop()

    def _act(self) -> None:
        callback, self._callback = self._callback, None
        self.hide()
        if callback:
            callback()

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() or not self.isHidden() else ""
