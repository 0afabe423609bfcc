"""The models presenter: loading a model as the window shows it (status bar, header, first-run page, banner),
the model picker, Get models and Add vision, and a refusal's way out for a text-only model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from engine_mlx.checkpoint import ModelInfo
from engine_mlx.sizes import human_bytes

from ..store import StoredStats
from ..views.downloads import AddVisionDialog, DownloadsDialog
from ..views.engine_settings import EngineSettingsDialog
from ..views.model_picker import ModelPicker
from ..workers import LoadFailure

if TYPE_CHECKING:
    from ..window import MainWindow

FAILURE_PREFIX = {
    LoadFailure.MEMORY: "This model does not fit in memory. ",
    LoadFailure.CHECKPOINT: "This model cannot be used. ",
}
DEMO_NOTICE = (
    "Demo model: random weights. Its answers are gibberish; use it to try the interface, then "
    "choose a real Qwen3.5 model."
)


class ModelsPresenter(QObject):
    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = w = window
        self.models = m = window.models
        self.loading = False  # a load runs: the first-run page stays away meanwhile
        m.loadStarted.connect(self._on_load_started)
        m.loadProgress.connect(self._on_load_progress)
        m.modelLoaded.connect(self._on_loaded)
        m.modelUnloaded.connect(self._on_unloaded)
        m.serverConnecting.connect(self._on_connecting)
        m.serverConnected.connect(self._on_connected)
        m.loadFailed.connect(self._on_load_failed)
        m.errorOccurred.connect(w.show_error)
        m.severalFound.connect(self._several_models_found)
        m.modelsChanged.connect(lambda _entries: w.update_page())
        m.demoBuilding.connect(self._on_demo_building)
        w.model_button.clicked.connect(self.open_model_picker)
        w.first_run.chooseModel.connect(self.open_model_picker)
        w.first_run.getModels.connect(self.open_downloads)
        w.first_run.addFolder.connect(self.add_folder)
        w.first_run.useDemo.connect(m.use_demo)
        w.downloads.modelAdded.connect(lambda folder: m.add_folder(Path(folder)))

    # --- dialogs ------------------------------------------------------------------------------------
    def open_model_picker(self) -> None:
        ModelPicker(self.models, self.window, downloads=self.window.downloads).exec()

    def open_engine_settings(self) -> None:
        """Settings ▸ Engine: this Mac's engine, or a QwenDesk server's."""
        m = self.models
        dialog = EngineSettingsDialog(
            m.engine_choice, m.key_file.read(), self.window.paths.server_key, self.window
        )
        if dialog.exec():
            m.set_engine(*dialog.value())

    def open_downloads(self) -> None:
        self.window.downloads_dialog = DownloadsDialog(self.window.downloads, self.window)
        self.window.downloads_dialog.show()

    def open_add_vision(self, model_dir: Path) -> None:
        self.window.add_vision_dialog = AddVisionDialog(
            self.window.downloads, model_dir, self.window
        )
        self.window.add_vision_dialog.show()

    def add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self.window, "Choose a Qwen3.5 MLX model folder", str(Path.home())
        )
        if folder:
            self.models.add_folder(Path(folder), load_if_one=True)

    def media_refused(self, message: str) -> None:
        """The text-only refusal offers the way out: add vision to this model."""
        w, info = self.window, self.models.loaded_info
        if w.attachments.model_is_vision is False and info is not None:
            size = w.downloads.known_vision_size(Path(info.path))
            label = f"Add vision (downloads {human_bytes(size)})" if size else "Add vision…"
            w.show_error(message, label, lambda: self.open_add_vision(Path(info.path)))
        else:
            w.show_error(message)

    def _several_models_found(self, count: int) -> None:
        self.window.statusBar().showMessage(f"That folder holds {count} models: choose one", 5000)
        self.open_model_picker()

    # --- loading ------------------------------------------------------------------------------------
    def _show_model(self, text: str, button: str) -> None:
        self.window.status_model.setText(text)
        self.window.model_button.setText(button)

    def _on_load_started(self, name: str) -> None:
        w = self.window
        self.loading = True
        w.load_progress.setValue(0)
        w.load_progress.show()
        self._show_model(f"Loading {name}…", f"Loading {name}…")
        w.first_run.status.setText(f"Loading {name}…")
        w.update_page()

    def _on_load_progress(self, stage: str, fraction: float) -> None:
        self.window.load_progress.setValue(int(fraction * 1000))
        self.window.load_progress.setFormat(f"{stage} %p%")

    def _on_loaded(self, info: ModelInfo) -> None:
        w = self.window
        self.loading = False
        w.load_progress.hide()
        w.chat.model_loaded = True
        w.chat.model_is_vision = info.is_vision
        w.attachments.set_model(info.name, info.is_vision)
        kind = "vision" if info.is_vision else "text-only"
        self._show_model(f"{info.name} · {info.precision} · {kind}", info.name)
        w.first_run.status.setText("")
        w.status_bar.clear_stats()  # the previous model's speed and context are not this one's
        self.show_memory(0)
        if self.models.is_demo(info):
            w.banner.show_message(DEMO_NOTICE, "Choose model…", self.open_model_picker, sticky=True)
        else:
            w.banner.clear_sticky()
        w.update_page()

    def _sync_no_model_message(self) -> None:
        from ..controllers.chat import NO_MODEL, NO_SERVER

        self.window.chat.no_model_message = NO_SERVER if self.models.server_mode else NO_MODEL

    def _on_connecting(self, host: str) -> None:
        w = self.window
        self._sync_no_model_message()
        self.loading = True
        self._show_model(f"Connecting to {host}…", f"Connecting to {host}…")
        w.update_page()

    def _on_connected(self, model) -> None:
        """Server mode: the server's model answers; nothing is loaded here."""
        w = self.window
        self.loading = False
        w.load_progress.hide()
        w.chat.model_loaded = True
        w.chat.model_is_vision = model.is_vision
        w.attachments.set_model(model.name, model.is_vision)
        kind = "vision" if model.is_vision else "text-only"
        self._show_model(f"{model.name} · {kind} · on {model.server}", f"{model.name} (server)")
        w.status_memory.setText("")
        w.status_bar.clear_stats()
        w.banner.clear_sticky()
        w.update_page()

    def _on_unloaded(self) -> None:
        w = self.window
        self._sync_no_model_message()
        w.chat.model_loaded = False
        w.chat.model_is_vision = None
        w.attachments.set_model("", None)
        self._show_model("No model loaded", "No model")
        w.status_memory.setText("")
        w.status_bar.clear_stats()
        w.banner.clear_sticky()
        w.update_page()

    def _on_load_failed(self, message: str, kind: LoadFailure) -> None:
        w = self.window
        self.loading = False
        w.load_progress.hide()
        info = self.models.loaded_info
        self._show_model(
            info.name if info else "No model loaded", info.name if info else "No model"
        )
        w.first_run.status.setText("")
        if kind is LoadFailure.SERVER:
            self._sync_no_model_message()
            w.chat.model_loaded = False
            w.chat.model_is_vision = None
            w.attachments.set_model("", None)
            self._show_model("Not connected to the server", "Not connected")
            w.show_error(message, "Engine settings…", self.open_engine_settings)
        else:
            w.show_error(
                FAILURE_PREFIX.get(kind, "") + message, "Choose model…", self.open_model_picker
            )
        w.update_page()

    def _on_demo_building(self, building: bool) -> None:
        w = self.window
        if building:
            w.first_run.status.setText("Building the demo model (a few seconds)…")
            w.status_model.setText("Building the demo model…")
        w.first_run.demo_button.setEnabled(not building)

    # --- figures ------------------------------------------------------------------------------------
    def show_stats(self, stats: StoredStats) -> None:
        """An answer's figures in the status bar: speed, context use and peak memory."""
        self.window.status_bar.show_stats(stats, self.models.context_limit)
        self.show_memory(stats.peak_memory_bytes)

    def show_memory(self, peak: int) -> None:
        info = self.models.loaded_info
        if info is None:
            self.window.status_memory.setText("")
            return
        text = f"Weights {human_bytes(info.weight_bytes)}"
        if peak:
            text += f" · peak {human_bytes(peak)}"
        self.window.status_memory.setText(text)
