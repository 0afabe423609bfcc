"""The sidebar's chat list beyond opening a chat: pin and unpin, multi-select (Ctrl/Shift-click), delete with
undo, and export one chat or several at once.

Several chats export as one Markdown file per chat into a folder the user picks (each with its own
``<name>_files/`` folder of attachments, as a single export writes it), not one combined file: every
file stays a complete chat that opens, diffs and shares on its own.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import QAbstractItemView, QFileDialog, QListWidgetItem, QMenu, QMessageBox

from .store import StoreError
from .views.sidebar import ROLE_ID

PIN_SHORTCUT = "Ctrl+Shift+P"
UNDO_MS = 10_000  # how long a deletion can be undone from the banner


class ChatListActions(QObject):
    """Pinning, multi-select delete and export for the window's chat list."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.chat = window.chat
        self.list = window.conversation_list
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.act_pin = QAction("Pin or unpin chat", window)
        self.act_pin.setShortcut(QKeySequence(PIN_SHORTCUT))
        self.act_pin.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.act_pin.triggered.connect(lambda: self.toggle_pin(self.target_ids()))
        window.addAction(self.act_pin)
        chat_menu = next(
            (a.menu() for a in window.menuBar().actions() if a.text() == "&Chat"), None
        )
        if chat_menu is not None:
            chat_menu.addAction(self.act_pin)
        # Delete in the list deletes the selected chats (with one confirmation when there are several).
        self.delete_key = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.list)
        self.delete_key.setContext(Qt.ShortcutContext.WidgetShortcut)
        self.delete_key.activated.connect(lambda: self.delete(self.selected_ids()))
        self.chat.deleted.connect(self._on_deleted)
        self.chat.deletedMany.connect(self._on_deleted_many)

    # --- which chats ----------------------------------------------------------------------------
    def selected_ids(self) -> list[str]:
        """The selected chats, top to bottom."""
        items = sorted(self.list.selectedItems(), key=self.list.row)
        ids = [item.data(ROLE_ID) for item in items if item.data(ROLE_ID)]
        return list(dict.fromkeys(ids))  # a chat has several rows among search hits

    def target_ids(self, item: QListWidgetItem | None = None) -> list[str]:
        """What an action applies to: the selection when ``item`` is part of it (or no item is given),
        else ``item`` alone; the open chat when nothing is selected."""
        selected = self.selected_ids()
        if item is not None and item.data(ROLE_ID):
            return selected if item.isSelected() and len(selected) > 1 else [item.data(ROLE_ID)]
        if selected:
            return selected
        return [self.chat.current_id] if self.chat.current_id else []

    def opens_on_click(self, item: QListWidgetItem) -> bool:
        """A plain click opens the chat; a Ctrl/Shift-click that selects several (or deselects) does not."""
        selected = self.list.selectedItems()
        return len(selected) <= 1 and (not selected or selected[0] is item)

    # --- the menu -------------------------------------------------------------------------------
    def fill_menu(self, menu: QMenu, item: QListWidgetItem) -> QMenu:
        ids = self.target_ids(item)
        several = len(ids) > 1
        if not several and item.flags() & Qt.ItemFlag.ItemIsEditable:
            menu.addAction("Rename", lambda: self.list.editItem(item))
        pinned = self._all_pinned(ids)
        what = f"{len(ids)} chats" if several else "chat"
        pin = menu.addAction(f"{'Unpin' if pinned else 'Pin'} {what}", lambda: self.toggle_pin(ids))
        pin.setShortcut(QKeySequence(PIN_SHORTCUT))
        menu.addAction(
            f"Export {len(ids)} chats as Markdown…" if several else "Export as Markdown…",
            lambda: self.export(ids),
        )
        menu.addSeparator()
        menu.addAction(
            f"Delete {len(ids)} chats…" if several else "Delete", lambda: self.delete(ids)
        )
        return menu

    # --- actions --------------------------------------------------------------------------------
    def _all_pinned(self, ids: list[str]) -> bool:
        summaries = [self.chat.store.conversation(cid) for cid in ids]
        return bool(summaries) and all(s is not None and s.pinned for s in summaries)

    def toggle_pin(self, ids: list[str]) -> None:
        """Pin these chats, or unpin them when all are pinned already."""
        if not ids:
            return
        try:
            self.chat.store.set_pinned(ids, not self._all_pinned(ids))
        except StoreError as error:
            self.window.show_error(str(error))
            return
        self.window.refresh_conversations()

    def delete(self, ids: list[str]) -> None:
        """One chat goes at once (with Undo); several after one confirmation (and one Undo for all)."""
        if len(ids) == 1:
            self.chat.delete(ids[0])
        elif ids:
            answer = QMessageBox.question(
                self.window,
                "Delete chats",
                f"Delete {len(ids)} chats? You can undo this until QwenDesk quits.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel,
            )
            if answer == QMessageBox.StandardButton.Yes:
                self.chat.delete_many(ids)

    def delete_current(self) -> None:
        if self.chat.current_id:
            self.chat.delete(self.chat.current_id)

    def _on_deleted(self, cid: str, title: str) -> None:
        self.window.banner.show_message(
            f"Deleted “{title}”.", "Undo", lambda: self.chat.undo_delete(cid), UNDO_MS
        )

    def _on_deleted_many(self, ids: list[str]) -> None:
        self.window.banner.show_message(
            f"Deleted {len(ids)} chats.", "Undo", lambda: self.chat.undo_delete_many(ids), UNDO_MS
        )

    def export(self, ids: list[str]) -> list[Path]:
        """One chat: the usual save dialog. Several: a folder, then one Markdown file per chat in it."""
        if len(ids) == 1:
            self.export_one(ids[0])
            return []
        if not ids:
            return []
        folder = QFileDialog.getExistingDirectory(
            self.window, f"Export {len(ids)} chats as Markdown into", str(Path.home())
        )
        if not folder:
            return []
        return self.export_to(ids, Path(folder), self._ask_thinking())

    def _ask_thinking(self) -> bool:
        answer = QMessageBox.question(
            self.window,
            "Export",
            "Include the model's thinking?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def export_one(self, cid: str | None = None) -> None:
        """File ▸ Export: a save dialog for one chat (the open one unless given)."""
        cid = cid or self.chat.current_id
        if not cid:
            self.window.show_error("Open a chat to export it.")
            return
        summary = self.chat.store.conversation(cid)
        default = str(Path.home() / f"{safe_filename(summary.title if summary else 'chat')}.md")
        path, _ = QFileDialog.getSaveFileName(
            self.window, "Export chat as Markdown", default, "Markdown (*.md)"
        )
        if path:
            self.export_file(cid, Path(path), self._ask_thinking())

    def export_file(self, cid: str, path: Path, include_thinking: bool) -> Path | None:
        try:
            out = self.chat.export_markdown(cid, path, include_thinking)
        except StoreError as error:
            self.window.show_error(str(error))
            return None
        self.window.statusBar().showMessage(f"Exported to {out}", 4000)
        return out

    def export_to(self, ids: list[str], folder: Path, include_thinking: bool) -> list[Path]:
        written: list[Path] = []
        for cid in ids:
            summary = self.chat.store.conversation(cid)
            if summary is None:
                continue
            target = _free_path(folder, safe_filename(summary.title))
            try:
                written.append(self.chat.export_markdown(cid, target, include_thinking))
            except StoreError as error:
                self.window.show_error(
                    f"{error} {len(written)} of {len(ids)} chats were exported to {folder}."
                )
                return written
        self.window.statusBar().showMessage(f"Exported {len(written)} chats to {folder}", 4000)
        return written


def _free_path(folder: Path, stem: str) -> Path:
    """``folder/stem.md``, or ``stem-2.md``… when a file (or its attachments folder) is there already."""
    stem = stem.rstrip(".") or "chat"
    n, candidate = 1, stem
    while (folder / f"{candidate}.md").exists() or (folder / f"{candidate}_files").exists():
        n += 1
        candidate = f"{stem}-{n}"
    return folder / f"{candidate}.md"


def safe_filename(title: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in " -_." else "_" for ch in title)
    return cleaned[:60].strip(" ._") or "chat"  # "Hi." + ".md" must not read "Hi..md"
