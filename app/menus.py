"""The main window's menu bar: every action with its shortcut, the standard Edit actions on the focused
text field, and the actions on the focused message (or the last one) of the transcript."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QApplication, QLineEdit, QMenu, QPlainTextEdit, QTextEdit, QWidget

from . import theme

if TYPE_CHECKING:
    from .views.message import MessageWidget
    from .window import MainWindow

Key = QKeySequence.StandardKey

# Edit ▸ …: (label, standard key, the text widget's slot); the slot acts on the focused text field.
EDIT_ACTIONS = (
    ("Undo", Key.Undo, "undo"),
    ("Redo", Key.Redo, "redo"),
    ("Cut", Key.Cut, "cut"),
    ("Copy", Key.Copy, "copy"),
    ("Paste", Key.Paste, "paste"),
    ("Select All", Key.SelectAll, "selectAll"),
)
CHANGES_TEXT = {"undo", "redo", "cut", "paste"}  # not offered on a read-only field


def focused_text_field() -> QWidget | None:
    """The focused line edit or text editor (the composer, the search field, an answer, a dialog's field)."""
    widget = QApplication.focusWidget()
    return widget if isinstance(widget, QLineEdit | QTextEdit | QPlainTextEdit) else None


def edit_enabled(widget: QWidget | None, slot: str) -> bool:
    if widget is None:
        return False
    if slot in CHANGES_TEXT and widget.isReadOnly():
        return False
    if slot in ("undo", "redo") and not isinstance(widget, QLineEdit):
        document = widget.document()
        return document.isUndoAvailable() if slot == "undo" else document.isRedoAvailable()
    if slot in ("undo", "redo"):
        return widget.isUndoAvailable() if slot == "undo" else widget.isRedoAvailable()
    return True


class Menus:
    """Builds the menu bar on ``window`` and keeps the actions tests and the window refer to."""

    def __init__(self, window: MainWindow):
        self.window = w = window
        bar = w.menuBar()
        file_menu, self.edit_menu = bar.addMenu("&File"), bar.addMenu("&Edit")
        view_menu, chat_menu = bar.addMenu("&View"), bar.addMenu("&Chat")
        model_menu, settings_menu, help_menu = (
            bar.addMenu("&Model"),
            bar.addMenu("&Settings"),
            bar.addMenu("&Help"),
        )
        action = self._action
        self.new = action("New chat", [Key.New], w.new_chat, file_menu)
        self.attach = action(
            "Attach files…", ["Ctrl+O"], w.attachments_presenter.pick_files, file_menu
        )
        self.export = action(
            "Export chat as Markdown…",
            ["Ctrl+Shift+E"],
            lambda: w.chat_list_actions.export_one(),
            file_menu,
        )
        file_menu.addSeparator()
        action("Quit", [Key.Quit], w.close, file_menu)
        # Edit: the standard actions on the focused text field, then the app's own.
        self.edit_actions: dict[str, QAction] = {}
        for label, key, slot in EDIT_ACTIONS:
            self.edit_actions[slot] = action(
                label, [key], lambda _c=False, s=slot: self._edit(s), self.edit_menu
            )
        self.edit_menu.aboutToShow.connect(self._sync_edit_actions)
        self.edit_menu.addSeparator()
        self.find = action("Search chats", [Key.Find], w.focus_search, self.edit_menu)
        self.copy_last = action(
            "Copy last answer", ["Ctrl+Shift+C"], self.copy_message, self.edit_menu
        )
        self.copy_last.setStatusTip("Copy the focused message, or else the last answer")
        # Chat
        self.stop = action("Stop generating", ["Esc"], w.chat.stop, chat_menu)
        self.regenerate = action("Regenerate answer", ["Ctrl+R"], w.chat.regenerate, chat_menu)
        self.continue_ = action(
            "Continue answer", ["Ctrl+Shift+Return"], self.continue_answer, chat_menu
        )
        self.edit_message = action("Edit message", ["Ctrl+E"], self.begin_edit, chat_menu)
        self.toggle_thinking = action(
            "Show or hide thinking", ["Ctrl+T"], self.toggle_thinking_block, chat_menu
        )
        self.settings = action(
            "Chat settings…", [Key.Preferences, "Ctrl+,"], w.open_settings, chat_menu
        )
        chat_menu.addSeparator()
        action("Rename chat", ["F2"], w.rename_current, chat_menu)
        action("Delete chat", [], lambda: w.chat_list_actions.delete_current(), chat_menu)
        action("Choose model…", ["Ctrl+L"], w.models_presenter.open_model_picker, model_menu)
        action("Get models…", [], w.models_presenter.open_downloads, model_menu)
        action("Unload model", [], w.models.unload, model_menu)
        action("Add model folder…", [], w.models_presenter.add_folder, model_menu)
        action("Use the demo model (random weights)", [], w.models.use_demo, model_menu)
        self.engine = action("Engine…", [], w.models_presenter.open_engine_settings, settings_menu)
        self.local_api = action("Local API…", [], w.open_local_api, settings_menu)
        self.sidebar = action("Show sidebar", ["Ctrl+B"], w.set_sidebar_visible, view_menu)
        self.sidebar.setCheckable(True)
        self.sidebar.setChecked(not w.sidebar.isHidden())
        theme_menu = view_menu.addMenu("Theme")
        group = QActionGroup(w)
        self.themes: dict[theme.Scheme, QAction] = {}
        for scheme, label in (
            (theme.Scheme.SYSTEM, "System"),
            (theme.Scheme.LIGHT, "Light"),
            (theme.Scheme.DARK, "Dark"),
        ):
            act = action(label, [], lambda _checked=False, s=scheme: w.set_theme(s), theme_menu)
            act.setCheckable(True)
            act.setChecked(scheme is w.theme_choice)
            group.addAction(act)
            self.themes[scheme] = act
        self.about = action("About QwenDesk", [], w.show_about, help_menu)
        self.about.setMenuRole(QAction.MenuRole.AboutRole)

    def _action(self, text: str, shortcuts, slot, menu: QMenu) -> QAction:
        act = QAction(text, self.window)
        if shortcuts:
            act.setShortcuts([QKeySequence(s) for s in shortcuts])
        act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        act.triggered.connect(slot)
        self.window.addAction(act)
        menu.addAction(act)
        return act

    # --- Edit -----------------------------------------------------------------------------------
    def _edit(self, slot: str) -> None:
        widget = focused_text_field()
        if edit_enabled(widget, slot):
            getattr(widget, slot)()
        elif (
            widget is None
            and slot == "copy"
            and self.window.transcript.focused_message() is not None
        ):
            self.copy_message()  # Ctrl+C on a focused message copies it

    def _sync_edit_actions(self) -> None:
        widget = focused_text_field()
        for slot, act in self.edit_actions.items():
            act.setEnabled(edit_enabled(widget, slot))
        if widget is None and self.window.transcript.focused_message() is not None:
            self.edit_actions["copy"].setEnabled(True)

    # --- the focused message ----------------------------------------------------------------------
    def _message(self, role: str) -> MessageWidget | None:
        """The focused message if it has ``role``, else the last message that has it."""
        transcript = self.window.transcript
        focused = transcript.focused_message()
        if focused is not None and focused.role == role:
            return focused
        return next((w for w in reversed(transcript.widgets) if w.role == role), None)

    def copy_message(self) -> None:
        focused = self.window.transcript.focused_message()
        if focused is None:
            self.window.copy_last_answer()
            return
        QGuiApplication.clipboard().setText(focused.answer_markdown())
        self.window.statusBar().showMessage("Copied the message", 1500)

    def continue_answer(self) -> None:
        answer = self._message("assistant")
        if answer is not None:
            self.window.chat.continue_answer(answer.message_id)

    def begin_edit(self) -> None:
        message = self._message("user")
        if message is not None and message.edit_button.isEnabled():
            message.begin_edit()

    def toggle_thinking_block(self) -> None:
        focused = self.window.transcript.focused_message()
        answers = (
            [focused]
            if focused is not None and focused.role == "assistant"
            else reversed(self.window.transcript.widgets)
        )
        answer = next(
            (w for w in answers if w.role == "assistant" and not w.thinking.isHidden()), None
        )
        if answer is not None:
            answer.thinking.toggle()
