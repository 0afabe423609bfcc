"""The sidebar: "New chat", the search field and the list of chats (or of search hits)."""

from __future__ import annotations

import re

from PySide6.QtCore import QEvent, QSize, Qt
from PySide6.QtWidgets import (
    QFrame,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

ROLE_ID = Qt.ItemDataRole.UserRole
ROLE_MESSAGE = Qt.ItemDataRole.UserRole + 1  # a search hit's message id
ROLE_MATCH = Qt.ItemDataRole.UserRole + 2  # the text that matched, as the message has it


def matched_text(snippet: str) -> str:
    """The first match the search marked in its snippet ("…the [quokka] is…" → "quokka")."""
    match = re.search(r"\[([^\[\]]+)\]", snippet)
    return match.group(1) if match else ""


class _ElidingDelegate(QStyledItemDelegate):
    """Rows as wide as the list, not as their text: the view elides instead of scrolling sideways."""

    def sizeHint(self, option, index) -> QSize:
        hint = super().sizeHint(option, index)
        return QSize(1, hint.height())


class Sidebar(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Sidebar")
        self.setMinimumWidth(180)
        self.setMaximumWidth(420)
        side = QVBoxLayout(self)
        side.setContentsMargins(8, 10, 8, 8)
        self.new_button = QPushButton("New chat")
        side.addWidget(self.new_button)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search all chats")
        self.search.setClearButtonEnabled(True)
        self.search.setAcceptDrops(False)  # a file dropped here is an attachment (the window's), not a query
        side.addWidget(self.search)
        self.conversation_list = QListWidget()
        self.conversation_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.conversation_list.setEditTriggers(QListWidget.EditTrigger.EditKeyPressed)
        # Long titles end in "…" (the full title is the tooltip): the list never scrolls sideways.
        self.conversation_list.setWordWrap(False)
        self.conversation_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.conversation_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.conversation_list.setItemDelegate(_ElidingDelegate(self.conversation_list))
        # A right-click opens the row's menu without selecting the row: the highlighted chat stays the one
        # the main pane shows.
        self.conversation_list.viewport().installEventFilter(self)
        side.addWidget(self.conversation_list, 1)

    def eventFilter(self, watched, event) -> bool:
        if (event.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonDblClick)
                and event.button() == Qt.MouseButton.RightButton):
            return True  # (the context-menu event still comes)
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
        lst = self.conversation_list
        lst.blockSignals(True)
        lst.clear()
        for summary in summaries:
            item = QListWidgetItem(summary.title)
            item.setData(ROLE_ID, summary.id)
            item.setToolTip(summary.title)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            lst.addItem(item)
            if summary.id == current_id:
                item.setSelected(True)
                lst.setCurrentItem(item)
        lst.blockSignals(False)
