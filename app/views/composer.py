"""The message composer: text, attachment chips (thumbnails, PDF page ranges), send/stop."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QImage, QKeyEvent, QPixmap
from PySide6.QtWidgets import (
    QCompleter,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..controllers.attachments import Pending
from ..store import AttachmentKind


def local_paths(mime: QMimeData) -> list[Path]:
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]


class ComposerEdit(QPlainTextEdit):
    """Enter (or ⌘/Ctrl+Enter) sends, Shift+Enter adds a line; pasted images and files become attachments.
    While a completer's popup (the / commands) is open, Enter, Tab and Esc are the popup's."""

    submit = Signal()
    imagePasted = Signal(QImage)
    filesPasted = Signal(list)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.completer: QCompleter | None = None

    def _popup_key(self, event: QKeyEvent) -> bool:
        """A key the open completer popup takes (it picks or closes)."""
        popup = self.completer.popup() if self.completer is not None else None
        return (
            popup is not None
            and popup.isVisible()
            and event.key()
            in (
                Qt.Key.Key_Return,
                Qt.Key.Key_Enter,
                Qt.Key.Key_Tab,
                Qt.Key.Key_Backtab,
                Qt.Key.Key_Escape,
            )
        )

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and self._popup_key(event):
            event.accept()  # Esc closes the popup; it does not also stop an answer
            return True
        # Tab would move the focus (tabChangesFocus) before keyPressEvent sees it.
        if event.type() == QEvent.Type.KeyPress and self._popup_key(event):
            event.ignore()
            return False
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if self._popup_key(event):
            event.ignore()  # the completer takes it
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.textCursor().insertText("\n")
                return
            if not event.modifiers() & Qt.KeyboardModifier.AltModifier:
                self.submit.emit()
                return
        super().keyPressEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return (
            source.hasImage() or bool(local_paths(source)) or super().canInsertFromMimeData(source)
        )

    def insertFromMimeData(self, source: QMimeData) -> None:
        paths = local_paths(source)
        if paths:
            self.filesPasted.emit(paths)
        elif source.hasImage():
            image = source.imageData()
            self.imagePasted.emit(image if isinstance(image, QImage) else QImage(image))
        else:
            super().insertFromMimeData(source)

    def sizeHint(self) -> QSize:
        return QSize(400, 72)


# Plain words, not emoji: the fonts of a fresh Linux desktop often lack them (a missing-glyph box).
KIND_LABEL = {
    AttachmentKind.IMAGE: "Image",
    AttachmentKind.PDF: "PDF",
    AttachmentKind.VIDEO: "Video",
    AttachmentKind.TEXT: "Text",
}


class AttachmentChip(QFrame):
    removeRequested = Signal(int)
    pagesChanged = Signal(int, int, int)  # key, first, last
    clicked = Signal(int)
    locateRequested = Signal(int)

    def __init__(self, pending: Pending, parent: QWidget | None = None):
        super().__init__(parent)
        self.key = pending.key
        self.setObjectName("AttachmentChip")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        top = QHBoxLayout()
        top.setSpacing(4)
        self.thumb = QLabel()
        self.thumb.setFixedSize(64, 64)
        self.thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        top.addWidget(self.thumb)
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove this attachment")
        remove.setAccessibleName("Remove this attachment")
        remove.setAutoRaise(True)
        remove.clicked.connect(lambda: self.removeRequested.emit(self.key))
        top.addWidget(remove, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(top)

        self.caption = QLabel()
        self.caption.setObjectName("Muted")
        self.caption.setMaximumWidth(160)
        layout.addWidget(self.caption)
        self.first = self.last = None
        if pending.kind is AttachmentKind.PDF and pending.stored.page_count:
            pages = QHBoxLayout()
            pages.setSpacing(2)
            self.first, self.last = QSpinBox(), QSpinBox()
            self.first.setAccessibleName("First page to send")
            self.last.setAccessibleName("Last page to send")
            for box in (self.first, self.last):
                box.setRange(1, pending.stored.page_count)
                box.setFixedWidth(52)
            self.first.setValue(pending.stored.first_page)
            self.last.setValue(pending.stored.last_page or pending.stored.page_count)
            self.first.valueChanged.connect(self._pages_changed)
            self.last.valueChanged.connect(self._pages_changed)
            pages.addWidget(QLabel("p."))
            pages.addWidget(self.first)
            pages.addWidget(QLabel("–"))
            pages.addWidget(self.last)
            layout.addLayout(pages)
        self.locate_button = None
        if pending.kind is AttachmentKind.IMAGE:
            self.locate_button = QToolButton()
            self.locate_button.setText("Locate…")
            self.locate_button.setToolTip(
                "Ask where something is in this image: the answer's boxes are drawn on it"
            )
            self.locate_button.setAutoRaise(True)
            self.locate_button.clicked.connect(lambda: self.locateRequested.emit(self.key))
            layout.addWidget(self.locate_button)
        self.update_from(pending)

    def update_from(self, pending: Pending) -> None:
        att = pending.stored
        if pending.thumbnail is not None and not pending.thumbnail.isNull():
            self.thumb.setPixmap(
                QPixmap.fromImage(pending.thumbnail).scaled(
                    64,
                    64,
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
            )
        else:
            self.thumb.setText(KIND_LABEL[att.kind])
        name = att.name if len(att.name) <= 22 else att.name[:20] + "…"
        if att.kind is AttachmentKind.PDF:
            detail = f"{att.page_count} page{'s' if att.page_count != 1 else ''}"
            last = att.last_page or att.page_count
            if att.page_count and (att.first_page, last) != (1, att.page_count):
                detail = f"p. {att.first_page}–{last} of {att.page_count}"
        elif att.kind is AttachmentKind.VIDEO:
            end = att.end_s if att.end_s is not None else att.duration_s or 0
            detail = f"{att.start_s:.0f}–{end:.0f} s · {att.fps:g} fps"
        elif att.kind is AttachmentKind.TEXT:
            detail = f"{pending.lines:,} line{'s' if pending.lines != 1 else ''}"
        else:
            detail = f"{pending.width}×{pending.height}" if pending.width else ""
        self.caption.setText(f"{name}\n{detail}" if detail else name)
        self.setToolTip(f"{att.name}\n{detail}")

    def _pages_changed(self) -> None:
        if self.first.value() > self.last.value():
            self.last.setValue(self.first.value())
        self.pagesChanged.emit(self.key, self.first.value(), self.last.value())

    def mousePressEvent(self, event) -> None:
        self.clicked.emit(self.key)
        super().mousePressEvent(event)


class Composer(QFrame):
    sendRequested = Signal(str)
    stopRequested = Signal()
    attachRequested = Signal()
    imagePasted = Signal(QImage)
    filesDropped = Signal(list)
    removeAttachment = Signal(int)
    pagesChanged = Signal(int, int, int)
    attachmentClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Composer")
        # The window takes every drop (and lights its drop zone); it hands them to dropEvent here.
        self.setAcceptDrops(False)
        self.busy = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 8, 16, 10)
        layout.setSpacing(6)
        self.chips_area = QScrollArea()
        self.chips_area.setWidgetResizable(True)
        self.chips_area.setFrameShape(QFrame.Shape.NoFrame)
        self.chips_area.setFixedHeight(128)
        self.chips_area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        chips_inner = QWidget()
        self.chips = QHBoxLayout(chips_inner)
        self.chips.setContentsMargins(0, 0, 0, 0)
        self.chips.addStretch(1)
        self.chips_area.setWidget(chips_inner)
        self.chips_area.hide()
        layout.addWidget(self.chips_area)
        self.status = QLabel()
        self.status.setObjectName("Muted")
        self.status.hide()
        layout.addWidget(self.status)
        row = QHBoxLayout()
        row.setSpacing(8)
        self.attach_button = QToolButton()
        self.attach_button.setText("+")
        self.attach_button.setToolTip("Attach images, PDFs or videos (or drop / paste them)")
        self.attach_button.setAccessibleName("Attach files")
        self.attach_button.clicked.connect(self.attachRequested)
        # With tool servers, + opens this menu (files, and the servers' resources); without, the picker.
        self.attach_menu = QMenu(self.attach_button)
        self.attach_menu.setAccessibleName("Attach")
        row.addWidget(self.attach_button, 0, Qt.AlignmentFlag.AlignBottom)
        self.edit = ComposerEdit()
        self.edit.setObjectName("ComposerEdit")
        self.edit.setAccessibleName("Message to Qwen")
        self.edit.setPlaceholderText("Message Qwen…  (Enter sends, Shift+Enter adds a line)")
        self.edit.setMaximumHeight(160)
        self.edit.setTabChangesFocus(True)
        self.edit.submit.connect(self._submit)
        self.edit.imagePasted.connect(self.imagePasted)
        self.edit.filesPasted.connect(self.filesDropped)
        self.edit.setAcceptDrops(False)
        self.edit.viewport().setAcceptDrops(False)
        row.addWidget(self.edit, 1)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self._send_or_stop)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        layout.addLayout(row)
        self._chips: dict[int, AttachmentChip] = {}

    def set_attach_menu(self, on: bool) -> None:
        """+ opens ``attach_menu`` (on) or the file picker at once (off)."""
        self.attach_button.setMenu(self.attach_menu if on else None)
        self.attach_button.setPopupMode(
            QToolButton.ToolButtonPopupMode.InstantPopup
            if on
            else QToolButton.ToolButtonPopupMode.DelayedPopup
        )
        self.attach_button.setToolTip(
            "Attach files, or a tool server's resources"
            if on
            else "Attach images, PDFs or videos (or drop / paste them)"
        )

    # --- text ---------------------------------------------------------------------------------
    def text(self) -> str:
        return self.edit.toPlainText()

    def clear_text(self) -> None:
        self.edit.clear()

    def start_locate(self, _key: int = 0) -> None:
        """Fill the message box with a grounding prompt, the cursor where the thing to find goes."""
        from engine_mlx.grounding import LOCATE_PROMPT

        before, after = LOCATE_PROMPT.split("{}")
        self.edit.setPlainText(before + after)
        cursor = self.edit.textCursor()
        cursor.setPosition(len(before))
        self.edit.setTextCursor(cursor)
        self.edit.setFocus()

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.send_button.setText("Stop" if busy else "Send")
        self.send_button.setToolTip("Stop generating (Esc)" if busy else "Send (Enter)")

    def _submit(self) -> None:
        if not self.busy:
            self.sendRequested.emit(self.text())

    def _send_or_stop(self) -> None:
        if self.busy:
            self.stopRequested.emit()
        else:
            self._submit()

    def set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))

    # --- attachments --------------------------------------------------------------------------
    def add_chip(self, pending: Pending) -> None:
        chip = AttachmentChip(pending)
        chip.removeRequested.connect(self.removeAttachment)
        chip.pagesChanged.connect(self.pagesChanged)
        chip.clicked.connect(self.attachmentClicked)
        chip.locateRequested.connect(self.start_locate)
        self.chips.insertWidget(self.chips.count() - 1, chip)
        self._chips[pending.key] = chip
        self.chips_area.show()

    def update_chip(self, pending: Pending) -> None:
        chip = self._chips.get(pending.key)
        if chip:
            chip.update_from(pending)

    def remove_chip(self, key: int) -> None:
        chip = self._chips.pop(key, None)
        if chip:
            chip.setParent(None)
            chip.deleteLater()
        self.chips_area.setVisible(bool(self._chips))

    def clear_chips(self) -> None:
        for key in list(self._chips):
            self.remove_chip(key)

    def chip_count(self) -> int:
        return len(self._chips)

    # --- drops --------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        mime = event.mimeData()
        if local_paths(mime) or mime.hasImage() or mime.hasText():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = local_paths(event.mimeData())
        if paths:
            self.filesDropped.emit(paths)
            event.acceptProposedAction()
        elif event.mimeData().hasImage():
            self.imagePasted.emit(QImage(event.mimeData().imageData()))
            event.acceptProposedAction()
        elif event.mimeData().hasText():  # dragged text goes into the message
            self.edit.insertPlainText(event.mimeData().text())
            self.edit.setFocus()
            event.acceptProposedAction()
