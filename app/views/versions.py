"""The ``< n/m >`` switch on a message that has several versions (regenerated answers, edited messages)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget


class VersionSwitch(QWidget):
    """Shows "n/m" between an older and a newer button; hidden while a message has one version."""

    stepRequested = Signal(int)  # -1: the older version, +1: the newer one

    def __init__(self, version: int, count: int, what: str, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.older = QToolButton()
        self.older.setText("<")
        self.older.setAutoRaise(True)
        self.older.setToolTip(f"Show the previous version of this {what}")
        self.older.setAccessibleName(f"Previous version of this {what}")
        self.older.clicked.connect(lambda: self.stepRequested.emit(-1))
        self.label = QLabel(f"{version}/{count}")
        self.label.setObjectName("Muted")
        self.label.setAccessibleName(f"Version {version} of {count}")
        self.newer = QToolButton()
        self.newer.setText(">")
        self.newer.setAutoRaise(True)
        self.newer.setToolTip(f"Show the next version of this {what}")
        self.newer.setAccessibleName(f"Next version of this {what}")
        self.newer.clicked.connect(lambda: self.stepRequested.emit(1))
        for widget in (self.older, self.label, self.newer):
            layout.addWidget(widget, 0, Qt.AlignmentFlag.AlignVCenter)
        self._version, self._count = version, count
        self.set_enabled(True)
        if count < 2:
            self.hide()  # (never show(): this widget has no parent yet)

    def set_enabled(self, enabled: bool) -> None:
        """Off while an answer streams: the chat on screen must stay the one being answered."""
        self.older.setEnabled(enabled and self._version > 1)
        self.newer.setEnabled(enabled and self._version < self._count)
