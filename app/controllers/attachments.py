"""Attachments waiting in the composer: validated and copied into the data folder in the background."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QImage

from engine_mlx.errors import MediaError

from ..operations import Operation
from ..store import AttachmentKind, Store, StoredAttachment, StoreError

log = logging.getLogger(__name__)

THUMB_SIDE = 160


@dataclass(frozen=True)
class Pending:
    """One attachment in the composer; ``stored`` is its content-addressed copy."""

    key: int
    stored: StoredAttachment
    thumbnail: QImage | None = None
    width: int = 0  # an image's or video's own size (not the thumbnail's)
    height: int = 0
    lines: int = 0  # a text file's

    @property
    def kind(self) -> AttachmentKind:
        return self.stored.kind


def pdf_thumbnail(path: Path, page: int) -> QImage | None:
    """The chip's picture of a PDF: the first page that will be sent (None if it cannot be rendered)."""
    from engine_mlx import media

    try:
        image = media.load_pdf_pages(path, page, page, max_side=THUMB_SIDE)[0]
    except MediaError:
        return None
    return _qimage(image)


def _qimage(image) -> QImage:
    """A PIL image as a QImage that owns its pixels."""
    rgb = image.convert("RGB")
    return QImage(
        rgb.tobytes(), rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888
    ).copy()


