"""The main window: sidebar of chats, transcript, composer, video pane, status bar; actions and shortcuts."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from engine_mlx.sizes import human_bytes

from . import theme
from .chat_list_actions import ChatListActions
from .controllers.attachments import AttachmentsController, Pending
from .controllers.chat import ChatController
from .controllers.downloads import DownloadsController
from .controllers.local_api import LocalApiController
from .controllers.models import ModelsController
from .menus import Menus
from .meter_wiring import install_context_meter
from .paths import AppPaths
from .store import AttachmentKind, MessageState, Store, StoreError, ThinkingMode
from .tools_wiring import install_tools
from .views.about import about_box
from .views.answer import warm_up
from .views.banner import Banner
from .views.composer import Composer
from .views.downloads import AddVisionDialog, DownloadsDialog
from .views.drop_zone import DropZone
from .views.first_run import FirstRunPage
from .views.header import ChatHeader
from .views.local_api import ApiStatusIndicator, LocalApiDialog
from .views.model_picker import ModelPicker
from .views.settings import SettingsDialog
from .views.sidebar import ROLE_ID, ROLE_MATCH, ROLE_MESSAGE, Sidebar
from .views.status_bar import StatusBar
from .views.transcript import TranscriptView
from .views.video_pane import VideoPane
from .workers import EngineClient

log = logging.getLogger(__name__)

UNDO_MS = 10_000


def attach_filter() -> str:
    """The file dialog's filter: exactly the suffixes the engine accepts (one list, in engine_mlx.media)."""
    from engine_mlx import media

    def patterns(suffixes) -> str:
        return " ".join(f"*{s}" for s in sorted(suffixes))

    return ";;".join([
        f"Everything QwenDesk can attach ({patterns(media.ATTACHABLE_SUFFIXES)})",
        f"Images, PDFs and videos ({patterns(media.IMAGE_SUFFIXES | media.PDF_SUFFIXES | media.VIDEO_SUFFIXES)})",
        f"Text and code files ({patterns(media.TEXT_SUFFIXES)})",
    ])


