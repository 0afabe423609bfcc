"""The scrolling transcript: message widgets created lazily, newest at the bottom.

Long histories stay fast because only the last ``PAGE`` messages get widgets when a chat opens; older
ones are created a page at a time when the user scrolls to the top (or clicks "Show earlier messages").
While an answer streams, the view sticks to the bottom unless the user scrolled up.

Keyboard: Tab enters the transcript at the message focused last (the newest at first), so it never jumps
to the top; Up/Down/Home/End move between messages; Tab and Shift+Tab leave it. The buttons inside a
message take no focus (the Chat menu's shortcuts act on the focused message), so Space never clicks one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from PySide6.QtCore import Qt, QTimer, Signal, SignalInstance
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..render import Palette, Renderer
from ..store import ChatSettings, MessageState, StoredAttachment, StoredMessage
from .grounding import GroundingImage, chat_images, chat_videos
from .message import MessageWidget
from .tool_call import add_call_blocks

PAGE = 30
READING_WIDTH = 900  # the message column's widest; wider windows centre it


class ChatSource(Protocol):
    """What the transcript follows: the chat controller (app.controllers.chat.ChatController)."""

    conversationOpened: SignalInstance
    messageAppended: SignalInstance
    messagesRemoved: SignalInstance
    versionShown: SignalInstance
    progress: SignalInstance
    thinkingDelta: SignalInstance
    answerStarted: SignalInstance
    answerDelta: SignalInstance
    statsReady: SignalInstance
    streamFinished: SignalInstance
    busyChanged: SignalInstance
    current_id: str | None
    busy: bool

    def settings(self) -> ChatSettings: ...


class TranscriptView(QScrollArea):
    editSubmitted = Signal(int, str)
    regenerateRequested = Signal()
    # message id: this answer (the last, cut short) is to be carried on
    continueRequested = Signal(int)
    versionRequested = Signal(int, int)  # message id, step (-1 older, +1 newer)
    copied = Signal(str)

    def __init__(self, palette: Palette, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Transcript")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # in the Tab chain: it hands focus to a message
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAccessibleName("Conversation")
        self._current: MessageWidget | None = None  # the message Tab comes back to
        self.palette_ = palette
        # shared by every answer in the transcript (GUI thread only)
        self._renderer = Renderer(palette)
        self.token_limit = (
            0  # the chat's max answer tokens, to tell a cut-off reply from a finished one
        )
        self.inner = QWidget()
        self.inner.setObjectName("TranscriptInner")
        centre = QHBoxLayout(self.inner)
        centre.setContentsMargins(0, 0, 0, 0)
        self.page = QWidget()  # the reading column
        self.page.setObjectName("TranscriptInner")
        self.page.setMaximumWidth(READING_WIDTH)
        centre.addStretch(1)
        centre.addWidget(self.page, 1000)  # the stretches only take what the column cannot
        centre.addStretch(1)
        self.column = QVBoxLayout(self.page)
        self.column.setContentsMargins(0, 8, 0, 16)
        self.column.setSpacing(2)
        self.earlier = QPushButton("Show earlier messages")
        self.earlier.setFlat(True)
        # Up on the first message loads them too
        self.earlier.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.earlier.clicked.connect(self.load_earlier)
        self.earlier.hide()
        self.column.addWidget(self.earlier, 0, Qt.AlignmentFlag.AlignHCenter)
        self.empty_label = QLabel("Ask anything. Drop images, PDFs or videos here to attach them.")
        self.empty_label.setObjectName("Muted")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.column.addWidget(self.empty_label, 1)
        self.column.addStretch(1)
        self.setWidget(self.inner)
        self.widgets: list[MessageWidget] = []
        self._hidden: list[StoredMessage] = []  # older messages without widgets yet
        self._stick = True
        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range)
        bar.valueChanged.connect(self._on_scroll)

    # --- the chat's messages ---------------------------------------------------------------------
    def follow(self, chat: ChatSource) -> None:
        """Show the chat controller's messages: the chat opened, messages appended, removed or shown at
        another version, and a streaming answer's progress, text, figures and end."""
        chat.conversationOpened.connect(lambda _cid, messages: self._opened(chat, messages))
        chat.messageAppended.connect(lambda message: self._appended(chat, message))
        chat.messagesRemoved.connect(self.remove_from)
        chat.versionShown.connect(self.replace_from)
        chat.progress.connect(
            lambda mid, done, total: self._with(mid, lambda w: w.set_progress(done, total))
        )
        chat.thinkingDelta.connect(
            lambda mid, text: self._with(mid, lambda w: w.append_thinking(text))
        )
        chat.answerStarted.connect(
            lambda mid, seconds: self._with(mid, lambda w: w.start_answer(seconds))
        )
        chat.answerDelta.connect(lambda mid, text: self._with(mid, lambda w: w.append_answer(text)))
        chat.statsReady.connect(lambda mid, stats: self._with(mid, lambda w: w.set_stats(stats)))
        chat.streamFinished.connect(self._finished)
        chat.busyChanged.connect(self.set_streaming)

    def _opened(self, chat: ChatSource, messages: list[StoredMessage]) -> None:
        self.token_limit = chat.settings().generation.max_tokens
        self.set_messages(messages)
        self.set_streaming(chat.busy)

    def _appended(self, chat: ChatSource, message: StoredMessage) -> None:
        if message.conversation_id == chat.current_id:
            self.token_limit = chat.settings().generation.max_tokens
            self.append(message)
            self.set_streaming(chat.busy or message.state is MessageState.STREAMING)

    def _with(self, message_id: int, fn: Callable[[MessageWidget], object]) -> None:
        widget = self.widget_for(message_id)
        if widget is not None:
            fn(widget)

    def _finished(self, message_id: int, state: MessageState, error: str) -> None:
        self._with(message_id, lambda w: w.finish(state, error))
        self.set_streaming(False)

    # --- content ------------------------------------------------------------------------------
    def set_messages(self, messages: list[StoredMessage]) -> None:
        self.clear()
        self._hidden = list(messages[:-PAGE]) if len(messages) > PAGE else []
        for message in messages[-PAGE:]:
            self._add(message)
        self.earlier.setVisible(bool(self._hidden))
        self._update_empty()
        self._refresh_regenerate()
        self.scroll_to_bottom()

    def clear(self) -> None:
        for widget in self.widgets:
            widget.setParent(None)
            widget.deleteLater()
        self.widgets.clear()
        self._hidden.clear()
        self.earlier.hide()
        self._update_empty()

    def append(self, message: StoredMessage) -> MessageWidget:
        widget = self._add(message)
        self._update_empty()
        self._refresh_regenerate()
        self._stick = True
        self.scroll_to_bottom()
        return widget

    def remove_from(self, position: int) -> None:
        keep = []
        for widget in self.widgets:
            if widget.message.position >= position:
                widget.setParent(None)
                widget.deleteLater()
            else:
                keep.append(widget)
        self.widgets = keep
        self._update_empty()
        self._refresh_regenerate()

    def replace_from(self, position: int, messages: list[StoredMessage]) -> None:
        """Another version is shown from ``position`` on: its messages replace those there, the view
        staying where the user is reading."""
        self._stick = False
        self.remove_from(position)
        for message in messages:
            self._add(message)
        self._update_empty()
        self._refresh_regenerate()

    def set_palette(self, palette: Palette) -> None:
        """Colours for answers rendered from now on (the window re-opens the chat to re-render it)."""
        self.palette_ = palette
        self._renderer = Renderer(palette)

    def reveal(self, message_id: int, query: str) -> MessageWidget | None:
        """Scroll to a message (creating earlier pages as needed) and mark ``query`` in it."""
        widget = self.widget_for(message_id)
        while widget is None and self._hidden:
            self.load_earlier()
            widget = self.widget_for(message_id)
        if widget is None:
            return None
        widget.mark(query)
        self._stick = False
        # After the layout has settled (a new page changes every position).
        QTimer.singleShot(0, self, lambda: self._scroll_to(widget))
        return widget

    def _scroll_to(self, widget: MessageWidget) -> None:
        self.inner.layout().activate()
        self._stick = False
        y = widget.mapTo(self.inner, widget.match_point()).y()
        bar = self.verticalScrollBar()
        bar.setValue(max(0, min(bar.maximum(), y - self.viewport().height() // 3)))

    def widget_for(self, message_id: int) -> MessageWidget | None:
        for widget in reversed(self.widgets):
            if widget.message_id == message_id:
                return widget
        return None

    def last_answer(self) -> MessageWidget | None:
        return next((w for w in reversed(self.widgets) if w.role == "assistant"), None)

    def load_earlier(self) -> None:
        if not self._hidden:
            return
        chunk, self._hidden = self._hidden[-PAGE:], self._hidden[:-PAGE]
        bar = self.verticalScrollBar()
        from_bottom = bar.maximum() - bar.value()
        insert_at = 1  # after the "earlier" button
        for offset, message in enumerate(chunk):
            widget = self._make(message)
            self.column.insertWidget(insert_at + offset, widget)
            self.widgets.insert(offset, widget)
        self.earlier.setVisible(bool(self._hidden))
        QTimer.singleShot(0, self, lambda: bar.setValue(bar.maximum() - from_bottom))

    @property
    def hidden_count(self) -> int:
        return len(self._hidden)

    def set_streaming(self, streaming: bool) -> None:
        self._refresh_regenerate(streaming)

    # --- keyboard -----------------------------------------------------------------------------
    def focused_message(self) -> MessageWidget | None:
        """The message holding the keyboard focus (itself or a child of it), if any."""
        widget = QApplication.focusWidget()
        while widget is not None and not isinstance(widget, MessageWidget):
            widget = widget.parentWidget()
        return widget if widget in self.widgets else None

    def focus_message(self, widget: MessageWidget) -> None:
        self._current = widget
        self._stick = widget is self.widgets[-1]
        widget.setFocus(Qt.FocusReason.OtherFocusReason)
        self.ensureWidgetVisible(widget, 0, 0)

    def focusInEvent(self, event) -> None:
        super().focusInEvent(event)
        if (
            event.reason() in (Qt.FocusReason.TabFocusReason, Qt.FocusReason.BacktabFocusReason)
            and self.widgets
        ):
            self.focus_message(self._current if self._current in self.widgets else self.widgets[-1])

    def keyPressEvent(self, event) -> None:
        current = self.focused_message()
        keys = {
            Qt.Key.Key_Up: -1,
            Qt.Key.Key_Down: 1,
            Qt.Key.Key_Home: -(10**9),
            Qt.Key.Key_End: 10**9,
        }
        if (
            current is None
            or event.key() not in keys
            or event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        ):
            super().keyPressEvent(event)
            return
        index = self.widgets.index(current) + keys[event.key()]
        if index < 0 and self._hidden:  # above the first message shown: the next page up
            before = len(self.widgets)
            self.load_earlier() if keys[event.key()] == -1 else self._load_all()
            index += len(self.widgets) - before
        self.focus_message(self.widgets[max(0, min(len(self.widgets) - 1, index))])

    def _load_all(self) -> None:
        while self._hidden:
            self.load_earlier()

    def focusNextPrevChild(self, next: bool) -> bool:
        """Tab / Shift+Tab from a message leave the transcript (to the composer / the header), instead of
        walking the buttons of every message (and scrolling to the first)."""
        if self.focused_message() is None and QApplication.focusWidget() is not self:
            return super().focusNextPrevChild(next)
        widget = self.nextInFocusChain() if next else self.previousInFocusChain()
        while widget is not None and widget is not self:
            if (
                not self.isAncestorOf(widget)
                and widget.isVisible()
                and widget.isEnabled()
                and widget.focusPolicy() & Qt.FocusPolicy.TabFocus
            ):
                widget.setFocus(
                    Qt.FocusReason.TabFocusReason if next else Qt.FocusReason.BacktabFocusReason
                )
                return True
            widget = widget.nextInFocusChain() if next else widget.previousInFocusChain()
        return False

    # --- internals ----------------------------------------------------------------------------
    def _make(self, message: StoredMessage) -> MessageWidget:
        widget = MessageWidget(
            message, self.palette_, token_limit=self.token_limit, renderer=self._renderer
        )
        widget.editSubmitted.connect(self.editSubmitted)
        widget.regenerateRequested.connect(self.regenerateRequested)
        widget.continueRequested.connect(self.continueRequested)
        widget.versionRequested.connect(self.versionRequested)
        widget.copyRequested.connect(self.copied)
        if message.role == "assistant":
            widget.answer.codeCopied.connect(self.copied)
            widget.scrollRequested.connect(lambda child: self.ensureWidgetVisible(child, 0, 40))
            widget.grounding_context = lambda: self._grounding_context(widget)
            if message.state is not MessageState.STREAMING:
                widget.refresh_grounding()
            if message.tool_calls:
                add_call_blocks(widget, message.tool_calls)
        return widget

    def _grounding_context(
        self, widget: MessageWidget
    ) -> tuple[list[GroundingImage], list[StoredAttachment], str]:
        """The chat's images and videos before ``widget``'s answer, and the text of the user turn it replies to."""
        earlier = [
            m
            for m in [*self._hidden, *(w.message for w in self.widgets)]
            if m.position < widget.message.position
        ]
        turn = next((m.text for m in reversed(earlier) if m.role == "user"), "")
        return chat_images(earlier), chat_videos(earlier), turn

    def _add(self, message: StoredMessage) -> MessageWidget:
        widget = self._make(message)
        # Before the empty label and the final stretch.
        self.column.insertWidget(self.column.count() - 2, widget)
        self.widgets.append(widget)
        return widget

    def _refresh_regenerate(self, streaming: bool = False) -> None:
        last = self.widgets[-1] if self.widgets else None
        for widget in self.widgets:
            widget.set_regenerate_visible(widget is last and not streaming)
            widget.versions.set_enabled(not streaming)
            if widget.role == "user":
                widget.edit_button.setEnabled(not streaming)

    def _update_empty(self) -> None:
        self.empty_label.setVisible(not self.widgets and not self._hidden)

    def scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_range(self, _minimum: int, maximum: int) -> None:
        if self._stick:
            self.verticalScrollBar().setValue(maximum)

    def _on_scroll(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._stick = value >= bar.maximum() - 24
        if value == 0 and self._hidden and bar.maximum() > 0:
            self.load_earlier()
