"""The model picker: discovered models with size, bits, vision/text-only, MTP head and memory fit;
load/unload; the context length and MTP mode."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine_mlx.mtp_head import MtpMode
from engine_mlx.sizes import human_bytes

from ..controllers.models import APP_MTP_MODES, ModelEntry, ModelsController, fit_label
from .tables import row_table

COLUMNS = ("Model", "Size on disk", "Bits", "Input", "Memory fit")
MTP_LABELS = {"auto": "Auto", "off": "Off"}  # MtpMode value -> what the combo box shows
NO_HEAD_TIP = (
    "This model has no MTP head. Add one with python -m engine_mlx add-mtp (text-only downloads) "
    "or add-vision --mtp (see the README)."
)


def input_kind(info) -> str:
    """The picker's Input column: what the model reads, and whether it has an MTP head."""
    kind = "Vision + text" if info.is_vision else "Text only"
    return kind + (" · MTP head" if info.mtp is not None else "")


class ModelPicker(QDialog):
    def __init__(self, models: ModelsController, parent: QWidget | None = None, downloads=None):
        super().__init__(parent)
        self.downloads = downloads  # a DownloadsController: "Add vision" for text-only models
        self.setWindowTitle("Models")
        self.resize(820, 420)
        self.models = models
        layout = QVBoxLayout(self)
        self.current = QLabel()
        self.current.setWordWrap(True)
        layout.addWidget(self.current)
        self.table = row_table(COLUMNS, stretch=(0, 4))  # a refusal's reason shows in the last
        self.table.setAccessibleName("Models")
        self.table.doubleClicked.connect(lambda _index: self.load_selected())
        self.table.itemSelectionChanged.connect(self._show_details)
        layout.addWidget(self.table, 1)
        self.details = QLabel()
        self.details.setObjectName("Muted")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.details)
        row = QHBoxLayout()
        add = QPushButton("Add folder…")
        add.clicked.connect(self.add_folder)
        row.addWidget(add)
        demo = QPushButton("Demo model (random weights)")
        demo.setToolTip(
            "A tiny model with random weights: its answers are gibberish, for trying the interface."
        )
        demo.clicked.connect(self._use_demo)
        row.addWidget(demo)
        self.vision_button = QPushButton("Add vision…")
        self.vision_button.setToolTip(
            "Fetch only the vision tower from the original release and add it."
        )
        self.vision_button.clicked.connect(self._add_vision)
        self.vision_button.setVisible(downloads is not None)
        row.addWidget(self.vision_button)
        self.rescan_button = QPushButton("Rescan")
        self.rescan_button.setToolTip("Look for model folders again")
        # (not connected directly: the button's ``checked`` argument would arrive as rescan's ``then``)
        self.rescan_button.clicked.connect(lambda: models.rescan())
        row.addWidget(self.rescan_button)
        row.addStretch(1)
        context_label = QLabel("Context")
        row.addWidget(context_label)
        self.context = QSpinBox()
        self.context.setRange(2048, 262144)
        self.context.setSingleStep(4096)
        self.context.setSuffix(" tokens")
        self.context.setValue(models.context_tokens)
        context_label.setBuddy(self.context)
        self._context_on_open = models.context_tokens  # Esc / Cancel puts it back
        self._rejected = False
        self.context.editingFinished.connect(self._context_changed)
        row.addWidget(self.context)
        self.mtp_label = QLabel("MTP")
        row.addWidget(self.mtp_label)
        self.mtp = QComboBox()
        self.mtp.setAccessibleName("MTP speculative decoding")
        for mode in APP_MTP_MODES:
            self.mtp.addItem(MTP_LABELS[mode.value], mode.value)
        self.mtp.setCurrentIndex(self.mtp.findData(models.mtp_mode.value))
        self.mtp_label.setBuddy(self.mtp)
        self.mtp.currentIndexChanged.connect(self._mtp_changed)
        row.addWidget(self.mtp)
        self.unload_button = QPushButton("Unload")
        self.unload_button.clicked.connect(models.unload)
        row.addWidget(self.unload_button)
        self.load_button = QPushButton("Load")
        self.load_button.setDefault(True)
        self.load_button.clicked.connect(self.load_selected)
        row.addWidget(self.load_button)
        layout.addLayout(row)
        models.modelsChanged.connect(self.populate)
        models.modelLoaded.connect(lambda _info: self._update_current())
        models.modelUnloaded.connect(self._update_current)
        self.populate(models.entries)
        self._update_current()
        if not models.scanned:
            models.rescan()

    def populate(self, entries: list[ModelEntry]) -> None:
        self.entries = list(entries)
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            if entry.info is None:  # refused by the engine: listed, greyed, with the reason
                for col, value in enumerate(
                    (entry.path.name, "–", "–", "–", f"Refused: {entry.refusal}")
                ):
                    item = QTableWidgetItem(value)
                    item.setToolTip(f"{entry.path}: {entry.refusal}")
                    item.setForeground(
                        self.palette().brush(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
                    )
                    self.table.setItem(row, col, item)
                continue
            info = entry.info
            name = info.name + ("  (demo, random weights)" if entry.is_demo else "")
            bits = info.precision
            kind = input_kind(info)
            fit = fit_label(entry.fit)
            if entry.fit is not None:
                fit += f" · {human_bytes(entry.fit.total_bytes)} of {human_bytes(entry.fit.budget_bytes)}"
            for col, value in enumerate((name, human_bytes(info.weight_bytes), bits, kind, fit)):
                item = QTableWidgetItem(value)
                item.setToolTip(str(info.path))
                self.table.setItem(row, col, item)
        self.details.setText(
            ""
            if entries
            else "No models found in the Hugging Face cache or LM Studio's folder. "
            "Use “Add folder…” to pick a Qwen3.5 MLX checkpoint folder."
        )
        if entries:
            self.table.selectRow(0)
            self._show_details()

    def selected(self) -> ModelEntry | None:
        rows = self.table.selectionModel().selectedRows()
        return self.entries[rows[0].row()] if rows else None

    def _show_details(self) -> None:
        entry = self.selected()
        self.load_button.setEnabled(entry is not None and entry.info is not None)
        self._show_mtp(entry)
        if entry is None:
            return
        if entry.info is None:
            self.details.setText(f"Refused: {entry.path}: {entry.refusal}")
            return
        text = f"{entry.info.path}\n"
        if entry.fit is not None:
            text += entry.fit.summary()
            if entry.fit.advice:
                text += "\n" + entry.fit.advice
        if not entry.info.is_vision:
            text += "\nThis checkpoint is text-only: it cannot read images, PDFs or videos."
        if entry.info.mtp is not None:
            text += (
                f"\nMTP head ({human_bytes(entry.info.mtp.weight_bytes)}): drafts tokens "
                "for faster answers."
            )
        elif entry.info.mtp_error:
            text += f"\nMTP head not usable: {entry.info.mtp_error}"
        self.details.setText(text)
        self.vision_button.setEnabled(not entry.info.is_vision and not entry.is_demo)
        size = self.downloads.known_vision_size(entry.path) if self.downloads is not None else None
        self.vision_button.setText(
            f"Add vision (downloads {human_bytes(size)})" if size else "Add vision…"
        )

    def _add_vision(self) -> None:
        from .downloads import AddVisionDialog

        entry = self.selected()
        if entry is not None and self.downloads is not None:
            self.vision_dialog = AddVisionDialog(self.downloads, entry.path, self)
            self.vision_dialog.show()

    def load_selected(self) -> None:
        entry = self.selected()
        if entry is None or entry.info is None:
            return
        self._context_changed()  # a value typed but not yet committed counts
        force = False
        if entry.fit is not None and fit_label(entry.fit) == "Does not fit":
            answer = QMessageBox.warning(
                self,
                "Model does not fit",
                f"{entry.fit.summary()}\n\n{entry.fit.advice}\n\nLoad anyway? The system may swap heavily.",
                QMessageBox.StandardButton.Cancel | QMessageBox.StandardButton.Yes,
                QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            force = True
        self.models.load(entry.path, force=force)
        self.accept()

    def add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a Qwen3.5 MLX model folder", str(Path.home())
        )
        if folder:
            self.models.add_folder(Path(folder))

    def _use_demo(self) -> None:
        self.models.use_demo()
        self.accept()

    def _show_mtp(self, entry: ModelEntry | None) -> None:
        """The MTP mode applies to a model with a head: enabled only for one."""
        has_head = entry is not None and entry.info is not None and entry.info.mtp is not None
        for widget in (self.mtp_label, self.mtp):
            widget.setEnabled(has_head)
        self.mtp.setToolTip(
            "Auto drafts tokens with the model's MTP head while that makes answers faster; "
            "Off decodes plainly."
            if has_head
            else NO_HEAD_TIP
        )

    def _mtp_changed(self, index: int) -> None:
        self.models.set_mtp_mode(MtpMode(self.mtp.itemData(index)))

    def _context_changed(self) -> None:
        if self._rejected:
            return
        if self.context.value() != self.models.context_tokens:
            self.models.set_context_tokens(self.context.value())
            self.models.rescan()

    def reject(self) -> None:
        """Closing without loading (Esc, the close button) keeps the context length the dialog opened with."""
        self._rejected = True  # hiding the dialog ends the spin box's editing: ignore that
        super().reject()
        if self.models.context_tokens != self._context_on_open:
            self.models.set_context_tokens(self._context_on_open)
            self.models.rescan()

    def _update_current(self) -> None:
        info = self.models.loaded_info
        self.current.setText(f"Loaded: <b>{info.name}</b>" if info else "No model loaded.")
        self.unload_button.setEnabled(info is not None)
