"""The main window: sidebar of chats, transcript, composer, video pane, status bar; actions and shortcuts."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from . import theme
from .chat_list_actions import ChatListActions
from .composer_context import install_composer_context
from .controllers.attachments import AttachmentsController
from .controllers.chat import ChatController
from .controllers.downloads import DownloadsController
from .controllers.local_api import LocalApiController
from .controllers.models import ModelsController
from .menus import Menus
from .meter_wiring import install_context_meter
from .paths import AppPaths
from .presenters.attachments import AttachmentsPresenter
from .presenters.models import ModelsPresenter
from .presenters.sidebar import SidebarPresenter
from .store import Store, StoredMessage, StoredStats, ThinkingMode
from .tools_wiring import install_tools
from .views.about import about_box
from .views.answer import warm_up
from .views.banner import Banner
from .views.composer import Composer
from .views.drop_zone import DropZone
from .views.first_run import FirstRunPage
from .views.header import ChatHeader
from .views.local_api import ApiStatusIndicator, LocalApiDialog
from .views.settings import SettingsDialog
from .views.sidebar import Sidebar
from .views.status_bar import StatusBar
from .views.transcript import TranscriptView
from .views.unsaved import flush_or_ask
from .views.video_pane import VideoPane
from .workers import EngineClient

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    def __init__(self, paths: AppPaths, *, reload_last: bool = True):
        super().__init__()
        self.paths = paths.ensure()
        self.setWindowTitle("QwenDesk")
        self.resize(1200, 800)
        self.setAcceptDrops(True)
        # Window geometry, splitter sizes, sidebar and theme: in the data folder, beside the database.
        self.ui_settings = QSettings(str(self.paths.ui_settings), QSettings.Format.IniFormat)
        self.theme_choice = theme.stored_scheme(self.ui_settings)
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
        self.local_api = LocalApiController(self.engine.shared, self.store, self)
        self.local_api.failed.connect(self.show_error)
        self.local_api.follow(self.models.engine_choice)  # off in server mode
        self.models.engineChanged.connect(lambda: self.local_api.follow(self.models.engine_choice))
        self.downloads = DownloadsController(parent=self)
        self._closed = False
        self._build()
        self._connect()
        self._build_actions()
        self.context_meter = install_context_meter(self)
        # app/tools_wiring.py: MCP servers, consent cards, Settings ▸ Tools
        self.tools_wiring = install_tools(self)
        self.tools = self.tools_wiring.tools
        # app/composer_context.py: the servers' resources in the + menu, their prompts as / commands
        self.composer_context = install_composer_context(self)
        self.chat_list_actions = ChatListActions(self)
        self.set_sidebar_visible(theme.restore_layout(self.ui_settings, self, self.splitter))
        self.refresh_conversations()
        self.chat.reopen_last()
        self.update_page()
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
        c, a = self.chat, self.attachments
        # the messages and a streaming answer: the transcript routes them itself
        self.transcript.follow(c)
        self.sidebar_presenter = SidebarPresenter(self)  # the chat list and search
        self.models_presenter = ModelsPresenter(self)  # loading, the picker, Get models, Add vision
        self.new_button.clicked.connect(self.new_chat)
        self.thinking_combo.activated.connect(self._thinking_changed)
        self.settings_button.clicked.connect(self.open_settings)
        # chat
        c.conversationOpened.connect(self._on_opened)
        c.messageAppended.connect(self._on_message)
        c.statsReady.connect(self._on_stats)
        c.busyChanged.connect(self._on_busy)
        c.errorOccurred.connect(self.show_error)
        c.mediaRefused.connect(self.models_presenter.media_refused)
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
        # the file picker, chips and video pane
        self.attachments_presenter = AttachmentsPresenter(self)
        a.errorOccurred.connect(self.models_presenter.media_refused)

    def _build_actions(self) -> None:
        # app/menus.py: the menu bar, its shortcuts, the Edit and message actions
        self.menus = m = Menus(self)
        self.act_new, self.act_attach, self.act_export = m.new, m.attach, m.export
        self.act_find, self.act_copy_last, self.act_stop = m.find, m.copy_last, m.stop
        self.act_regenerate, self.act_settings = m.regenerate, m.settings
        self.act_local_api, self.act_sidebar, self.act_about = m.local_api, m.sidebar, m.about
        self.theme_actions = m.themes

    # --- conversations ------------------------------------------------------------------------
    def refresh_conversations(self) -> None:
        self.sidebar_presenter.refresh()

    def conversation_menu(self, item: QListWidgetItem) -> QMenu:
        return self.sidebar_presenter.menu(item)

    def rename_current(self) -> None:
        self.sidebar_presenter.rename_current()

    def focus_search(self) -> None:
        self.sidebar_presenter.focus_search()

    def new_chat(self) -> None:
        self.chat.new_conversation()
        self.composer.edit.setFocus()

    def _on_opened(self, cid: str, messages: list[StoredMessage]) -> None:
        summary = self.store.conversation(cid) if cid else None
        self.title_label.setText(summary.title if summary else "New chat")
        # The status bar shows this chat's figures, never the previous chat's.
        latest = next((m.stats for m in reversed(messages) if m.stats is not None), None)
        if latest is not None:
            self.status_bar.show_stats(latest, self.models.context_limit)
        else:
            self.status_bar.clear_stats()
        self._sync_thinking_combo()
        self.update_page()
        if not self.search.text():
            self.refresh_conversations()

    def _on_message(self, message: StoredMessage) -> None:
        summary = self.store.conversation(message.conversation_id)
        if summary:
            self.title_label.setText(summary.title)

    def _on_stats(self, message_id: int, stats: StoredStats) -> None:
        if self.transcript.widget_for(message_id) is not None:  # not an answer in a chat off screen
            self.models_presenter.show_stats(stats)

    def _on_busy(self, busy: bool) -> None:
        self.composer.set_busy(busy)
        self.thinking_combo.setEnabled(True)

    # --- sending ------------------------------------------------------------------------------
    def send(self, text: str) -> bool:
        if self.video_pane.busy:
            self.video_pane.cancel()
        attachments = tuple(p.stored for p in self.attachments.items)
        if self.chat.send(
            text,
            attachments,
            preparing=self.attachments.busy,
            model_is_vision=self.attachments.model_is_vision,
        ):
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

    def set_theme(self, scheme: theme.Scheme) -> None:
        """Apply now (every view follows) and remember it for the next start."""
        self.theme_choice = scheme
        theme.remember_scheme(self.ui_settings, scheme)
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
            # re-render the answers (code colours) in the new theme
            self.chat.open(self.chat.current_id)

    def show_about(self) -> None:
        self.about = about_box(self.paths, self)
        self.about.open()

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

    # --- models -------------------------------------------------------------------------------
    def update_page(self) -> None:
        """The first-run page while there is no model, no chat and no model to choose; else the transcript."""
        no_model = not self.models.has_engine and not self.models_presenter.loading
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
        theme.save_layout(self.ui_settings, self, self.splitter, self.sidebar)
        self.local_api.stop()
        self.chat.stop()
        self.video_pane.cancel()
        self.engine.shutdown()
        self.tools.close()  # every tool server stops: no process outlives the app
        # Deliver the engine's last (queued) events so a stopped answer is saved as stopped.
        from PySide6.QtCore import QCoreApplication

        QCoreApplication.sendPostedEvents()
        QCoreApplication.processEvents()
        flush_or_ask(self, self.chat)  # e.g. the disk is full: never drop an answer silently
        self.store.close()
        self._closed = True
        super().closeEvent(event)

    def sizeHint(self) -> QSize:
        return QSize(1200, 800)
