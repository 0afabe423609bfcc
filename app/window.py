"""The main window: sidebar of chats, transcript, composer, video pane, status bar; actions and shortcuts."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import theme
from .controllers.attachments import AttachmentsController, Pending
from .controllers.chat import ChatController
from .controllers.models import ModelsController, human_bytes
from .paths import AppPaths
from .store import AttachmentKind, MessageState, Store, StoreError, ThinkingMode
from .views.answer import warm_up
from .views.composer import Composer, local_paths
from .views.first_run import FirstRunPage
from .views.model_picker import ModelPicker
from .views.settings import SettingsDialog
from .views.transcript import TranscriptView
from .views.video_pane import VideoPane
from .workers import EngineClient

log = logging.getLogger(__name__)

ROLE_ID = Qt.ItemDataRole.UserRole
UNDO_MS = 10_000
MEDIA_FILTER = ("Images, PDFs and videos (*.png *.jpg *.jpeg *.webp *.gif *.bmp *.tif *.tiff *.heic *.avif "
                "*.pdf *.mp4 *.mov *.m4v *.avi *.mkv *.webm);;All files (*)")


class Banner(QFrame):
    """A one-line message above the transcript with optional action and a close button."""

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName(name)
        row = QHBoxLayout(self)
        row.setContentsMargins(12, 6, 8, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.label, 1)
        self.action = QPushButton()
        self.action.hide()
        row.addWidget(self.action)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        row.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self._callback = None
        self.action.clicked.connect(self._act)
        self.hide()

    def show_message(self, text: str, action: str = "", callback=None, timeout_ms: int = 0) -> None:
        self.label.setText(text)
        self.action.setText(action)
        self.action.setVisible(bool(action))
        self._callback = callback
        self.show()
        if timeout_ms:
            self._timer.start(timeout_ms)
        else:
            self._timer.stop()

    def _act(self) -> None:
        callback, self._callback = self._callback, None
        self.hide()
        if callback:
            callback()

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() or not self.isHidden() else ""


class MainWindow(QMainWindow):
    def __init__(self, paths: AppPaths, *, engine_factory=None, reload_last: bool = True):
        super().__init__()
        self.paths = paths.ensure()
        self.setWindowTitle("QwenDesk")
        self.resize(1200, 800)
        self.setAcceptDrops(True)
        self.colors = theme.current()
        self.store = Store(paths.database, paths.attachments)
        purged = self.store.purge_deleted()
        self.engine = EngineClient(paths.engine_state, engine_factory, self)
        for cid in purged:
            self.engine.forget(cid)
        if purged:
            log.info("removed %d conversations deleted last time", len(purged))
        self.chat = ChatController(self.store, self.engine, self)
        self.models = ModelsController(self.store, self.engine, paths, self)
        self.attachments = AttachmentsController(self.store, paths.data / "pasted", self)
        self._loading = False
        self._last_stats = None
        self._build()
        self._connect()
        self._build_actions()
        self.refresh_conversations()
        self.chat.new_conversation()
        self._update_page()
        self.models.rescan()
        if reload_last:
            QTimer.singleShot(0, self.models.reload_last)
        QTimer.singleShot(50, self, lambda: warm_up(self.colors.markdown))

    # --- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        # Sidebar
        sidebar = QFrame()
        sidebar.setObjectName("Sidebar")
        sidebar.setMinimumWidth(220)
        sidebar.setMaximumWidth(360)
        side = QVBoxLayout(sidebar)
        side.setContentsMargins(8, 10, 8, 8)
        self.new_button = QPushButton("New chat")
        side.addWidget(self.new_button)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search all chats")
        self.search.setClearButtonEnabled(True)
        side.addWidget(self.search)
        self.conversation_list = QListWidget()
        self.conversation_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.conversation_list.setEditTriggers(QListWidget.EditTrigger.EditKeyPressed)
        self.conversation_list.setWordWrap(True)
        side.addWidget(self.conversation_list, 1)
        splitter.addWidget(sidebar)
        # Main column
        main = QWidget()
        column = QVBoxLayout(main)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        header = QFrame()
        header.setObjectName("Composer")
        head = QHBoxLayout(header)
        head.setContentsMargins(16, 6, 12, 6)
        self.title_label = QLabel("New chat")
        font = self.title_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        self.title_label.setFont(font)
        head.addWidget(self.title_label, 1)
        self.thinking_combo = QComboBox()
        self.thinking_combo.addItem("Thinking on", ThinkingMode.ON)
        self.thinking_combo.addItem("Thinking off", ThinkingMode.OFF)
        self.thinking_combo.addItem("Thinking budget", ThinkingMode.BUDGET)
        self.thinking_combo.setToolTip("Per chat: let the model think first, answer directly, or cap its thinking")
        head.addWidget(self.thinking_combo)
        self.settings_button = QToolButton()
        self.settings_button.setText("⚙")
        self.settings_button.setToolTip("Chat settings: system prompt, thinking, sampling (Ctrl+,)")
        head.addWidget(self.settings_button)
        self.model_button = QPushButton("No model")
        self.model_button.setToolTip("Choose, load or unload a model")
        head.addWidget(self.model_button)
        column.addWidget(header)
        self.error_banner = Banner("ErrorBanner")
        column.addWidget(self.error_banner)
        self.info_banner = Banner("Banner")
        column.addWidget(self.info_banner)
        self.demo_banner = Banner("Banner")
        column.addWidget(self.demo_banner)
        self.pages = QStackedWidget()
        self.first_run = FirstRunPage()
        self.transcript = TranscriptView(self.colors.markdown)
        self.pages.addWidget(self.first_run)
        self.pages.addWidget(self.transcript)
        column.addWidget(self.pages, 1)
        self.composer = Composer()
        column.addWidget(self.composer)
        splitter.addWidget(main)
        self.video_pane = VideoPane()
        self.video_pane.hide()
        splitter.addWidget(self.video_pane)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        splitter.setSizes([260, 900, 0])
        self.setCentralWidget(splitter)
        # Status bar
        bar = self.statusBar()
        self.status_model = QLabel("No model loaded")
        self.status_memory = QLabel()
        self.status_speed = QLabel()
        self.status_context = QLabel()
        self.load_progress = QProgressBar()
        self.load_progress.setMaximumWidth(220)
        self.load_progress.setRange(0, 1000)
        self.load_progress.hide()
        for widget in (self.status_model, self.load_progress):
            bar.addWidget(widget)
        for widget in (self.status_speed, self.status_context, self.status_memory):
            bar.addPermanentWidget(widget)

    def _connect(self) -> None:
        c, m, a = self.chat, self.models, self.attachments
        self.new_button.clicked.connect(self.new_chat)
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(150)
        self._search_timer.timeout.connect(self.refresh_conversations)
        self.conversation_list.itemClicked.connect(self._open_item)
        self.conversation_list.itemActivated.connect(self._open_item)
        self.conversation_list.itemChanged.connect(self._item_renamed)
        self.conversation_list.customContextMenuRequested.connect(self._conversation_menu)
        self.thinking_combo.activated.connect(self._thinking_changed)
        self.settings_button.clicked.connect(self.open_settings)
        self.model_button.clicked.connect(self.open_model_picker)
        # chat
        c.conversationsChanged.connect(self.refresh_conversations)
        c.conversationOpened.connect(self._on_opened)
        c.messageAppended.connect(self._on_message)
        c.messagesRemoved.connect(self.transcript.remove_from)
        c.progress.connect(lambda mid, d, t: self._with(mid, lambda w: w.set_progress(d, t)))
        c.thinkingDelta.connect(lambda mid, text: self._with(mid, lambda w: w.append_thinking(text)))
        c.answerStarted.connect(lambda mid, s: self._with(mid, lambda w: w.start_answer(s)))
        c.answerDelta.connect(lambda mid, text: self._with(mid, lambda w: w.append_answer(text)))
        c.statsReady.connect(self._on_stats)
        c.streamFinished.connect(self._on_finished)
        c.busyChanged.connect(self._on_busy)
        c.errorOccurred.connect(self.show_error)
        c.deleted.connect(self._on_deleted)
        self.transcript.editSubmitted.connect(c.edit_and_resend)
        self.transcript.regenerateRequested.connect(c.regenerate)
        self.transcript.copied.connect(lambda _t: self.statusBar().showMessage("Copied", 1500))
        # composer
        self.composer.sendRequested.connect(self.send)
        self.composer.stopRequested.connect(c.stop)
        self.composer.attachRequested.connect(self.pick_files)
        self.composer.imagePasted.connect(a.add_image)
        self.composer.filesDropped.connect(a.add_paths)
        self.composer.removeAttachment.connect(a.remove)
        self.composer.pagesChanged.connect(lambda key, f, l: a.update(key, first_page=f, last_page=l))
        self.composer.attachmentClicked.connect(self._attachment_clicked)
        # attachments
        a.added.connect(self._on_attachment)
        a.changed.connect(self.composer.update_chip)
        a.removed.connect(self._on_attachment_removed)
        a.cleared.connect(self.composer.clear_chips)
        a.errorOccurred.connect(self.show_error)
        a.busyChanged.connect(lambda busy: self.composer.set_status("Preparing attachment…" if busy else ""))
        self.video_pane.rangeChanged.connect(
            lambda key, s, e, fps: a.update(key, start_s=s, end_s=e, fps=fps))
        # models
        m.loadStarted.connect(self._on_load_started)
        m.loadProgress.connect(self._on_load_progress)
        m.modelLoaded.connect(self._on_loaded)
        m.modelUnloaded.connect(self._on_unloaded)
        m.loadFailed.connect(self._on_load_failed)
        m.errorOccurred.connect(self.show_error)
        m.modelsChanged.connect(lambda _e: self._update_page())
        m.demoBuilding.connect(self._on_demo_building)
        self.first_run.chooseModel.connect(self.open_model_picker)
        self.first_run.addFolder.connect(self._add_folder)
        self.first_run.useDemo.connect(m.use_demo)

    def _build_actions(self) -> None:
        def action(text: str, shortcuts, slot, menu: QMenu | None = None) -> QAction:
            act = QAction(text, self)
            if shortcuts:
                act.setShortcuts([QKeySequence(s) for s in shortcuts])
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.triggered.connect(slot)
            self.addAction(act)
            if menu is not None:
                menu.addAction(act)
            return act

        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        edit_menu = menus.addMenu("&Edit")
        chat_menu = menus.addMenu("&Chat")
        model_menu = menus.addMenu("&Model")
        self.act_new = action("New chat", [QKeySequence.StandardKey.New], self.new_chat, file_menu)
        self.act_attach = action("Attach files…", ["Ctrl+O"], self.pick_files, file_menu)
        self.act_export = action("Export chat as Markdown…", ["Ctrl+Shift+E"], self.export_dialog, file_menu)
        file_menu.addSeparator()
        action("Quit", [QKeySequence.StandardKey.Quit], self.close, file_menu)
        self.act_find = action("Search chats", [QKeySequence.StandardKey.Find], self.focus_search, edit_menu)
        self.act_copy_last = action("Copy last answer", ["Ctrl+Shift+C"], self.copy_last_answer, edit_menu)
        action("Paste", [], self._paste, None)
        self.act_stop = action("Stop generating", ["Esc"], self.chat.stop, chat_menu)
        self.act_regenerate = action("Regenerate answer", ["Ctrl+R"], self.chat.regenerate, chat_menu)
        self.act_settings = action("Chat settings…", [QKeySequence.StandardKey.Preferences, "Ctrl+,"],
                                   self.open_settings, chat_menu)
        chat_menu.addSeparator()
        action("Rename chat", ["F2"], self.rename_current, chat_menu)
        action("Delete chat", [], self.delete_current, chat_menu)
        action("Choose model…", ["Ctrl+L"], self.open_model_picker, model_menu)
        action("Unload model", [], self.models.unload, model_menu)
        action("Add model folder…", [], self._add_folder, model_menu)
        action("Use the demo model (random weights)", [], self.models.use_demo, model_menu)

    # --- conversations ------------------------------------------------------------------------
    def refresh_conversations(self) -> None:
        query = self.search.text().strip()
        self.conversation_list.blockSignals(True)
        self.conversation_list.clear()
        if query:
            for hit in self.chat.search(query):
                snippet = hit.snippet.replace("\n", " ")
                item = QListWidgetItem(f"{hit.title}\n{snippet}")
                item.setData(ROLE_ID, hit.conversation_id)
                item.setToolTip(snippet)
                self.conversation_list.addItem(item)
            if self.conversation_list.count() == 0:
                item = QListWidgetItem("No matches")
                item.setFlags(Qt.ItemFlag.NoItemFlags)
                self.conversation_list.addItem(item)
        else:
            for summary in self.chat.conversations():
                item = QListWidgetItem(summary.title)
                item.setData(ROLE_ID, summary.id)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.conversation_list.addItem(item)
                if summary.id == self.chat.current_id:
                    item.setSelected(True)
                    self.conversation_list.setCurrentItem(item)
        self.conversation_list.blockSignals(False)

    def _open_item(self, item: QListWidgetItem) -> None:
        cid = item.data(ROLE_ID)
        if cid and cid != self.chat.current_id:
            self.chat.open(cid)

    def _item_renamed(self, item: QListWidgetItem) -> None:
        cid = item.data(ROLE_ID)
        if cid:
            self.chat.rename(cid, item.text())
            if cid == self.chat.current_id:
                self.title_label.setText(item.text())

    def _conversation_menu(self, pos) -> None:
        item = self.conversation_list.itemAt(pos)
        if item is None or not item.data(ROLE_ID):
            return
        cid = item.data(ROLE_ID)
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self.conversation_list.editItem(item))
        menu.addAction("Export as Markdown…", lambda: self.export_dialog(cid))
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.chat.delete(cid))
        menu.exec(self.conversation_list.mapToGlobal(pos))

    def rename_current(self) -> None:
        item = self.conversation_list.currentItem()
        if item is not None and item.data(ROLE_ID):
            self.conversation_list.editItem(item)

    def delete_current(self) -> None:
        if self.chat.current_id:
            self.chat.delete(self.chat.current_id)

    def _on_deleted(self, cid: str, title: str) -> None:
        self.info_banner.show_message(f"Deleted “{title}”.", "Undo", lambda: self.chat.undo_delete(cid), UNDO_MS)

    def new_chat(self) -> None:
        self.chat.new_conversation()
        self.composer.edit.setFocus()

    def focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def _on_opened(self, cid: str, messages: list) -> None:
        summary = self.store.conversation(cid) if cid else None
        self.title_label.setText(summary.title if summary else "New chat")
        self.transcript.set_messages(messages)
        self.transcript.set_streaming(self.chat.busy)
        self._sync_thinking_combo()
        self._update_page()
        if not self.search.text():
            self.refresh_conversations()

    def _on_message(self, message) -> None:
        if message.conversation_id == self.chat.current_id:
            self.transcript.append(message)
            self.transcript.set_streaming(self.chat.busy or message.state is MessageState.STREAMING)
        summary = self.store.conversation(message.conversation_id)
        if summary:
            self.title_label.setText(summary.title)

    def _with(self, message_id: int, fn) -> None:
        widget = self.transcript.widget_for(message_id)
        if widget is not None:
            fn(widget)

    def _on_stats(self, message_id: int, stats) -> None:
        self._with(message_id, lambda w: w.set_stats(stats))
        self._last_stats = stats
        self.status_speed.setText(f"{stats.decode_tps:.1f} tok/s")
        used = stats.prompt_tokens + stats.generated_tokens
        self.status_context.setText(f"Context {used:,} / {self.models.context_tokens:,}")
        self._update_memory(stats.peak_memory_bytes)

    def _on_finished(self, message_id: int, state, error: str) -> None:
        self._with(message_id, lambda w: w.finish(state, error))
        self.transcript.set_streaming(False)

    def _on_busy(self, busy: bool) -> None:
        self.composer.set_busy(busy)
        self.transcript.set_streaming(busy)
        self.thinking_combo.setEnabled(True)

    # --- sending ------------------------------------------------------------------------------
    def send(self, text: str) -> bool:
        if self.attachments.busy:
            self.show_error("Wait a moment: an attachment is still being prepared.")
            return False
        if self.attachments.items and self.attachments.model_is_vision is False:
            self.show_error(self.attachments.text_only_refusal())
            return False
        if self.video_pane.busy:
            self.video_pane.cancel()
        attachments = tuple(p.stored for p in self.attachments.items)
        if self.chat.send(text, attachments):
            self.attachments.take()
            self.composer.clear_text()
            self.video_pane.hide()
            self.error_banner.hide()
            return True
        return False

    def copy_last_answer(self) -> None:
        widget = self.transcript.last_answer()
        if widget is not None:
            QGuiApplication.clipboard().setText(widget.answer_markdown())
            self.statusBar().showMessage("Copied the last answer", 1500)

    # --- attachments --------------------------------------------------------------------------
    def pick_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Attach images, PDFs or videos", str(Path.home()),
                                                MEDIA_FILTER)
        if files:
            self.attachments.add_paths([Path(f) for f in files])

    def _paste(self) -> None:
        mime = QGuiApplication.clipboard().mimeData()
        if mime is not None and (mime.hasImage() or local_paths(mime)):
            self.composer.edit.insertFromMimeData(mime)
        else:
            self.composer.edit.paste()

    def _on_attachment(self, pending: Pending) -> None:
        self.composer.add_chip(pending)
        if pending.kind is AttachmentKind.VIDEO:
            self.video_pane.open(pending)

    def _on_attachment_removed(self, key: int) -> None:
        self.composer.remove_chip(key)
        if self.video_pane.key == key:
            self.video_pane.cancel()
            self.video_pane.hide()

    def _attachment_clicked(self, key: int) -> None:
        pending = self.attachments.get(key)
        if pending is not None and pending.kind is AttachmentKind.VIDEO:
            self.video_pane.open(pending)

    def open_files(self, paths: list[Path]) -> None:
        """Files the system opened with QwenDesk (Dock drop, "Open With", command line): attach them."""
        self.attachments.add_paths(paths)
        self.show()
        self.raise_()
        self.activateWindow()

    # A drop anywhere on the window is a drop on the composer.
    def dragEnterEvent(self, event) -> None:
        self.composer.dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        self.composer.dropEvent(event)

    # --- settings -----------------------------------------------------------------------------
    def _sync_thinking_combo(self) -> None:
        mode = self.chat.settings().thinking
        self.thinking_combo.setCurrentIndex(self.thinking_combo.findData(mode))

    def _thinking_changed(self, index: int) -> None:
        from dataclasses import replace

        mode = self.thinking_combo.itemData(index)
        self.chat.set_settings(replace(self.chat.settings(), thinking=mode))

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.chat.settings(), self,
                                title="Chat settings" if self.chat.current_id else "Settings for new chats")
        if dialog.exec():
            self.chat.set_settings(dialog.value())
            self._sync_thinking_combo()

    def export_dialog(self, cid: str | None = None) -> None:
        cid = cid or self.chat.current_id
        if not cid:
            self.show_error("Open a chat to export it.")
            return
        summary = self.store.conversation(cid)
        default = str(Path.home() / f"{_safe_filename(summary.title if summary else 'chat')}.md")
        path, _ = QFileDialog.getSaveFileName(self, "Export chat as Markdown", default, "Markdown (*.md)")
        if not path:
            return
        answer = QMessageBox.question(self, "Export", "Include the model's thinking?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        self.export(cid, Path(path), answer == QMessageBox.StandardButton.Yes)

    def export(self, cid: str, path: Path, include_thinking: bool) -> Path | None:
        try:
            out = self.chat.export_markdown(cid, path, include_thinking)
        except StoreError as error:
            self.show_error(str(error))
            return None
        self.statusBar().showMessage(f"Exported to {out}", 4000)
        return out

    # --- models -------------------------------------------------------------------------------
    def open_model_picker(self) -> None:
        ModelPicker(self.models, self).exec()

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a Qwen3.5 MLX model folder", str(Path.home()))
        if folder:
            self.models.add_folder(Path(folder))
            self.models.load(Path(folder))

    def _on_load_started(self, name: str) -> None:
        self._loading = True
        self.load_progress.setValue(0)
        self.load_progress.show()
        self.status_model.setText(f"Loading {name}…")
        self.model_button.setText(f"Loading {name}…")
        self.first_run.status.setText(f"Loading {name}…")
        self._update_page()

    def _on_load_progress(self, stage: str, fraction: float) -> None:
        self.load_progress.setValue(int(fraction * 1000))
        self.load_progress.setFormat(f"{stage} %p%")

    def _on_loaded(self, info) -> None:
        self._loading = False
        self.load_progress.hide()
        self.chat.model_loaded = True
        self.attachments.set_model(info.name, info.is_vision)
        kind = "vision" if info.is_vision else "text-only"
        bits = info.precision
        self.status_model.setText(f"{info.name} · {bits} · {kind}")
        self.model_button.setText(info.name)
        self.first_run.status.setText("")
        self._update_memory(0)
        if self.models.is_demo(info):
            self.demo_banner.show_message("Demo model: random weights. Its answers are gibberish; use it to try "
                                          "the interface, then choose a real Qwen3.5 model.",
                                          "Choose model…", self.open_model_picker)
        else:
            self.demo_banner.hide()
        self._update_page()

    def _on_unloaded(self) -> None:
        self.chat.model_loaded = False
        self.attachments.set_model("", None)
        self.status_model.setText("No model loaded")
        self.model_button.setText("No model")
        self.status_memory.setText("")
        self.demo_banner.hide()
        self._update_page()

    def _on_load_failed(self, message: str, kind: str) -> None:
        self._loading = False
        self.load_progress.hide()
        info = self.models.loaded_info
        self.status_model.setText(f"{info.name}" if info else "No model loaded")
        self.model_button.setText(info.name if info else "No model")
        self.first_run.status.setText("")
        prefix = {"memory": "This model does not fit in memory. ", "checkpoint": "This model cannot be used. "}
        self.show_error(prefix.get(kind, "") + message, "Choose model…", self.open_model_picker)
        self._update_page()

    def _on_demo_building(self, building: bool) -> None:
        if building:
            self.first_run.status.setText("Building the demo model (a few seconds)…")
            self.status_model.setText("Building the demo model…")
        self.first_run.demo_button.setEnabled(not building)

    def _update_memory(self, peak: int) -> None:
        info = self.models.loaded_info
        if info is None:
            self.status_memory.setText("")
            return
        text = f"Weights {human_bytes(info.weight_bytes)}"
        if peak:
            text += f" · peak {human_bytes(peak)}"
        self.status_memory.setText(text)

    def _update_page(self) -> None:
        no_model = self.models.loaded_info is None and not self._loading
        no_history = not self.chat.current_id
        show_first_run = no_model and no_history and self.models.scanned and not self.models.entries
        self.pages.setCurrentWidget(self.first_run if show_first_run else self.transcript)
        self.composer.setEnabled(True)

    # --- feedback -----------------------------------------------------------------------------
    def show_error(self, message: str, action: str = "", callback=None) -> None:
        log.info("shown to the user: %s", message)
        self.error_banner.show_message(message, action, callback)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.chat.stop()
        self.video_pane.cancel()
        self.engine.shutdown()
        # Deliver the engine's last (queued) events so a stopped answer is saved as stopped.
        from PySide6.QtCore import QCoreApplication

        QCoreApplication.sendPostedEvents()
        QCoreApplication.processEvents()
        self.chat.flush()
        self.store.close()
        super().closeEvent(event)

    def sizeHint(self) -> QSize:
        return QSize(1200, 800)


def _safe_filename(title: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in " -_." else "_" for ch in title).strip()
    return cleaned[:60] or "chat"