class MainWindow(QMainWindow):
    def __init__(self, paths: AppPaths, *, reload_last: bool = True):
        super().__init__()
        self.paths = paths.ensure()
        self.setWindowTitle("QwenDesk")
        self.resize(1200, 800)
        self.setAcceptDrops(True)
        # Window geometry, splitter sizes, sidebar and theme: in the data folder, beside the database.
        self.ui_settings = QSettings(str(self.paths.data / "ui.ini"), QSettings.Format.IniFormat)
        self.theme_choice = self._stored_theme()
        if self.theme_choice is not theme.Scheme.SYSTEM:
            theme.apply(QGuiApplication.instance(), self.theme_choice)
        self.colors = theme.current()
        self.store = Store(paths.database, paths.attachments)
        purged = self.store.purge_deleted()
        self.engine = EngineClient(paths.engine_state, self)
        for cid in purged:
            self.engine.forget(cid)
        if purged:
            log.info("removed %d conversations deleted last time", len(purged))
        self.chat = ChatController(self.store, self.engine, self)
        self.models = ModelsController(self.store, self.engine, paths, self)
        self.attachments = AttachmentsController(self.store, paths.data / "pasted", self)
        self.attachments.remove_leftover_scratch()
        self.local_api = LocalApiController(self.engine.worker.shared, self.store, self)
        self.local_api.failed.connect(self.show_error)
        self.downloads = DownloadsController(parent=self)
        self.downloads.modelAdded.connect(lambda folder: self.models.add_folder(Path(folder)))
        self._loading = False
        self._closed = False
        self._build()
        self._connect()
        self._build_actions()
        self.context_meter = install_context_meter(self)
        self.tools_wiring = install_tools(self)  # app/tools_wiring.py: MCP servers, consent cards, Settings ▸ Tools
        self.tools = self.tools_wiring.tools
        self.chat_list_actions = ChatListActions(self)
        self._restore_layout()
        self.refresh_conversations()
        self.chat.reopen_last()
        self._update_page()
        self.models.rescan()
        if reload_last:
            QTimer.singleShot(0, self.models.reload_last)
        if self.local_api.remembered_on:  # off by default; on again only if the user left it on
            QTimer.singleShot(0, lambda: self.local_api.set_enabled(True))
        QTimer.singleShot(50, self, lambda: warm_up(self.colors.markdown))

    # --- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.splitter = splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        self.sidebar = Sidebar()
        self.new_button = self.sidebar.new_button
        self.search = self.sidebar.search
        self.conversation_list = self.sidebar.conversation_list
        splitter.addWidget(self.sidebar)
        # Main column
        main = QWidget()
        column = QVBoxLayout(main)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        self.header = ChatHeader()
        self.title_label = self.header.title_label
        self.thinking_combo = self.header.thinking_combo
        self.settings_button = self.header.settings_button
        self.model_button = self.header.model_button
        column.addWidget(self.header)
        # One message area: errors, undo and the demo notice replace each other (the newest wins).
        self.banner = Banner()
        self.error_banner = self.info_banner = self.demo_banner = self.banner
        column.addWidget(self.banner)
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
        self.drop_zone = DropZone(self)
        # Status bar
        self.status_bar = bar = StatusBar()
        self.setStatusBar(bar)
        self.status_model = bar.status_model
        self.status_memory = bar.status_memory
        self.status_speed = bar.status_speed
        self.status_context = bar.status_context
        self.load_progress = bar.load_progress
        self.status_api = ApiStatusIndicator(self.local_api)
        bar.addPermanentWidget(self.status_api)

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
        self.sidebar.renameRequested.connect(self.rename_current)
        self.thinking_combo.activated.connect(self._thinking_changed)
        self.settings_button.clicked.connect(self.open_settings)
        self.model_button.clicked.connect(self.open_model_picker)
        # chat
        c.conversationsChanged.connect(self.refresh_conversations)
        c.searchFinished.connect(self._on_search_finished)
        c.conversationOpened.connect(self._on_opened)
        c.messageAppended.connect(self._on_message)
        c.messagesRemoved.connect(self.transcript.remove_from)
        c.versionShown.connect(self.transcript.replace_from)
        c.progress.connect(lambda mid, d, t: self._with(mid, lambda w: w.set_progress(d, t)))
        c.thinkingDelta.connect(lambda mid, text: self._with(mid, lambda w: w.append_thinking(text)))
        c.answerStarted.connect(lambda mid, s: self._with(mid, lambda w: w.start_answer(s)))
        c.answerDelta.connect(lambda mid, text: self._with(mid, lambda w: w.append_answer(text)))
        c.statsReady.connect(self._on_stats)
        c.streamFinished.connect(self._on_finished)
        c.busyChanged.connect(self._on_busy)
        c.errorOccurred.connect(self.show_error)
        c.mediaRefused.connect(self._attachment_error)
        c.deleted.connect(self._on_deleted)
        hints = QGuiApplication.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(self._system_scheme_changed)
        self.transcript.editSubmitted.connect(c.edit_and_resend)
        self.transcript.regenerateRequested.connect(c.regenerate)
        self.transcript.continueRequested.connect(c.continue_answer)
        self.transcript.versionRequested.connect(c.show_version)
        self.transcript.copied.connect(lambda _t: self.statusBar().showMessage("Copied", 1500))
        # composer
        self.composer.sendRequested.connect(self.send)
        self.composer.stopRequested.connect(c.stop)
        self.composer.attachRequested.connect(self.pick_files)
        self.composer.imagePasted.connect(a.add_image)
        self.composer.filesDropped.connect(a.add_paths)
        self.composer.removeAttachment.connect(a.remove)
        self.composer.pagesChanged.connect(lambda key, first, last: a.update(key, first_page=first, last_page=last))
        self.composer.attachmentClicked.connect(self._attachment_clicked)
        # attachments
        a.added.connect(self._on_attachment)
        a.changed.connect(self.composer.update_chip)
        a.removed.connect(self._on_attachment_removed)
        a.cleared.connect(self.composer.clear_chips)
        a.errorOccurred.connect(self._attachment_error)
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
        m.severalFound.connect(self._several_models_found)
        m.modelsChanged.connect(lambda _e: self._update_page())
        m.demoBuilding.connect(self._on_demo_building)
        self.first_run.chooseModel.connect(self.open_model_picker)
        self.first_run.getModels.connect(self.open_downloads)
        self.first_run.addFolder.connect(self._add_folder)
        self.first_run.useDemo.connect(m.use_demo)

    def _build_actions(self) -> None:
        self.menus = m = Menus(self)  # app/menus.py: the menu bar, its shortcuts, the Edit and message actions
        self.act_new, self.act_attach, self.act_export, self.act_find = m.new, m.attach, m.export, m.find
        self.act_copy_last, self.act_stop, self.act_regenerate, self.act_settings = \
            m.copy_last, m.stop, m.regenerate, m.settings
        self.act_local_api, self.act_sidebar, self.theme_actions, self.act_about = \
            m.local_api, m.sidebar, m.themes, m.about

    # --- conversations ------------------------------------------------------------------------
    def refresh_conversations(self) -> None:
        query = self.search.text().strip()
        if query:
            self.chat.search(query)  # off the GUI thread; the hits arrive in _on_search_finished
        else:
            self.sidebar.show_conversations(self.chat.conversations(), self.chat.current_id)

    def _on_search_finished(self, query: str, hits: list) -> None:
        if query and query == self.search.text().strip():
            self.sidebar.show_hits(hits)

    def _open_item(self, item: QListWidgetItem) -> None:
        cid, message_id, match = item.data(ROLE_ID), item.data(ROLE_MESSAGE), item.data(ROLE_MATCH)
        if not self.chat_list_actions.opens_on_click(item):
            return  # a Ctrl/Shift-click selecting several chats
        if cid and cid != self.chat.current_id:
            self.chat.open(cid)  # (this refreshes the list: the item is gone)
        if cid and message_id and cid == self.chat.current_id:
            # A search hit: scroll to the message and mark the match.
            self.transcript.reveal(int(message_id), match or self.search.text().strip())

    def _item_renamed(self, item: QListWidgetItem) -> None:
        cid, title = item.data(ROLE_ID), item.text().strip()
        if cid and title:
            self.chat.rename(cid, title)  # (this refreshes the list: the item is gone)
            if cid == self.chat.current_id:
                self.title_label.setText(title)

    def _conversation_menu(self, pos) -> None:
        item = self.conversation_list.itemAt(pos)
        if item is not None and item.data(ROLE_ID):
            self.conversation_menu(item).exec(self.conversation_list.mapToGlobal(pos))

    def conversation_menu(self, item: QListWidgetItem) -> QMenu:
        """The right-click menu of a sidebar row (a chat, a search hit in one, or a selection of chats):
        rename (editable rows only), pin, export, delete."""
        return self.chat_list_actions.fill_menu(QMenu(self), item)

    def rename_current(self) -> None:
        if self.search.text():
            self.search.clear()  # search hits are messages: the chat is renamed in the list of chats
            self._search_timer.stop()
            self.refresh_conversations()
        item = self.conversation_list.currentItem()
        if item is not None and item.data(ROLE_ID) and item.flags() & Qt.ItemFlag.ItemIsEditable:
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
        self.set_sidebar_visible(True)
        self.search.setFocus()
        self.search.selectAll()

    def _on_opened(self, cid: str, messages: list) -> None:
        summary = self.store.conversation(cid) if cid else None
        self.title_label.setText(summary.title if summary else "New chat")
        self.transcript.token_limit = self.chat.settings().max_tokens
        self.transcript.set_messages(messages)
        self.transcript.set_streaming(self.chat.busy)
        # The status bar shows this chat's figures, never the previous chat's.
        latest = next((m.stats for m in reversed(messages) if m.stats is not None), None)
        if latest is not None:
            self.status_bar.show_stats(latest, self.models.context_tokens)
        else:
            self.status_bar.clear_stats()
        self._sync_thinking_combo()
        self._update_page()
        if not self.search.text():
            self.refresh_conversations()

    def _on_message(self, message) -> None:
        if message.conversation_id == self.chat.current_id:
            self.transcript.token_limit = self.chat.settings().max_tokens
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
        if self.transcript.widget_for(message_id) is None:
            return  # an answer in a chat that is not on screen
        self._with(message_id, lambda w: w.set_stats(stats))
        self.status_bar.show_stats(stats, self.models.context_tokens)
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
        if self.video_pane.busy:
            self.video_pane.cancel()
        attachments = tuple(p.stored for p in self.attachments.items)
        if self.chat.send(text, attachments, preparing=self.attachments.busy,
                          model_is_vision=self.attachments.model_is_vision):
            self.attachments.take()
            self.composer.clear_text()
            self.video_pane.hide()
            self.banner.dismiss(errors_only=True)
            return True
        return False

    def copy_last_answer(self) -> None:
        widget = self.transcript.last_answer()
        text = widget.answer_markdown() if widget is not None else ""
        if text.strip():
            QGuiApplication.clipboard().setText(text)
            self.statusBar().showMessage("Copied the last answer", 1500)
        else:
            self.statusBar().showMessage("There is no answer to copy in this chat yet.", 3000)

    # --- attachments --------------------------------------------------------------------------
    def pick_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Attach images, PDFs, videos or text files",
                                                str(Path.home()), attach_filter())
        if files:
            self.attachments.add_paths([Path(f) for f in files])

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

    # A drop anywhere on the window is a drop on the composer; the drop zone lights up meanwhile.
    def dragEnterEvent(self, event) -> None:
        self.composer.dragEnterEvent(event)
        if event.isAccepted():
            self.drop_zone.cover(self.centralWidget())

    def dragLeaveEvent(self, event) -> None:
        self.drop_zone.hide()
        super().dragLeaveEvent(event)

    def dropEvent(self, event) -> None:
        self.drop_zone.hide()
        self.composer.dropEvent(event)

    # --- view ---------------------------------------------------------------------------------
    def set_sidebar_visible(self, visible: bool) -> None:
        focus = QApplication.focusWidget()
        self.sidebar.setVisible(visible)
        self.act_sidebar.setChecked(visible)
        if not visible and focus is not None and self.sidebar.isAncestorOf(focus):
            self.composer.edit.setFocus()

    def _stored_theme(self) -> theme.Scheme:
        try:
            return theme.Scheme(str(self.ui_settings.value("theme", theme.Scheme.SYSTEM.value)))
        except ValueError:
            return theme.Scheme.SYSTEM

    def set_theme(self, scheme: theme.Scheme) -> None:
        """Apply now (every view follows) and remember it for the next start."""
        self.theme_choice = scheme
        self.ui_settings.setValue("theme", scheme.value)
        self.theme_actions[scheme].setChecked(True)
        self._apply_colors(theme.apply(QGuiApplication.instance(), scheme))

    def _system_scheme_changed(self, _scheme) -> None:
        if self.theme_choice is theme.Scheme.SYSTEM:
            self._apply_colors(theme.apply(QGuiApplication.instance(), theme.Scheme.SYSTEM))

    def _apply_colors(self, colors: theme.Colors) -> None:
        if colors == self.colors:
            return
        self.colors = colors
        self.transcript.set_palette(colors.markdown)
        if self.chat.current_id and not self.chat.busy:
            self.chat.open(self.chat.current_id)  # re-render the answers (code colours) in the new theme

    def show_about(self) -> None:
        self.about = about_box(self.paths, self)
        self.about.open()

    def _restore_layout(self) -> None:
        s = self.ui_settings
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        sizes = s.value("window/splitter")
        if isinstance(sizes, list) and len(sizes) == 3:
            try:
                self.splitter.setSizes([int(x) for x in sizes])
            except (TypeError, ValueError):
                pass
        self.set_sidebar_visible(str(s.value("window/sidebar", "true")).lower() != "false")

    def _save_layout(self) -> None:
        s = self.ui_settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/splitter", [str(x) for x in self.splitter.sizes()])
        s.setValue("window/sidebar", "true" if not self.sidebar.isHidden() else "false")
        s.sync()

    # --- settings -----------------------------------------------------------------------------
    def _sync_thinking_combo(self) -> None:
        mode = self.chat.settings().thinking
        self.thinking_combo.setCurrentIndex(self.thinking_combo.findData(mode))

    def _thinking_changed(self, index: int) -> None:
        from dataclasses import replace

        mode = ThinkingMode(self.thinking_combo.itemData(index))  # itemData gives back a plain str
        self.chat.set_settings(replace(self.chat.settings(), thinking=mode))

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.chat.settings(), self, for_new_chats=not self.chat.current_id)
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
        ModelPicker(self.models, self, downloads=self.downloads).exec()

    def open_downloads(self) -> None:
        self.downloads_dialog = DownloadsDialog(self.downloads, self)
        self.downloads_dialog.show()

    def open_add_vision(self, model_dir: Path) -> None:
        self.add_vision_dialog = AddVisionDialog(self.downloads, model_dir, self)
        self.add_vision_dialog.show()

    def _attachment_error(self, message: str) -> None:
        """The text-only refusal offers the way out: add vision to this model."""
        info = self.models.loaded_info
        if self.attachments.model_is_vision is False and info is not None:
            size = self.downloads.known_vision_size(Path(info.path))
            label = f"Add vision (downloads {human_bytes(size)})" if size else "Add vision…"
            self.show_error(message, label, lambda: self.open_add_vision(Path(info.path)))
        else:
            self.show_error(message)

    def _several_models_found(self, count: int) -> None:
        self.statusBar().showMessage(f"That folder holds {count} models: choose one", 5000)
        self.open_model_picker()

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a Qwen3.5 MLX model folder", str(Path.home()))
        if folder:
            self.models.add_folder(Path(folder), load_if_one=True)

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
        self.chat.model_is_vision = info.is_vision
        self.attachments.set_model(info.name, info.is_vision)
        kind = "vision" if info.is_vision else "text-only"
        bits = info.precision
        self.status_model.setText(f"{info.name} · {bits} · {kind}")
        self.model_button.setText(info.name)
        self.first_run.status.setText("")
        self.status_bar.clear_stats()  # the previous model's speed and context are not this one's
        self._update_memory(0)
        if self.models.is_demo(info):
            self.banner.show_message("Demo model: random weights. Its answers are gibberish; use it to try "
                                     "the interface, then choose a real Qwen3.5 model.",
                                     "Choose model…", self.open_model_picker, sticky=True)
        else:
            self.banner.clear_sticky()
        self._update_page()

    def _on_unloaded(self) -> None:
        self.chat.model_loaded = False
        self.chat.model_is_vision = None
        self.attachments.set_model("", None)
        self.status_model.setText("No model loaded")
        self.model_button.setText("No model")
        self.status_memory.setText("")
        self.status_bar.clear_stats()
        self.banner.clear_sticky()
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
        self.banner.show_error(message, action, callback)

    def open_local_api(self) -> LocalApiDialog:
        """Settings ▸ Local API (modeless, so its log stays live while you chat)."""
        dialog = getattr(self, "_local_api_dialog", None)
        if dialog is None:
            dialog = self._local_api_dialog = LocalApiDialog(self.local_api, self)
        dialog.show()
        dialog.raise_()
        return dialog

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closed:
            super().closeEvent(event)
            return
        self._save_layout()
        self.local_api.stop()
        self.chat.stop()
        self.video_pane.cancel()
        self.engine.shutdown()
        self.tools.close()  # every tool server stops: no process outlives the app
        # Deliver the engine's last (queued) events so a stopped answer is saved as stopped.
        from PySide6.QtCore import QCoreApplication

        QCoreApplication.sendPostedEvents()
        QCoreApplication.processEvents()
        while not self.chat.flush():  # e.g. the disk is still full: never drop an answer silently
            answer = QMessageBox.warning(
                self, "QwenDesk", "An answer is not saved yet: the history database cannot be written "
                "(is the disk full?). Free some space and press Retry, or quit without it.",
                QMessageBox.StandardButton.Retry | QMessageBox.StandardButton.Discard,
                QMessageBox.StandardButton.Retry)
            if answer != QMessageBox.StandardButton.Retry:
                break
        self.store.close()
        self._closed = True
        super().closeEvent(event)

    def sizeHint(self) -> QSize:
        return QSize(1200, 800)


def _safe_filename(title: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in " -_." else "_" for ch in title)
    return cleaned[:60].strip(" ._") or "chat"  # "Hi." + ".md" must not read "Hi..md"
