"""The sidebar: "New chat", the search field and the list of chats (or of search hits)."""

from __future__ import annotations

import re

from PySide6.QtCore import QItemSelectionModel, QPointF, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPixmap
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
        side.addWidget(self.conversation_list, 1)
        self._pin_icon: QIcon | None = None

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
                lst.setCurrentItem(item, QItemSelectionModel.SelectionFlag.NoUpdate if keep
                                   else QItemSelectionModel.SelectionFlag.ClearAndSelect)
            item.setSelected(summary.id in keep or (not keep and summary.id == current_id))
        lst.blockSignals(False)

    def pin_icon(self) -> QIcon:
        if self._pin_icon is None:
            self._pin_icon = pin_icon(self.palette().color(QPalette.ColorRole.Text))
        return self._pin_icon
