"""The sidebar: "New chat", the search field and the list of chats (or of search hits)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

ROLE_ID = Qt.ItemDataRole.UserRole


class Sidebar(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Sidebar")
        self.setMinimumWidth(220)
        self.setMaximumWidth(360)
        side = QVBoxLayout(self)
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

    def show_hits(self, hits) -> None:
        """Search results: title and snippet per hit, or a disabled "No matches" row."""
        lst = self.conversation_list
        lst.blockSignals(True)
        lst.clear()
        for hit in hits:
            snippet = hit.snippet.replace("\n", " ")
            item = QListWidgetItem(f"{hit.title}\n{snippet}")
            item.setData(ROLE_ID, hit.conversation_id)
            item.setToolTip(snippet)
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
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            lst.addItem(item)
            if summary.id == current_id:
                item.setSelected(True)
                lst.setCurrentItem(item)
        lst.blockSignals(False)
