"""What was sent, opened inside the app: the image (zoomable), the PDF pages sent, the video frames sent,
or the text file. Pages and frames are rendered off the GUI thread."""

from __future__ import annotations

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QImage, QImageReader, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..operations import Operation
from ..sent_ranges import sent_pages, sent_range
from ..store import AttachmentKind, StoredAttachment

PAGE_SIDE = 1100  # a PDF page's longer side as rendered for reading
FRAME_SIDE = 480  # a video frame's
ZOOM_STEP = 1.25
FIT_WIDTH = 840  # an image wider than this opens scaled to it
ZOOM_RANGE = (0.1, 8.0)


def _qimage(rgb) -> QImage:
    """A PIL image or an RGB uint8 array as a QImage (copied: the source may go away)."""
    if hasattr(rgb, "tobytes") and hasattr(rgb, "convert"):
        rgb = rgb.convert("RGB")
        return QImage(
            rgb.tobytes(), rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888
        ).copy()
    height, width = rgb.shape[:2]
    return QImage(rgb.tobytes(), width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def render_pages(att: StoredAttachment) -> list[tuple[str, QImage]]:
    from engine_mlx import media

    first, last = sent_pages(att)
    pages = media.load_pdf_pages(att.path, first, last, max_side=PAGE_SIDE)
    return [(f"Page {first + i}", _qimage(page)) for i, page in enumerate(pages)]


def render_frames(att: StoredAttachment) -> list[tuple[str, QImage]]:
    """The frames the model saw: the same rate and range as sent."""
    from engine_mlx import media

    video = media.sample_video(
        att.path, fps=att.fps, start_s=att.start_s, end_s=att.end_s, max_side=FRAME_SIDE
    )
    return [
        (f"{t:.1f} s", _qimage(frame))
        for t, frame in zip(video.timestamps_s, video.frames, strict=True)
    ]


def describe(att: StoredAttachment) -> str:
    """One line saying what the model was given."""
    if att.kind is AttachmentKind.TEXT:
        return "Sent as text."
    if att.kind is AttachmentKind.IMAGE:
        return "Sent as an image. Zoom with the buttons, Ctrl+wheel, or Ctrl+plus and Ctrl+minus."
    what = "the frames from " if att.kind is AttachmentKind.VIDEO else ""
    return f"Sent {what}{sent_range(att)}."


class AttachmentViewer(QDialog):
    """A modeless window on one sent attachment."""

    def __init__(self, att: StoredAttachment, parent: QWidget | None = None):
        super().__init__(parent)
        self.attachment = att
        self.setWindowTitle(att.name)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.resize(900, 700)
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.summary = QLabel(describe(att))
        self.summary.setObjectName("Muted")
        self.summary.setWordWrap(True)
        top.addWidget(self.summary, 1)
        self.zoom = 1.0
        self.zoom_out = QPushButton("−")
        self.zoom_out.setAccessibleName("Zoom out")
        self.zoom_out.setToolTip("Zoom out (Ctrl+minus)")
        self.zoom_in = QPushButton("+")
        self.zoom_in.setAccessibleName("Zoom in")
        self.zoom_in.setToolTip("Zoom in (Ctrl+plus)")
        self.zoom_fit = QPushButton("Actual size")
        self.zoom_fit.setToolTip("Show at 100 %")
        self.zoom_label = QLabel("100 %")
        for widget in (self.zoom_out, self.zoom_label, self.zoom_in, self.zoom_fit):
            top.addWidget(widget)
        self.zoom_out.clicked.connect(lambda: self.set_zoom(self.zoom / ZOOM_STEP))
        self.zoom_in.clicked.connect(lambda: self.set_zoom(self.zoom * ZOOM_STEP))
        self.zoom_fit.clicked.connect(lambda: self.set_zoom(1.0))
        QShortcut(
            QKeySequence.StandardKey.ZoomIn, self, lambda: self.set_zoom(self.zoom * ZOOM_STEP)
        )
        QShortcut(QKeySequence("Ctrl+="), self, lambda: self.set_zoom(self.zoom * ZOOM_STEP))
        QShortcut(
            QKeySequence.StandardKey.ZoomOut, self, lambda: self.set_zoom(self.zoom / ZOOM_STEP)
        )
        layout.addLayout(top)
        self.images: list[QImage] = []  # at full size; the labels show them at self.zoom
        self.pictures: list[QLabel] = []
        self.captions: list[str] = []
        self.text: QPlainTextEdit | None = None
        self._task = None
        if att.kind is AttachmentKind.TEXT:
            self._build_text(layout)
            return
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.viewport().installEventFilter(self)
        inner = QWidget()
        self.grid = QGridLayout(inner)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
        self.scroll.setWidget(inner)
        layout.addWidget(self.scroll, 1)
        if not att.path.exists():
            self._failed(FileNotFoundError("the file is no longer in the QwenDesk data folder"))
        elif att.kind is AttachmentKind.IMAGE:
            reader = QImageReader(str(att.path))
            reader.setAutoTransform(True)
            image = reader.read()
            if image.isNull():
                self._failed(ValueError(reader.errorString()))
            else:
                self._show([("", image)])
        else:
            self.summary.setText(describe(att) + " Rendering…")
            render = render_pages if att.kind is AttachmentKind.PDF else render_frames
            self._task = (
                Operation(
                    self, lambda _ctx: render(att), self._rendered, label="Rendering the attachment"
                )
                .failure(self._failed)
                .run_in_background()
            )

    def _build_text(self, layout: QVBoxLayout) -> None:
        from engine_mlx.text_files import load_text

        for widget in (self.zoom_out, self.zoom_in, self.zoom_fit, self.zoom_label):
            widget.hide()
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setAccessibleName(f"Contents of {self.attachment.name}")
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        try:
            self.text.setPlainText(load_text(self.attachment.path))
        except Exception as error:  # a MediaError (unreadable, too large) or an OSError (missing)
            self.summary.setText(f"{self.attachment.name} cannot be shown: {error}")
        layout.addWidget(self.text, 1)

    def _rendered(self, items: list[tuple[str, QImage]]) -> None:
        if shiboken6.isValid(self):
            self.summary.setText(describe(self.attachment))
            self._show(items)

    def _failed(self, error: Exception) -> None:
        if shiboken6.isValid(self):
            self.summary.setText(f"{self.attachment.name} cannot be shown: {error}")

    def _show(self, items: list[tuple[str, QImage]]) -> None:
        columns = 1 if self.attachment.kind is not AttachmentKind.VIDEO else 3
        for index, (caption, image) in enumerate(items):
            cell = QVBoxLayout()
            picture = QLabel()
            picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
            cell.addWidget(picture)
            if caption:
                label = QLabel(caption)
                label.setObjectName("Muted")
                label.setAlignment(Qt.AlignmentFlag.AlignCenter)
                cell.addWidget(label)
            self.grid.addLayout(cell, index // columns, index % columns)
            self.images.append(image)
            self.pictures.append(picture)
            self.captions.append(caption)
        if (
            self.attachment.kind is AttachmentKind.IMAGE and items
        ):  # a big photo opens fitted to the window
            self.zoom = min(1.0, FIT_WIDTH / max(1, items[0][1].width()))
        self.set_zoom(self.zoom)

    def set_zoom(self, zoom: float) -> None:
        self.zoom = min(max(zoom, ZOOM_RANGE[0]), ZOOM_RANGE[1])
        self.zoom_label.setText(f"{round(self.zoom * 100)} %")
        for image, picture in zip(self.images, self.pictures, strict=True):
            size = image.size() * self.zoom
            picture.setPixmap(
                QPixmap.fromImage(image).scaled(
                    size,
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
            )

    def eventFilter(self, watched, event) -> bool:
        from PySide6.QtCore import QEvent

        if (
            event.type() == QEvent.Type.Wheel
            and event.modifiers() & Qt.KeyboardModifier.ControlModifier
        ):
            self.set_zoom(self.zoom * (ZOOM_STEP if event.angleDelta().y() > 0 else 1 / ZOOM_STEP))
            return True
        return super().eventFilter(watched, event)


def open_attachment(att: StoredAttachment, parent: QWidget | None) -> AttachmentViewer:
    viewer = AttachmentViewer(att, parent)
    viewer.show()
    viewer.raise_()
    return viewer
