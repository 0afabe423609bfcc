"""Files handed to the app by the system: macOS Dock drops and "Open With" (QFileOpenEvent), and
paths given on the command line. Both end up as attachments in the composer, like a drop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QObject


class FileOpenRouter(QObject):
    """An application event filter that forwards opened files to a target.

    macOS may deliver a FileOpen event before the window exists (the app was launched by the drop),
    so paths wait until :meth:`set_target` is called.
    """

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._target: Callable[[list[Path]], None] | None = None
        self._pending: list[Path] = []

    def set_target(self, target: Callable[[list[Path]], None]) -> None:
        self._target = target
        self.open_paths([])

    def open_paths(self, paths: list[Path | str]) -> None:
        self._pending.extend(Path(p) for p in paths)
        if self._target is not None and self._pending:
            pending, self._pending = self._pending, []
            self._target(pending)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.FileOpen:
            path = event.file()
            if path:
                self.open_paths([path])
                return True
        return super().eventFilter(watched, event)
