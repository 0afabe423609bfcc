"""Grounding overlays: the boxes and points an answer names, drawn on the image it is about.

The engine parses and maps (``engine_mlx.grounding``); this module only paints, so the app shows the
same pixels as ``python -m engine_mlx boxes``. Images are numbered as the model numbers them: the
chat's images and PDF pages, in order (videos are not images here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QImage, QImageReader, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from engine_mlx import grounding
from engine_mlx.grounding import Shape, ShapeKind

from ..store import AttachmentKind, StoredAttachment, StoredMessage

PANEL_WIDTH = 480  # the overlay image under an answer, at most this wide
HIT_SLOP = 6  # pixels around a point or a box edge that count as hovering it


@dataclass(frozen=True)
class GroundingImage:
    """Image ``number`` of a chat (an attached image, or one page of an attached PDF), or the frame at
    ``time_s`` of video ``number``."""

    number: int
    attachment: StoredAttachment
    page: int | None = None
    time_s: float | None = None  # a video's frame

    @property
    def is_video(self) -> bool:
        return self.attachment.kind is AttachmentKind.VIDEO

    @property
    def title(self) -> str:
        if self.is_video:
            return f"video {self.number} ({self.attachment.name}) at {self.time_s or 0:.1f} s"
        page = f", page {self.page}" if self.page is not None else ""
        return f"image {self.number} ({self.attachment.name}{page})"

    def load(self) -> QImage:
        """The image as the user sees it: upright (EXIF applied); a PDF page rendered as sent; a video's
        frame at its moment, at the video's own size (rotation applied). A null image if it cannot be read."""
        from engine_mlx.errors import MediaError

        if self.page is None and not self.is_video:
            reader = QImageReader(str(self.attachment.path))
            reader.setAutoTransform(True)
            return reader.read()
        try:
            if self.is_video:
                from engine_mlx.media import probe_video, sample_video

                info = probe_video(self.attachment.path)
                start = min(self.time_s or 0.0, max(0.0, info.duration_s - 0.05))
                frames = sample_video(
                    self.attachment.path,
                    fps=1.0,
                    start_s=start,
                    end_s=start + 0.05,
                    max_side=max(info.width, info.height),
                ).frames
                if not frames:
                    return QImage()
                f = frames[0]
                return QImage(
                    f.tobytes(), f.shape[1], f.shape[0], 3 * f.shape[1], QImage.Format.Format_RGB888
                ).copy()
            from engine_mlx.media import load_pdf_pages

            page = load_pdf_pages(self.attachment.path, self.page, self.page)[0]
        except MediaError:
            return QImage()
        return QImage(
            page.tobytes(), page.width, page.height, 3 * page.width, QImage.Format.Format_RGB888
        ).copy()


def chat_images(messages: Sequence[StoredMessage]) -> list[GroundingImage]:
    """The images of ``messages`` (user messages' attachments), numbered 1, 2, … in order."""
    out: list[GroundingImage] = []
    for message in messages:
        for att in message.attachments:
            if att.kind is AttachmentKind.IMAGE:
                out.append(GroundingImage(len(out) + 1, att))
            elif att.kind is AttachmentKind.PDF:
                last = att.last_page or att.page_count or att.first_page
                out.extend(
                    GroundingImage(len(out) + 1, att, page)
                    for page in range(att.first_page, last + 1)
                )
    return out


def chat_videos(messages: Sequence[StoredMessage]) -> list[StoredAttachment]:
    """The videos of ``messages``, in order (video n is the n-th)."""
    return [
        att
        for message in messages
        for att in message.attachments
        if att.kind is AttachmentKind.VIDEO
    ]