def _thumbnail_from_array(frame) -> QImage:
    height, width = frame.shape[:2]
    image = QImage(frame.tobytes(), width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    return image.scaled(
        THUMB_SIDE,
        THUMB_SIDE,
        Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )


def prepare(path: Path, store: Store, key: int, name: str = "") -> Pending:
    """Validate, copy and thumbnail one file (runs on a pool thread; raises MediaError / StoreError);
    ``name`` is shown (and given to the model) instead of the file's own."""
    from engine_mlx import media

    path = Path(path)
    if not path.exists():
        raise MediaError(path, "does not exist (was it moved or deleted?)")
    kind = AttachmentKind(media.classify(path).value)
    thumb = None
    width = height = lines = 0
    page_count = duration = None
    if kind is AttachmentKind.TEXT:
        from engine_mlx.text_files import load_text

        lines = len(load_text(path).splitlines())
    elif kind is AttachmentKind.IMAGE:
        image = media.load_image(path, max_side=THUMB_SIDE)
        width, height = original_size(path)
        thumb = _qimage(image)
    elif kind is AttachmentKind.PDF:
        page_count = media.pdf_page_count(path)
        thumb = pdf_thumbnail(path, 1)
    else:
        info = media.probe_video(path)
        duration = info.duration_s
        width, height = info.width, info.height
        try:
            first = media.sample_video(
                path, fps=1.0, start_s=0.0, end_s=min(0.9, duration), max_side=THUMB_SIDE
            )
            if first.frames:
                thumb = _thumbnail_from_array(first.frames[0])
        except MediaError:
            thumb = None
    stored_path = store.import_file(path)
    stored = StoredAttachment(
        kind=kind,
        path=stored_path,
        name=name or path.name,
        page_count=page_count,
        last_page=min(page_count, 8) if page_count else None,
        duration_s=duration,
        end_s=min(duration, 30.0) if duration else None,
    )
    return Pending(key, stored, thumb, width, height, lines)


def original_size(path: Path) -> tuple[int, int]:
    """An image's width and height as shown (EXIF rotation applied), read from its header only."""
    from PIL import Image

    with Image.open(path) as img:
        width, height = img.size
        if img.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated a quarter turn
            width, height = height, width
    return width, height


def text_only_refusal(model_name: str = "") -> str:
    return (
        f"{model_name or 'This model'} is a text-only checkpoint: it cannot see images, PDFs or "
        "videos. Load a vision checkpoint (an mlx-vlm conversion of Qwen3.5) to attach them."
    )


def earlier_media_refusal(model_name: str = "") -> str:
    return (
        f"This chat has images, PDFs or videos in earlier messages, and {model_name or 'this model'} is "
        "text-only: it cannot read them. Add vision to the model, or start a new chat to go on without "
        "them; your message stays in the box."
    )


class AttachmentsController(QObject):
    added = Signal(Pending)
    changed = Signal(Pending)
    removed = Signal(int)  # key
    cleared = Signal()
    errorOccurred = Signal(str)
    busyChanged = Signal(bool)

    def __init__(self, store: Store, scratch_dir: Path, parent: QObject | None = None):
        super().__init__(parent)
        self.store = store
        self.scratch_dir = Path(scratch_dir)
        self.items: list[Pending] = []
        self.model_is_vision: bool | None = None  # None = no model loaded yet
        self.model_name = ""
        self._next_key = 0
        self._in_flight = 0

    @property
    def busy(self) -> bool:
        return self._in_flight > 0

    def remove_leftover_scratch(self) -> None:
        """At start-up (lock holder only): pasted images and read MCP resources a crash left before they
        were copied in."""
        for pattern in ("pasted-*.png", "resource-*"):
            for file in self.scratch_dir.glob(pattern):
                file.unlink(missing_ok=True)

    def set_model(self, name: str, is_vision: bool | None) -> None:
        self.model_name = name
        self.model_is_vision = is_vision

    def text_only_refusal(self) -> str:
        return text_only_refusal(self.model_name)

    @property
    def has_media(self) -> bool:
        """Attachments only a vision model can read (text files go to any model)."""
        return any(p.kind is not AttachmentKind.TEXT for p in self.items)

    def add_paths(self, paths: list[Path | str], *, scratch: bool = False) -> None:
        """Attach files; ``scratch`` files (pasted images) are deleted once the data folder holds a copy."""
        if self.model_is_vision is False:
            paths = self._text_files_only(paths)
        for path in paths:
            self._add(Path(path), "", scratch)

    def add_file(self, path: Path, name: str, *, scratch: bool = False) -> None:
        """Attach one file under ``name`` (an MCP resource read into a scratch file)."""
        if self.model_is_vision is False and not self._text_files_only([path]):
            if scratch:
                Path(path).unlink(missing_ok=True)
            return
        self._add(Path(path), name, scratch)

    def _add(self, path: Path, name: str, scratch: bool) -> None:
        self._next_key += 1
        key = self._next_key
        self._in_flight += 1
        self.busyChanged.emit(True)
        Operation(
            self,
            lambda _ctx: self._prepare(path, key, scratch, name),
            self._on_prepared,
            label="Attaching the file",
        ).failure(self._on_failed).run_in_background()

    def _prepare(self, path: Path, key: int, scratch: bool, name: str = "") -> Pending:
        try:
            return prepare(path, self.store, key, name)
        finally:
            if scratch:
                path.unlink(missing_ok=True)

    def _text_files_only(self, paths: list[Path | str]) -> list[Path | str]:
        from engine_mlx.media import TEXT_SUFFIXES

        text = [p for p in paths if Path(p).suffix.lower() in TEXT_SUFFIXES]
        if len(text) < len(paths):
            self.errorOccurred.emit(self.text_only_refusal())
        return text

    def add_image(self, image: QImage) -> None:
        """A pasted image: saved as PNG in a scratch folder, then attached like a file."""
        if image.isNull():
            self.errorOccurred.emit("The clipboard image is empty.")
            return
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(
            prefix="pasted-", suffix=".png", dir=self.scratch_dir, delete=False
        )
        handle.close()
        if not image.save(handle.name, "PNG"):
            Path(handle.name).unlink(missing_ok=True)
            self.errorOccurred.emit("Could not save the pasted image (is the disk full?).")
            return
        self.add_paths([Path(handle.name)], scratch=True)

    def _done_one(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.busyChanged.emit(False)

    def _on_prepared(self, pending: Pending) -> None:
        self.items.append(pending)
        # files prepare in parallel; keep the order they were added
        self.items.sort(key=lambda p: p.key)
        self._done_one()
        self.added.emit(pending)

    def _on_failed(self, error: Exception) -> None:
        self._done_one()
        if isinstance(error, (MediaError, StoreError)):
            self.errorOccurred.emit(str(error))
        else:
            log.error("attachment failed", exc_info=error)
            self.errorOccurred.emit(f"Could not attach the file: {error}")

    def remove(self, key: int) -> None:
        self.items = [p for p in self.items if p.key != key]
        self.removed.emit(key)

    def update(self, key: int, **changes) -> None:
        """Change a page range or a video range/rate (fields of StoredAttachment)."""
        for index, item in enumerate(self.items):
            if item.key == key:
                self.items[index] = replace(item, stored=replace(item.stored, **changes))
                self.changed.emit(self.items[index])
                if (
                    item.kind is AttachmentKind.PDF
                    and item.stored.first_page != self.items[index].stored.first_page
                ):
                    self._rethumb(key, self.items[index].stored)
                return

    def _rethumb(self, key: int, stored: StoredAttachment) -> None:
        """The chip follows the page range: its picture becomes the range's first page."""

        def done(image: QImage | None) -> None:
            current = self.get(key)
            if (
                current is not None
                and current.stored.first_page == stored.first_page
                and image is not None
            ):
                self.items[self.items.index(current)] = replace(current, thumbnail=image)
                self.changed.emit(self.get(key))

        Operation(
            self,
            lambda _ctx: pdf_thumbnail(stored.path, stored.first_page),
            done,
            label="Drawing the page preview",
        ).run_in_background()

    def get(self, key: int) -> Pending | None:
        return next((p for p in self.items if p.key == key), None)

    def take(self) -> tuple[StoredAttachment, ...]:
        """The attachments to send; the composer is emptied."""
        out = tuple(p.stored for p in self.items)
        self.items = []
        self.cleared.emit()
        return out
