"""Wires the tools into the window: the consent cards and call blocks in the transcript, the header's
per-chat Tools menu, and Settings ▸ Tools."""

from __future__ import annotations

import shiboken6
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QToolButton

from engine_mlx.tools.config import BUILTIN_FILES
from engine_mlx.tools.loop import ToolCallProposed

from .controllers.tools import ToolsController
from .store import StoredToolCall
from .views.consent_card import ConsentCard
from .views.tool_call import ToolCallBlock, tool_area


class ToolsWiring:
    """Keeps the consent cards on screen by call id until their call finishes."""

    def __init__(self, window):
        self.window = window
        self.tools = tools = ToolsController(
            window.store, window.paths.data, window.paths.logs, window
        )
        window.chat.tools = tools
        self.cards: dict[str, ConsentCard] = {}
        self.waiting: dict[
            str, tuple[int, ToolCallProposed]
        ] = {}  # call id -> (answer id, the call)
        tools.consentRequested.connect(self._ask)
        # Another chat opened meanwhile (or this one re-rendered): a waiting card comes back with its answer.
        window.chat.conversationOpened.connect(lambda *_: self._show_waiting())
        window.chat.versionShown.connect(lambda *_: self._show_waiting())
        tools.callFinished.connect(self._finished)
        tools.errorOccurred.connect(window.show_error)
        tools.stepLimitReached.connect(
            lambda _mid, steps: window.banner.show_message(
                f"The model called tools {steps} times in a row; QwenDesk stopped the loop there. Raise the step "
                "limit in Settings ▸ Tools if the task needs more.",
                timeout_ms=10000,
            )
        )
        if tools.config_error:
            window.show_error(
                f"{tools.config_error} Fix it in Settings ▸ Tools (the raw JSON tab)."
            )
        # The header's per-chat choice of servers.
        self.button = QToolButton()
        self.button.setText("Tools")
        self.button.setAccessibleName("Tools for this chat")
        self.button.setToolTip("Which tool servers this chat may use")
        self.button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QMenu(self.button)
        self.menu.aboutToShow.connect(self.fill_menu)
        self.button.setMenu(self.menu)
        for signal in (window.chat.conversationOpened, tools.statusChanged):
            signal.connect(lambda *_: self.sync_button())
        header = window.header.layout()
        header.insertWidget(header.indexOf(window.settings_button), self.button)
        settings_menu = next(
            m for m in window.menuBar().findChildren(QMenu) if m.title() == "&Settings"
        )
        self.settings_action = QAction("Tools…", window)
        self.settings_action.triggered.connect(self.open_settings)
        settings_menu.addAction(self.settings_action)

    # --- the transcript -----------------------------------------------------------------------
    def _ask(self, message_id: int, proposed: ToolCallProposed) -> None:
        self.waiting[proposed.call_id] = (message_id, proposed)
        widget = self.window.transcript.widget_for(message_id)
        if widget is None:  # the chat is not on screen: its card shows when it is opened
            self.window.show_error(
                f"A chat wants to run {proposed.server} ▸ {proposed.tool}: open it to answer."
            )
            return
        self._show_card(widget, proposed)

    def _show_waiting(self) -> None:
        for call_id, (message_id, proposed) in self.waiting.items():
            card = self.cards.get(call_id)
            alive = card is not None and shiboken6.isValid(card) and card.window() is self.window
            widget = self.window.transcript.widget_for(message_id)
            if not alive and widget is not None:
                self._show_card(widget, proposed)

    def _show_card(self, widget, proposed: ToolCallProposed) -> None:
        widget.progress_label.hide()  # the prompt was read; now the turn waits for the user
        card = ConsentCard(proposed)
        card.answered.connect(self.tools.answer)
        tool_area(widget).addWidget(card)
        self.cards[proposed.call_id] = card
        self.window.transcript.ensureWidgetVisible(card, 0, 40)
        # The keyboard goes to the card, unless the user is typing the next message.
        composer = self.window.composer.edit
        if not (composer.hasFocus() and composer.toPlainText().strip()):
            # (once the card is laid out and shown: a hidden widget takes no focus)
            QTimer.singleShot(
                0,
                card.run_button,
                lambda: card.run_button.setFocus(Qt.FocusReason.OtherFocusReason),
            )

    def _finished(self, message_id: int, call: StoredToolCall) -> None:
        self.waiting.pop(call.call_id, None)
        card = self.cards.pop(call.call_id, None)
        if card is not None and shiboken6.isValid(card):
            card.setParent(None)
            card.deleteLater()
        widget = self.window.transcript.widget_for(message_id)
        if widget is not None:
            tool_area(widget).addWidget(ToolCallBlock(call))

    # --- the header's menu ----------------------------------------------------------------------
    def fill_menu(self) -> None:
        self.menu.clear()
        cid = self.window.chat.current_id
        available = self.tools.available()
        chosen = self.tools.chat_servers(cid)
        for name in available:
            label = "Files (built-in)" if name == BUILTIN_FILES else name
            action = self.menu.addAction(label)
            action.setCheckable(True)
            action.setChecked(name in chosen)
            action.toggled.connect(lambda on, n=name: self._toggle(n, on))
        if not available:
            none = self.menu.addAction(
                "No tools yet: add a server or share a folder in Settings ▸ Tools"
            )
            none.setEnabled(False)
        self.menu.addSeparator()
        self.menu.addAction(self.settings_action)

    def _toggle(self, name: str, on: bool) -> None:
        cid = self.window.chat.current_id
        chosen = self.tools.chat_servers(cid)
        self.tools.set_chat_servers(cid, (chosen | {name}) if on else (chosen - {name}))
        self.sync_button()

    def sync_button(self) -> None:
        """The button says how many servers this chat uses (a chat without tools reads plain "Tools"), and
        the context meter counts their tools again."""
        meter = getattr(self.window, "context_meter", None)
        if meter is not None:
            meter.history_changed()
        count = len(self.tools.chat_servers(self.window.chat.current_id))
        self.button.setText(f"Tools · {count}" if count else "Tools")

    def open_settings(self):
        from .views.tools_settings import ToolsSettingsDialog

        dialog = self.window.tools_dialog = ToolsSettingsDialog(self.tools, self.window)
        dialog.show()
        return dialog


def install_tools(window) -> ToolsWiring:
    return ToolsWiring(window)
