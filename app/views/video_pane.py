"""The video pane: preview, duration, start/end range (≤ 60 s), sampling rate, and the frames to be sent.

QtMultimedia is not part of PySide6-Essentials, so the preview is the sampled frames themselves:
the large preview shows the frame under the mouse in the strip (or the first one). Sampling runs on the
thread pool with a progress bar; changing a setting cancels the running sample and starts a new one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..controllers.attachments import Pending
from ..operations import Operation

log = logging.getLogger(__name__)

MAX_SECONDS = 60.0
DEBOUNCE_MS = 300
STRIP_SIDE = 72


def _qimage(frame) -> QImage:
    h, w = frame.shape[:2]
    return QImage(frame.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def sample(path: Path, fps: float, start_s: float, end_s: float, progress, cancelled):
    """Runs on a pool thread: the sampled frames as QImages, with their timestamps."""
    from engine_mlx import media

    video = media.sample_video(
        path,
        fps=fps,
        start_s=start_s,
        end_s=end_s,
        max_side=384,
        progress=progress,
        cancelled=cancelled,
    )
    return [(_qimage(f), t) for f, t in zip(video.frames, video.timestamps_s)]


class VideoPane(QFrame):
    rangeChanged = Signal(int, float, float, float)  # key, start, end, fps

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("VideoPane")
        self.setMinimumWidth(300)
        self.setMaximumWidth(420)
        self.key: int | None = None
        self.path: Path | None = None
        self.duration = 0.0
        self._task: Operation | None = None
        self.frames: list[tuple[QImage, float]] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        head = QHBoxLayout()
        self.title = QLabel("Video")
        self.title.setObjectName("RoleLabel")
        head.addWidget(self.title, 1)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Close the video pane (the video stays attached)")
        close.setAccessibleName("Close the video pane")
        close.clicked.connect(self._close)
        head.addWidget(close)
        layout.addLayout(head)
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumHeight(180)
        self.preview.setStyleSheet("background: black; border-radius: 6px;")
        layout.addWidget(self.preview)
        self.caption = QLabel()
        self.caption.setObjectName("Muted")
        layout.addWidget(self.caption)
        form = QFormLayout()
        self.start = QDoubleSpinBox()
        self.end = QDoubleSpinBox()
        for box in (self.start, self.end):
            box.setDecimals(1)
            box.setSuffix(" s")
            box.setSingleStep(0.5)
            box.setKeyboardTracking(False)
        self.fps = QSpinBox()
        self.fps.setRange(1, 8)
        self.fps.setSuffix(" fps")
        self.fps.setKeyboardTracking(False)
        form.addRow("Start", self.start)
        form.addRow("End", self.end)
        form.addRow("Sampling", self.fps)
        layout.addLayout(form)
        self.note = QLabel()
        self.note.setObjectName("Muted")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Reading the video")
        self.progress.setTextVisible(True)
        self.progress.hide()
        layout.addWidget(self.progress)
        self.strip = QListWidget()
        self.strip.setAccessibleName("Frames that will be sent")
        self.strip.setViewMode(QListView.ViewMode.IconMode)
        self.strip.setFlow(QListView.Flow.LeftToRight)
        self.strip.setWrapping(True)
        self.strip.setResizeMode(QListView.ResizeMode.Adjust)
        self.strip.setIconSize(QSize(STRIP_SIDE, STRIP_SIDE))
        self.strip.setMouseTracking(True)
        self.strip.itemEntered.connect(self._show_item)
        self.strip.currentItemChanged.connect(lambda item, _prev: self._show_item(item))
        layout.addWidget(self.strip, 1)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._resample)
        for signal in (self.start.valueChanged, self.end.valueChanged, self.fps.valueChanged):
            signal.connect(self._changed)

    # --- API ----------------------------------------------------------------------------------
    def open(self, pending: Pending) -> None:
        att = pending.stored
        self.key = pending.key
        self.path = att.path
        self.duration = att.duration_s or 0.0
        self.title.setText(att.name)
        for box in (self.start, self.end, self.fps):
            box.blockSignals(True)
        self.start.setRange(0.0, max(0.0, self.duration))
        self.end.setRange(0.0, max(0.0, self.duration))
        self.start.setValue(att.start_s)
        self.end.setValue(att.end_s if att.end_s is not None else min(self.duration, MAX_SECONDS))
        self.fps.setValue(int(round(att.fps)))
        for box in (self.start, self.end, self.fps):
            box.blockSignals(False)
        self.caption.setText(f"Duration {self.duration:.1f} s · {pending.width}×{pending.height}")
        self.show()
        self._resample()

    @property
    def busy(self) -> bool:
        return self._task is not None

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.progress.hide()

    # --- internals ----------------------------------------------------------------------------
    def _close(self) -> None:
        self.cancel()
        self.hide()

    def _changed(self) -> None:
        start, end = self.start.value(), self.end.value()
        if end <= start:
            end = min(self.duration, start + 1.0)
        if end - start > MAX_SECONDS:
            end = start + MAX_SECONDS
        self.end.blockSignals(True)
        self.end.setValue(end)
        self.end.blockSignals(False)
        self._debounce.start()

    def _resample(self) -> None:
        if self.path is None:
            return
        self.cancel()
        start, end, fps = self.start.value(), self.end.value(), float(self.fps.value())
        expected = max(1, int((end - start) * fps))
        self.note.setText(
            f"{expected} frame{'s' if expected != 1 else ''} will be sent "
            f"({end - start:.1f} s at {fps:g} fps; at most {MAX_SECONDS:.0f} s)."
        )
        if self.key is not None:
            self.rangeChanged.emit(self.key, start, end, fps)
        self.progress.setRange(0, expected)
        self.progress.setValue(0)
        self.progress.show()
        path = self.path
        task = Operation(
            self,
            lambda ctx: sample(path, fps, start, end, ctx.progress, ctx.cancelled),
            lambda frames: self._on_sampled(task, frames),
            label="Sampling the video",
        )
        task.failure(lambda error: self._on_failed(task, error))
        task.with_progress(lambda done, total: self._on_progress(task, done, total))
        self._task = task
        task.run_in_background()

    def _on_progress(self, task: Operation, done: int, total: int) -> None:
        if task is self._task:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _on_sampled(self, task: Operation, frames) -> None:
        if task is not self._task:
            return
        self._task = None
        self.progress.hide()
        self.frames = frames
        self.strip.clear()
        for image, timestamp in frames:
            item = QListWidgetItem(QIcon(QPixmap.fromImage(image)), f"{timestamp:.1f} s")
            item.setData(Qt.ItemDataRole.UserRole, image)
            self.strip.addItem(item)
        if frames:
            self._set_preview(frames[0][0])

    def _on_failed(self, task: Operation, error: Exception) -> None:
        if task is not self._task:
            return
        self._task = None
        self.progress.hide()
        from engine_mlx.media import SamplingCancelled

        if not isinstance(error, SamplingCancelled):
            self.note.setText(str(error))

    def _show_item(self, item: QListWidgetItem | None) -> None:
        if item is not None:
            self._set_preview(item.data(Qt.ItemDataRole.UserRole))

    def _set_preview(self, image: QImage) -> None:
        pix = QPixmap.fromImage(image)
        self.preview.setPixmap(
            pix.scaled(
                self.preview.width() or 300,
                180,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        )
