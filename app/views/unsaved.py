"""The question at quit when an answer cannot be written yet (e.g. a full disk): never drop one silently."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

from ..controllers.chat import ChatController


def flush_or_ask(parent: QWidget, chat: ChatController) -> None:
    """Write every answer; while one cannot be written, ask Retry or quit without it."""
    while not chat.flush():
        answer = QMessageBox.warning(
            parent,
            "QwenDesk",
            "An answer is not saved yet: the history database cannot be written "
            "(is the disk full?). Free some space and press Retry, or quit without it.",
            QMessageBox.StandardButton.Retry | QMessageBox.StandardButton.Discard,
            QMessageBox.StandardButton.Retry,
        )
        if answer != QMessageBox.StandardButton.Retry:
            return