def group_by_image(
    shapes: Sequence[Shape],
    images: Sequence[GroundingImage],
    turn_text: str,
    videos: Sequence[StoredAttachment] = (),
) -> list[tuple[GroundingImage, list[Shape]]]:
    """The shapes on each image or video frame they fall on: images in order, then frames (nothing
    when the chat has neither)."""
    groups: dict[tuple[int, int, float], list[Shape]] = {}  # (0 image | 1 video, number, moment)
    for shape in shapes:
        video = grounding.choose_video(shape, videos=len(videos), images=len(images))
        if video is not None:
            moment = shape.time_s if shape.time_s is not None else videos[video - 1].start_s
            groups.setdefault((1, video, moment), []).append(shape)
        elif images:
            number = grounding.choose_image(
                shape, default=len(images), count=len(images), turn_text=turn_text
            )
            groups.setdefault((0, number, 0.0), []).append(shape)
    return [
        (
            images[n - 1] if kind == 0 else GroundingImage(n, videos[n - 1], time_s=moment),
            groups[kind, n, moment],
        )
        for kind, n, moment in sorted(groups)
    ]


def chip_text(shapes: Sequence[Shape], image: GroundingImage) -> str:
    boxes = sum(s.kind is ShapeKind.BOX for s in shapes)
    points = len(shapes) - boxes
    parts = [
        f"{n} {word}{'es' if word == 'box' and n != 1 else 's' if n != 1 else ''}"
        for n, word in ((boxes, "box"), (points, "point"))
        if n
    ]
    where = (
        f"video {image.number} at {image.time_s or 0:.1f} s"
        if image.is_video
        else f"image {image.number}"
    )
    return f"{' and '.join(parts)} on {where}"


def coordinates_text(shape: Shape, width: int, height: int) -> str:
    """What a click copies: ``x,y`` or ``x1,y1,x2,y2`` in the image's pixels."""
    return ",".join(map(str, shape.pixels(width, height)))


