"""The sidebar's presenter: the list of chats, search over all of them, and a row's open, rename and menu."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QListWidgetItem, QMenu

from ..store import SearchHit
from ..views.sidebar import ROLE_ID, ROLE_MATCH, ROLE_MESSAGE

if TYPE_CHECKING:
    from ..window import MainWindow

SEARCH_DELAY_MS = 150  # typing settles before a search runs


class SidebarPresenter(QObject):
    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.chat = window.chat
        self.sidebar = window.sidebar
        self.search = window.sidebar.search
        self.list = window.sidebar.conversation_list
        self.search_timer = QTimer(self)
        self.search_timer.setSingleShot(True)
        self.search_timer.setInterval(SEARCH_DELAY_MS)
        self.search_timer.timeout.connect(self.refresh)
        self.search.textChanged.connect(lambda _t: self.search_timer.start())
        self.list.itemClicked.connect(self._open_item)
        self.list.itemActivated.connect(self._open_item)
        self.list.itemChanged.connect(self._item_renamed)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.sidebar.renameRequested.connect(self.rename_current)
        self.chat.conversationsChanged.connect(self.refresh)
        self.chat.searchFinished.connect(self._on_search_finished)

    def refresh(self) -> None:
        query = self.search.text().strip()
        if query:
            self.chat.search(query)  # off the GUI thread; the hits arrive in _on_search_finished
        else:
            self.sidebar.show_conversations(self.chat.conversations(), self.chat.current_id)

    def _on_search_finished(self, query: str, hits: list[SearchHit]) -> None:
        if query and query == self.search.text().strip():
            self.sidebar.show_hits(hits)

    def _open_item(self, item: QListWidgetItem) -> None:
        cid, message_id, match = item.data(ROLE_ID), item.data(ROLE_MESSAGE), item.data(ROLE_MATCH)
        if not self.window.chat_list_actions.opens_on_click(item):
            return  # a Ctrl/Shift-click selecting several chats
        if cid and cid != self.chat.current_id:
            self.chat.open(cid)  # (this refreshes the list: the item is gone)
        if cid and message_id and cid == self.chat.current_id:
            # A search hit: scroll to the message and mark the match.
            self.window.transcript.reveal(int(message_id), match or self.search.text().strip())

    def _item_renamed(self, item: QListWidgetItem) -> None:
        cid, title = item.data(ROLE_ID), item.text().strip()
        if cid and title:
            self.chat.rename(cid, title)  # (this refreshes the list: the item is gone)
            if cid == self.chat.current_id:
                self.window.title_label.setText(title)

    def _context_menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is not None and item.data(ROLE_ID):
            self.menu(item).exec(self.list.mapToGlobal(pos))

    def menu(self, item: QListWidgetItem) -> QMenu:
        """The right-click menu of a sidebar row (a chat, a search hit in one, or a selection of chats):
        rename (editable rows only), pin, export, delete."""
        return self.window.chat_list_actions.fill_menu(QMenu(self.window), item)

    def rename_current(self) -> None:
        if self.search.text():
            self.search.clear()  # search hits are messages: the chat is renamed in the list of chats
            self.search_timer.stop()
            self.refresh()
        item = self.list.currentItem()
        if item is not None and item.data(ROLE_ID) and item.flags() & Qt.ItemFlag.ItemIsEditable:
            self.list.editItem(item)

    def focus_search(self) -> None:
        self.window.set_sidebar_visible(True)
        self.search.setFocus()
        self.search.selectAll()
