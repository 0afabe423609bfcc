"""The attachments presenter: the file picker, the composer's chips and the video pane, fed by the
attachments controller (validation and copying happen there, off the GUI thread)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from engine_mlx.media import AttachmentKind

from ..controllers.attachments import Pending

if TYPE_CHECKING:
    from ..window import MainWindow


def attach_filter() -> str:
    """The file dialog's filter: exactly the suffixes the engine accepts (one list, in engine_mlx.media)."""
    from engine_mlx import media

    def patterns(suffixes: Iterable[str]) -> str:
        return " ".join(f"*{s}" for s in sorted(suffixes))

    return ";;".join(
        [
            f"Everything QwenDesk can attach ({patterns(media.ATTACHABLE_SUFFIXES)})",
            f"Images, PDFs and videos ({patterns(media.IMAGE_SUFFIXES | media.PDF_SUFFIXES | media.VIDEO_SUFFIXES)})",
            f"Text and code files ({patterns(media.TEXT_SUFFIXES)})",
        ]
    )


class AttachmentsPresenter(QObject):
    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.attachments = a = window.attachments
        self.composer = composer = window.composer
        self.video_pane = window.video_pane
        composer.attachRequested.connect(self.pick_files)
        composer.imagePasted.connect(a.add_image)
        composer.filesDropped.connect(a.add_paths)
        composer.removeAttachment.connect(a.remove)
        composer.pagesChanged.connect(
            lambda key, first, last: a.update(key, first_page=first, last_page=last)
        )
        composer.attachmentClicked.connect(self._clicked)
        a.added.connect(self._added)
        a.changed.connect(composer.update_chip)
        a.removed.connect(self._removed)
        a.cleared.connect(composer.clear_chips)
        a.busyChanged.connect(
            lambda busy: composer.set_status("Preparing attachment…" if busy else "")
        )
        self.video_pane.rangeChanged.connect(
            lambda key, s, e, fps: a.update(key, start_s=s, end_s=e, fps=fps)
        )

    def pick_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self.window,
            "Attach images, PDFs, videos or text files",
            str(Path.home()),
            attach_filter(),
        )
        if files:
            self.attachments.add_paths([Path(f) for f in files])

    def _added(self, pending: Pending) -> None:
        self.composer.add_chip(pending)
        if pending.kind is AttachmentKind.VIDEO:
            self.video_pane.open(pending)

    def _removed(self, key: int) -> None:
        self.composer.remove_chip(key)
        if self.video_pane.key == key:
            self.video_pane.cancel()
            self.video_pane.hide()

    def _clicked(self, key: int) -> None:
        pending = self.attachments.get(key)
        if pending is not None and pending.kind is AttachmentKind.VIDEO:
            self.video_pane.open(pending)