class OverlayImage(QWidget):
    """An image scaled to fit, with its shapes painted over it. Hover names a shape and its pixels; a
    click copies them."""

    copied = Signal(str)

    def __init__(
        self,
        image: QImage,
        shapes: Sequence[Shape],
        max_width: int = PANEL_WIDTH,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.image = image
        self.shapes = list(shapes)
        self.colours = {
            label: QColor(*rgb) for label, rgb in grounding.label_colours(self.shapes).items()
        }
        self.overlays_visible = True
        self.setMouseTracking(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.set_scale(min(1.0, max_width / max(1, image.width())))
        self.setAccessibleName(f"Image with {len(self.shapes)} marked regions")

    def set_scale(self, scale: float) -> None:
        self.scale = scale
        self.setFixedSize(
            QSize(
                max(1, round(self.image.width() * scale)),
                max(1, round(self.image.height() * scale)),
            )
        )
        self.update()

    def set_overlays_visible(self, visible: bool) -> None:
        self.overlays_visible = visible
        self.update()

    def widget_point(self, x: float, y: float) -> QPointF:
        """Where image pixel (x, y) is on this widget."""
        return QPointF(x * self.scale, y * self.scale)

    def shape_at(self, pos: QPointF) -> Shape | None:
        """The shape under a widget position: a point's crosshair, else the smallest box around it."""
        w, h = self.image.width(), self.image.height()
        slop = HIT_SLOP
        best, best_area = None, float("inf")
        for shape in self.shapes:
            px = [v * self.scale for v in shape.pixels(w, h)]
            if shape.kind is ShapeKind.POINT:
                if abs(pos.x() - px[0]) <= slop and abs(pos.y() - px[1]) <= slop:
                    return shape
                continue
            rect = QRectF(px[0], px[1], px[2] - px[0], px[3] - px[1]).adjusted(
                -slop, -slop, slop, slop
            )
            area = rect.width() * rect.height()
            if rect.contains(pos) and area < best_area:
                best, best_area = shape, area
        return best

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(self.rect(), self.image)
        if not self.overlays_visible:
            return
        w, h = self.image.width(), self.image.height()
        for shape in self.shapes:
            colour = self.colours[shape.label]
            painter.setPen(QPen(colour, 2))
            px = shape.pixels(w, h)
            metrics = painter.fontMetrics()
            if shape.kind is ShapeKind.BOX:
                top_left, bottom_right = (
                    self.widget_point(px[0], px[1]),
                    self.widget_point(px[2], px[3]),
                )
                painter.drawRect(QRectF(top_left, bottom_right))
                tab_h = metrics.height() + 2  # the label sits above the box where there is room
                anchor = QPointF(
                    top_left.x(), top_left.y() - tab_h if top_left.y() >= tab_h else top_left.y()
                )
            else:
                c = self.widget_point(px[0], px[1])
                painter.drawLine(QPointF(c.x() - 8, c.y()), QPointF(c.x() + 8, c.y()))
                painter.drawLine(QPointF(c.x(), c.y() - 8), QPointF(c.x(), c.y() + 8))
                anchor = QPointF(c.x() + 8, c.y() - 14)
            if shape.label:
                tab = QRectF(
                    anchor.x(),
                    anchor.y(),
                    metrics.horizontalAdvance(shape.label) + 6,
                    metrics.height() + 2,
                )
                painter.fillRect(tab, colour)
                painter.setPen(QColor("white"))
                painter.drawText(tab, Qt.AlignmentFlag.AlignCenter, shape.label)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        shape = self.shape_at(event.position()) if self.overlays_visible else None
        if shape is None:
            QToolTip.hideText()
            self.setToolTip("")
            return
        tip = f"{shape.label or shape.kind.value}: {coordinates_text(shape, self.image.width(), self.image.height())}"
        self.setToolTip(tip + " (click to copy)")
        QToolTip.showText(event.globalPosition().toPoint(), self.toolTip(), self)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        shape = self.shape_at(event.position()) if self.overlays_visible else None
        if shape is None or event.button() is not Qt.MouseButton.LeftButton:
            super().mousePressEvent(event)
            return
        text = coordinates_text(shape, self.image.width(), self.image.height())
        QGuiApplication.clipboard().setText(text)
        self.copied.emit(text)

    def annotated(self, path: Path) -> None:
        """Write a copy of the full-size image with the shapes drawn (the engine's drawing, as the CLI)."""
        from PIL import Image

        rgb = self.image.convertToFormat(QImage.Format.Format_RGB888)
        data = bytes(rgb.constBits())[: rgb.bytesPerLine() * rgb.height()]
        pil = Image.frombuffer(
            "RGB", (rgb.width(), rgb.height()), data, "raw", "RGB", rgb.bytesPerLine(), 1
        )
        grounding.draw(pil, self.shapes).save(path, format="PNG")


class ZoomDialog(QDialog):
    """A larger, zoomable view of an overlay image, with "Save annotated image…"."""

    ZOOMS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)

    def __init__(
        self,
        image: QImage,
        shapes: Sequence[Shape],
        title: str,
        parent: QWidget | None = None,
        overlays_visible: bool = True,
    ):
        super().__init__(parent)
        self.setWindowTitle(f"Boxes on {title}")
        self.view = OverlayImage(image, shapes, max_width=image.width())
        self.view.set_overlays_visible(overlays_visible)
        scroll = QScrollArea()
        scroll.setWidget(self.view)
        scroll.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.zoom_out = QPushButton("−")
        self.zoom_out.setAccessibleName("Zoom out")
        self.zoom_in = QPushButton("+")
        self.zoom_in.setAccessibleName("Zoom in")
        self.zoom_label = QLabel()
        self.save_button = QPushButton("Save annotated image…")
        self.zoom_out.clicked.connect(lambda: self._step(-1))
        self.zoom_in.clicked.connect(lambda: self._step(1))
        self.save_button.clicked.connect(self._save)
        bar = QHBoxLayout()
        for widget in (self.zoom_out, self.zoom_label, self.zoom_in):
            bar.addWidget(widget)
        bar.addStretch(1)
        bar.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addLayout(bar)
        self.resize(min(1100, image.width() + 60), min(800, image.height() + 100))
        self._zoom = self.ZOOMS.index(1.0)
        self._step(0)

    def _step(self, direction: int) -> None:
        self._zoom = min(max(self._zoom + direction, 0), len(self.ZOOMS) - 1)
        self.view.set_scale(self.ZOOMS[self._zoom])
        self.zoom_label.setText(f"{self.ZOOMS[self._zoom]:.0%}")

    def _save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save annotated image", "annotated.png", "PNG image (*.png)"
        )
        if path:
            self.view.annotated(Path(path))


