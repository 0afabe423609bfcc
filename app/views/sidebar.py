"""The sidebar: "New chat", the search field and the list of chats (or of search hits)."""

from __future__ import annotations

import re

from PySide6.QtCore import QEvent, QItemSelectionModel, QPointF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStyledItemDelegate,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

ROLE_ID = Qt.ItemDataRole.UserRole
ROLE_MESSAGE = Qt.ItemDataRole.UserRole + 1  # a search hit's message id
ROLE_MATCH = Qt.ItemDataRole.UserRole + 2  # the text that matched, as the message has it
ROLE_PINNED = Qt.ItemDataRole.UserRole + 3  # a pinned chat (kept at the top)


def matched_text(snippet: str) -> str:
    """The first match the search marked in its snippet ("…the [quokka] is…" → "quokka")."""
    match = re.search(r"\[([^\[\]]+)\]", snippet)
    return match.group(1) if match else ""


def pin_icon(color: QColor) -> QIcon:
    """A small push-pin (drawn: the emoji is missing from the fonts of many Linux desktops)."""
    pixmap = QPixmap(16, 16)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    painter.drawEllipse(QPointF(8, 5), 4, 4)
    painter.drawRect(5, 8, 6, 2)
    painter.setPen(color)
    painter.drawLine(8, 10, 8, 15)
    painter.end()
    return QIcon(pixmap)


class _ElidingDelegate(QStyledItemDelegate):
    """Rows as wide as the list, not as their text: the view elides instead of scrolling sideways."""

    def sizeHint(self, option, index) -> QSize:
        hint = super().sizeHint(option, index)
        return QSize(1, hint.height())


class Sidebar(QFrame):
    renameRequested = Signal()  # F2 where the list has no title to edit

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Sidebar")
        self.setMinimumWidth(180)
        self.setMaximumWidth(420)
        side = QVBoxLayout(self)
        side.setContentsMargins(8, 10, 8, 8)
        self.new_button = QPushButton("New chat")
        self.new_button.setAccessibleName("New chat")
        side.addWidget(self.new_button)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search all chats")
        self.search.setClearButtonEnabled(True)
        # a file dropped here is an attachment (the window's), not a query
        self.search.setAcceptDrops(False)
        self.search.setAccessibleName("Search all chats")
        for button in self.search.findChildren(
            QToolButton
        ):  # the clear button setClearButtonEnabled adds
            button.setAccessibleName("Clear the search")
        side.addWidget(self.search)
        self.conversation_list = QListWidget()
        self.conversation_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.conversation_list.setEditTriggers(QListWidget.EditTrigger.EditKeyPressed)
        # Long titles end in "…" (the full title is the tooltip): the list never scrolls sideways.
        self.conversation_list.setWordWrap(False)
        self.conversation_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.conversation_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.conversation_list.setItemDelegate(_ElidingDelegate(self.conversation_list))
        self.conversation_list.setAccessibleName("Chats")
        # A right-click opens the row's menu without selecting the row: the highlighted chat stays the one
        # the main pane shows.
        self.conversation_list.viewport().installEventFilter(self)
        side.addWidget(self.conversation_list, 1)
        self._pin_icon: QIcon | None = None
        self.search.installEventFilter(self)  # Esc clears it (before the window's Esc = Stop)
        self.conversation_list.installEventFilter(self)  # F2 on a search hit: renameRequested

    def eventFilter(self, watched, event) -> bool:
        """Esc in a search field with text clears it; the window's Esc (Stop) does not take the key.
        F2 on a row that cannot be edited (a search hit is a message) asks the window to rename the chat.
        A right-click on the list does not select its row: the highlighted chat stays the one shown."""
        if (
            watched is self.conversation_list
            and event.type() == QEvent.Type.KeyPress
            and event.key() == Qt.Key.Key_F2
        ):
            item = self.conversation_list.currentItem()
            if item is None or not item.flags() & Qt.ItemFlag.ItemIsEditable:
                self.renameRequested.emit()
                return True
        is_esc = (
            event.type() in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress)
            and event.key() == Qt.Key.Key_Escape
        )
        if watched is self.search and is_esc and self.search.text():
            if event.type() == QEvent.Type.KeyPress:
                self.search.clear()
            event.accept()
            return True
        if (
            watched is self.conversation_list.viewport()
            and event.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonDblClick)
            and event.button() == Qt.MouseButton.RightButton
        ):
            return True  # a right-click selects nothing (the context-menu event still comes)
        return super().eventFilter(watched, event)

    def show_hits(self, hits) -> None:
        """Search results: title and snippet per hit, or a disabled "No matches" row."""
        lst = self.conversation_list
        lst.blockSignals(True)
        lst.clear()
        for hit in hits:
            snippet = hit.snippet.replace("\n", " ")
            item = QListWidgetItem(f"{hit.title}\n{snippet}")
            item.setData(ROLE_ID, hit.conversation_id)
            item.setData(ROLE_MESSAGE, hit.message_id)
            item.setData(ROLE_MATCH, matched_text(hit.snippet))
            item.setToolTip(f"{hit.title}\n{snippet}")
            lst.addItem(item)
        if lst.count() == 0:
            item = QListWidgetItem("No matches")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            lst.addItem(item)
        lst.blockSignals(False)

    def show_conversations(self, summaries, current_id: str | None) -> None:
        """The chats, pinned ones first (bold, with a pin). A multi-selection survives the refresh;
        otherwise the open chat is the one selected."""
        lst = self.conversation_list
        selected = lst.selectedItems()
        keep = {item.data(ROLE_ID) for item in selected} if len(selected) > 1 else set()
        lst.blockSignals(True)
        lst.clear()
        for summary in summaries:
            item = QListWidgetItem(summary.title)
            item.setData(ROLE_ID, summary.id)
            item.setData(ROLE_PINNED, summary.pinned)
            item.setToolTip(f"{summary.title} (pinned)" if summary.pinned else summary.title)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            if summary.pinned:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
                item.setIcon(self.pin_icon())
            lst.addItem(item)
            if summary.id == current_id:
                lst.setCurrentItem(
                    item,
                    QItemSelectionModel.SelectionFlag.NoUpdate
                    if keep
                    else QItemSelectionModel.SelectionFlag.ClearAndSelect,
                )
            item.setSelected(summary.id in keep or (not keep and summary.id == current_id))
        lst.blockSignals(False)

    def pin_icon(self) -> QIcon:
        if self._pin_icon is None:
            self._pin_icon = pin_icon(self.palette().color(QPalette.ColorRole.Text))
        return self._pin_icon
