"""Model ▸ Get models…: the catalog with sizes, downloads with progress bars, pause/resume/cancel, free
disk space; and the "Add vision" dialog for a text-only model."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine_mlx.sizes import human_bytes, human_rate

from ..controllers.downloads import DownloadsController, Transfer, TransferState
from .tables import row_table

COLUMNS = ("Model", "Size", "Progress", "Status")


def status_text(t: Transfer | None) -> str:
    if t is None:
        return ""
    if t.state is TransferState.RUNNING and t.kind.value == "download":
        eta = (
            f", {t.eta_s / 60:.0f} min left"
            if t.eta_s and t.eta_s >= 60
            else (f", {t.eta_s:.0f} s left" if t.eta_s else "")
        )
        return f"{human_bytes(t.done_bytes)} of {human_bytes(t.total_bytes)} at {human_rate(t.rate_bps)}{eta}"
    if t.state in (
        TransferState.FAILED,
        TransferState.PAUSED,
        TransferState.CANCELLED,
        TransferState.READY,
    ):
        return t.message
    return t.message or t.state.value.capitalize()


class DownloadsDialog(QDialog):
    def __init__(self, downloads: DownloadsController, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Get models")
        self.resize(860, 420)
        self.downloads = downloads
        layout = QVBoxLayout(self)
        intro = QLabel(
            "Qwen3.5 models converted for MLX. Downloads go to the Hugging Face cache, where other "
            "tools find them too; a paused download resumes where it stopped, even after a restart."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.table = row_table(COLUMNS, stretch=(0, 3))
        self.table.setAccessibleName("Models to download")
        self.table.itemSelectionChanged.connect(self._sync_buttons)
        layout.addWidget(self.table, 1)
        self.free = QLabel()
        self.free.setObjectName("Muted")
        layout.addWidget(self.free)
        # What "Check sizes online" found out, an error above all (it was only in a row's tooltip).
        self.notice = QLabel()
        self.notice.setObjectName("StateLabel")
        self.notice.setWordWrap(True)
        self.notice.hide()
        layout.addWidget(self.notice)
        row = QHBoxLayout()
        self.refresh_button = QPushButton("Check sizes online")
        self.refresh_button.clicked.connect(self.check_sizes)
        row.addWidget(self.refresh_button)
        row.addStretch(1)
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(lambda: self._act(downloads.download))
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(lambda: self._act(downloads.pause))
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(lambda: self._act(downloads.resume))
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.clicked.connect(lambda: self._act(downloads.cancel))
        for b in (self.download_button, self.pause_button, self.resume_button, self.cancel_button):
            row.addWidget(b)
        layout.addLayout(row)
        downloads.catalogChanged.connect(self._sizes_checked)
        downloads.errorOccurred.connect(self._sizes_failed)
        downloads.transferChanged.connect(self._transfer_changed)
        self.populate()

    def check_sizes(self) -> None:
        self.refresh_button.setEnabled(False)
        self.notice.setText("Checking the sizes on Hugging Face…")
        self.notice.show()
        self.downloads.refresh_catalog()

    def _sizes_checked(self, entries: list) -> None:
        self.populate()
        self.refresh_button.setEnabled(True)
        errors = [e.error for e in entries if e.error]
        if errors:
            self._sizes_failed(errors[0])
        else:
            self.notice.hide()

    def _sizes_failed(self, error: str) -> None:
        self.refresh_button.setEnabled(True)
        self.notice.setText(
            f"Could not check the sizes online: {error.rstrip('.')}. The sizes marked ≈ are "
            "estimates; check the internet connection and press “Check sizes online” again."
        )
        self.notice.show()

    def keys(self) -> list[str]:
        keys = [e.repo for e in self.downloads.catalog]
        keys += [k for k in self.downloads.transfers if k not in keys]
        return keys

    def populate(self) -> None:
        selected = self.selected()
        keys = self.keys()
        self.table.setRowCount(len(keys))
        entries = {e.repo: e for e in self.downloads.catalog}
        for row, key in enumerate(keys):
            entry, transfer = entries.get(key), self.downloads.transfers.get(key)
            title = entry.title if entry else (transfer.title if transfer else key)
            size = entry.size_bytes if entry else (transfer.total_bytes if transfer else None)
            size_text = human_bytes(size) if size else "?"
            if entry and not entry.exact:
                size_text = f"≈ {size_text}"
            name = QTableWidgetItem(f"{title}\n{key}" if entry else title)
            name.setData(Qt.ItemDataRole.UserRole, key)
            name.setToolTip(entry.error if entry and entry.error else key)
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, QTableWidgetItem(size_text))
            bar = QProgressBar()
            bar.setAccessibleName(f"Download of {title}")
            bar.setRange(0, 1000)
            self.table.setCellWidget(row, 2, bar)
            self.table.setItem(row, 3, QTableWidgetItem())
            self._show(row, transfer)
        self.table.resizeRowsToContents()
        if selected in keys:
            self.table.selectRow(keys.index(selected))
        elif keys:
            self.table.selectRow(0)
        self._update_free()
        self._sync_buttons()

    def _show(self, row: int, t: Transfer | None) -> None:
        bar = self.table.cellWidget(row, 2)
        bar.setValue(int(1000 * t.fraction) if t else 0)
        bar.setVisible(t is not None)
        self.table.item(row, 3).setText(status_text(t))
        self.table.item(row, 3).setToolTip(status_text(t))

    def row_of(self, key: str) -> int:
        keys = self.keys()
        return keys.index(key) if key in keys else -1

    def _transfer_changed(self, t: Transfer) -> None:
        row = self.row_of(t.key)
        if row < 0 or row >= self.table.rowCount():
            self.populate()
            return
        self._show(row, t)
        if t.state in (
            TransferState.DONE,
            TransferState.FAILED,
            TransferState.PAUSED,
            TransferState.CANCELLED,
        ):
            self._update_free()
        self._sync_buttons()

    def selected(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def _act(self, fn) -> None:
        key = self.selected()
        if key:
            fn(key)
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        t = self.downloads.transfers.get(self.selected() or "")
        state = t.state if t else None
        is_download = t is None or t.kind.value == "download"
        busy = state in (TransferState.RUNNING, TransferState.PLANNING)
        self.download_button.setEnabled(
            bool(self.selected())
            and is_download
            and state in (None, TransferState.CANCELLED, TransferState.FAILED)
        )
        self.pause_button.setEnabled(is_download and busy)
        self.resume_button.setEnabled(is_download and state is TransferState.PAUSED)
        self.cancel_button.setEnabled(busy or state in (TransferState.PAUSED, TransferState.READY))

    def _update_free(self) -> None:
        free, folder = self.downloads.free_space()
        self.free.setText(f"Free disk space: {human_bytes(free)} on the volume of {folder}")


# Reads as an example, not as a value: an empty field must not look filled in.
PLACEHOLDER_RELEASE = "e.g. Qwen/Qwen3.5-397B-A17B (the release this model was converted from)"


class AddVisionDialog(QDialog):
    """Pick the original release (proposed from the model's card and config), see what it costs, add it."""

    def __init__(
        self, downloads: DownloadsController, model_dir: Path, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.setWindowTitle("Add vision")
        self.resize(640, 220)
        self.downloads, self.model_dir, self.key = downloads, Path(model_dir), str(model_dir)
        layout = QVBoxLayout(self)
        about = QLabel(
            f"<b>{self.model_dir.name}</b> is text-only. QwenDesk can fetch just the vision tower "
            "from the original release (a small part of it) and write a new model folder beside this "
            "one; the original stays as it is and its weights are shared, not copied."
        )
        about.setWordWrap(True)
        layout.addWidget(about)
        row = QHBoxLayout()
        release_label = QLabel("Original release")
        row.addWidget(release_label)
        self.source = QLineEdit(downloads.proposed_release(self.model_dir))
        release_label.setBuddy(self.source)
        self.source.setPlaceholderText(PLACEHOLDER_RELEASE)
        self.source.setAccessibleName("Original release (a Hugging Face repository)")
        row.addWidget(self.source, 1)
        self.mtp = QCheckBox("Also the MTP head")
        self.mtp.setToolTip(
            "The multi-token-prediction head, for speculative decoding (a little more to download)."
        )
        row.addWidget(self.mtp)
        layout.addLayout(row)
        self.status = QLabel(
            "Check the size first: this reads the release's file list and shard headers."
        )
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.bar = QProgressBar()
        self.bar.setAccessibleName("Adding vision")
        self.bar.setRange(0, 1000)
        layout.addWidget(self.bar)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.check_button = QPushButton("Check size")
        self.check_button.clicked.connect(self.check)
        self.add_button = QPushButton("Add vision")
        self.add_button.setDefault(True)
        self.add_button.clicked.connect(lambda: downloads.add_vision(self.model_dir))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._cancel)
        for b in (self.check_button, self.add_button, self.cancel_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        downloads.transferChanged.connect(self._changed)
        self._changed(downloads.transfers.get(self.key))

    def check(self) -> None:
        if self.source.text().strip():
            self.downloads.plan_vision(
                self.model_dir, self.source.text().strip(), self.mtp.isChecked()
            )

    def _cancel(self) -> None:
        t = self.downloads.transfers.get(self.key)
        if t and t.state in (TransferState.RUNNING, TransferState.READY):
            self.downloads.cancel(self.key)
        else:
            self.reject()

    def _changed(self, t: Transfer | None) -> None:
        if t is not None and t.key != self.key:
            return
        state = t.state if t else None
        if t is not None:
            self.status.setText(
                t.message
                if state is not TransferState.RUNNING
                else f"{t.message or 'fetch'}: {human_bytes(t.done_bytes)} of {human_bytes(t.total_bytes)}"
            )
            self.bar.setValue(int(1000 * t.fraction))
        self.add_button.setText(
            f"Add vision (downloads {human_bytes(t.total_bytes)})"
            if state is TransferState.READY
            else "Add vision"
        )
        self.add_button.setEnabled(state is TransferState.READY)
        self.check_button.setEnabled(state not in (TransferState.RUNNING, TransferState.PLANNING))
        self.source.setEnabled(state not in (TransferState.RUNNING, TransferState.PLANNING))
