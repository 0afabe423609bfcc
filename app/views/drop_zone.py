"""The highlight over the window while files are dragged over it: "Drop to attach"."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget


class DropZone(QLabel):
    def __init__(self, parent: QWidget):
        super().__init__("Drop to attach", parent)
        self.setObjectName("DropZone")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.setFont(font)
        self.hide()

    def cover(self, widget: QWidget) -> None:
        """Show over ``widget`` (a sibling or the parent's central widget)."""
        self.setGeometry(widget.geometry())
        self.raise_()
        self.show()