class GroundingPanel(QFrame):
    """Under an answer that points at an image: a chip per image ("2 boxes on image 1") and that
    image with its overlays, a toggle and a larger view."""

    copied = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("GroundingPanel")
        self.chips_row = QHBoxLayout()
        self.chips_row.setContentsMargins(0, 0, 0, 0)
        self.toggle = QCheckBox("Show boxes")
        self.toggle.setChecked(True)
        self.toggle.toggled.connect(self._set_visible)
        self.open_button = QPushButton("Open larger…")
        self.open_button.clicked.connect(self.open_zoom)
        self.chips: list[QPushButton] = []
        self.view: OverlayImage | None = None
        self.holder = QVBoxLayout()
        self.holder.setContentsMargins(0, 0, 0, 0)
        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addLayout(self.chips_row)
        controls.addStretch(1)
        controls.addWidget(self.toggle)
        controls.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.addLayout(controls)
        layout.addLayout(self.holder)
        self._groups: list[tuple[GroundingImage, list[Shape]]] = []
        self._images: dict[str, QImage] = {}
        self._shown: GroundingImage | None = None
        self.zoom: ZoomDialog | None = None
        self.hide()

    def set_groups(
        self,
        groups: list[tuple[GroundingImage, list[Shape]]],
        scroll_to: Callable[[QWidget], None] | None = None,
    ) -> None:
        """Show these shapes (unchanged groups keep their widgets, so streaming does not flicker)."""
        self._scroll_to = scroll_to
        if [(g.title, s) for g, s in groups] == [(g.title, s) for g, s in self._groups]:
            return
        self._groups = groups
        for chip in self.chips:
            chip.deleteLater()
        self.chips = []
        for image, shapes in groups:
            chip = QPushButton(chip_text(shapes, image))
            chip.setObjectName("GroundingChip")
            chip.setToolTip(f"Show them on {image.title}")
            chip.clicked.connect(lambda _=False, t=image.title: self.show_image(t, scroll=True))
            self.chips_row.addWidget(chip)
            self.chips.append(chip)
        self.setVisible(bool(groups))
        if groups:
            keep = (
                self._shown.title
                if self._shown and any(g.title == self._shown.title for g, _ in groups)
                else None
            )
            self.show_image(keep or groups[-1][0].title)

    def show_image(self, title: str, scroll: bool = False) -> None:
        group = next(((g, s) for g, s in self._groups if g.title == title), None)
        if group is None:
            return
        image, shapes = group
        if image.title not in self._images:
            self._images[image.title] = image.load()
        if self._images[image.title].isNull():
            return  # the file is gone or unreadable: the chip still says where the boxes were
        if self.view is not None:
            self.view.deleteLater()
        self.view = OverlayImage(self._images[image.title], shapes)
        self.view.set_overlays_visible(self.toggle.isChecked())
        self.view.copied.connect(self.copied)
        self.holder.addWidget(self.view)
        self._shown = image
        if scroll and self._scroll_to is not None:
            self._scroll_to(self.view)

    def _set_visible(self, visible: bool) -> None:
        if self.view is not None:
            self.view.set_overlays_visible(visible)

    def open_zoom(self) -> None:
        if self.view is None or self._shown is None:
            return
        self.zoom = ZoomDialog(
            self.view.image,
            self.view.shapes,
            self._shown.title,
            self,
            overlays_visible=self.toggle.isChecked(),
        )
        self.zoom.show()
