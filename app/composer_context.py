"""The composer's MCP context (issue 17): the + menu offers the chat's tool servers' resources (one submenu a
server), and typing / offers their prompts as commands. Listing, reading and filling in run on the thread
pool (``ToolContext``): the menu and the completer show what is known and fill in as answers arrive.

A chosen prompt's text is inserted into the composer, not sent: a prompt is a template the user asked for,
often to be completed (the code to review, the question), and its messages may mix roles that one turn
cannot carry; the user reads it, edits it and sends it with Enter as usual."""

from __future__ import annotations

import re

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QStandardItem, QStandardItemModel, QTextCursor
from PySide6.QtWidgets import QCompleter

from engine_mlx.tools.config import BUILTIN_FILES
from engine_mlx.tools.context import PromptSpec, ResourceSpec

from .controllers.tool_context import FilledPrompt, ServerPrompts, ServerResources, ToolContext
from .views.prompt_form import PromptForm

COMMAND = re.compile(r"/[\w.\-]*")  # what the composer holds while a / command is being typed
COMMAND_ROLE = Qt.ItemDataRole.UserRole + 1  # "/name": what the completer matches
PROMPT_ROLE = Qt.ItemDataRole.UserRole + 2  # the prompt's index in ``prompts``


def server_label(name: str) -> str:
    return "Files (built-in)" if name == BUILTIN_FILES else name


class ComposerContext:
    def __init__(self, window):
        self.window = window
        composer = window.composer
        self.context = ToolContext(
            window.tools, window.attachments, window.attachments.scratch_dir, window
        )
        self.context.errorOccurred.connect(window.show_error)
        # --- the + menu: resources
        self.menu = composer.attach_menu
        self.menu.setToolTipsVisible(True)
        self.menu.aboutToShow.connect(self.menu_opened)
        self.resources: dict[str, ServerResources] = {}  # the last listing, by server
        self.resources_chat: str | None = None  # the chat it was made for
        self.context.resourcesListed.connect(self._resources_listed)
        window.tools.statusChanged.connect(self.sync)
        window.chat.conversationOpened.connect(lambda *_: self.sync())
        # --- the / commands: prompts
        self.prompts: list[
            PromptSpec
        ] = []  # what the completer offers, in the order of the servers
        self.prompt_lists: dict[str, ServerPrompts] = {}  # the last listing, by server
        self.prompts_chat: str | None = None
        self.typing_command = False
        self.model = QStandardItemModel(window)
        self.completer = QCompleter(self.model, composer.edit)
        self.completer.setWidget(composer.edit)
        self.completer.setCompletionRole(COMMAND_ROLE)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.completer.popup().setAccessibleName("Prompts from the tool servers")
        self.completer.activated[QModelIndex].connect(self.choose)
        composer.edit.completer = self.completer
        composer.edit.textChanged.connect(self._text_changed)
        self.context.promptsListed.connect(self._prompts_listed)
        self.context.promptFilled.connect(self._filled)
        self.form: PromptForm | None = None
        self.sync()

    @property
    def cid(self) -> str | None:
        return self.window.chat.current_id

    def sync(self) -> None:
        """+ is a menu while there are tool servers; what a listing said of another chat is dropped."""
        self.window.composer.set_attach_menu(bool(self.window.tools.available()))
        if self.resources_chat != (self.cid or ""):
            self.resources, self.resources_chat = {}, None

    # --- resources ------------------------------------------------------------------------------
    def menu_opened(self) -> None:
        """Show what is known at once, and list again (the menu fills in when the servers answer)."""
        self.fill_menu()
        self.context.list_resources(self.cid)

    def fill_menu(self) -> None:
        menu = self.menu
        menu.clear()
        files = menu.addAction("Files…")
        files.setToolTip("Images, PDFs, videos or text files (or drop / paste them)")
        files.triggered.connect(self.window.composer.attachRequested)
        menu.addSeparator()
        servers = self.context.servers(self.cid)
        if not servers:
            none = menu.addAction("No tool server runs for this chat (the header's Tools button)")
            none.setEnabled(False)
            return
        heading = menu.addAction("Resources")
        heading.setEnabled(False)
        for server in servers:
            sub = menu.addMenu(server_label(server))
            sub.setToolTipsVisible(True)
            listing = self.resources.get(server)
            if listing is None:
                note = "Listing…"
            elif listing.error:
                note = listing.error
            elif not listing.resources:
                note = "No resources"
            else:
                note = ""
                for resource in listing.resources:
                    action = sub.addAction(resource.name)
                    action.setToolTip(resource.description or resource.uri)
                    action.triggered.connect(lambda _=False, r=resource: self.attach(r))
            if note:
                sub.addAction(note).setEnabled(False)

    def _resources_listed(self, cid: str, found: ServerResources) -> None:
        if cid != (self.cid or ""):
            return  # another chat is on screen now
        if self.resources_chat != cid:
            self.resources = {}
        self.resources[found.server], self.resources_chat = found, cid
        self.fill_menu()

    def attach(self, resource: ResourceSpec) -> None:
        """Read it on the thread pool; its text or image arrives as an attachment chip."""
        self.context.attach_resource(resource)

    # --- prompts --------------------------------------------------------------------------------
    def _text_changed(self) -> None:
        text = self.window.composer.edit.toPlainText()
        if not COMMAND.fullmatch(text) or not self.window.tools.available():
            self.typing_command = False
            self.completer.popup().hide()
            return
        if not self.typing_command:  # a new command: ask the servers afresh
            self.typing_command = True
            self.context.list_prompts(self.cid)
        self.complete(text)

    def complete(self, text: str) -> None:
        popup = self.completer.popup()
        self.completer.setCompletionPrefix(text)
        if not self.model.rowCount() or not self.completer.completionCount():
            popup.hide()
            return
        edit = self.window.composer.edit
        rect = edit.cursorRect()
        rect.setWidth(
            min(
                edit.width(),
                popup.sizeHintForColumn(0) + popup.verticalScrollBar().sizeHint().width(),
            )
        )
        self.completer.complete(rect)
        popup.setCurrentIndex(self.completer.completionModel().index(0, 0))

    def _prompts_listed(self, cid: str, found: ServerPrompts) -> None:
        if cid != (self.cid or ""):
            return
        if self.prompts_chat != cid:
            self.prompt_lists = {}
        self.prompt_lists[found.server], self.prompts_chat = found, cid
        if found.error:
            self.window.show_error(found.error)
        order = self.context.servers(self.cid)
        self.prompts = [
            p
            for server in order
            if server in self.prompt_lists
            for p in self.prompt_lists[server].prompts
        ]
        self.model.clear()
        for index, prompt in enumerate(self.prompts):
            about = f"  —  {prompt.description.splitlines()[0]}" if prompt.description else ""
            item = QStandardItem(f"/{prompt.name}{about}  ({server_label(prompt.server)})")
            item.setData(f"/{prompt.name}", COMMAND_ROLE)
            item.setData(index, PROMPT_ROLE)
            item.setToolTip(prompt.description)
            item.setEditable(False)
            self.model.appendRow(item)
        if self.typing_command:
            self.complete(self.window.composer.edit.toPlainText())

    def choose(self, index: QModelIndex) -> None:
        """A prompt was chosen in the popup: ask for its arguments if it has any, then fill it in."""
        self.completer.popup().hide()
        position = index.data(PROMPT_ROLE)
        if position is None or position >= len(self.prompts):
            return
        prompt = self.prompts[position]
        command = self.window.composer.edit.toPlainText()
        if not prompt.arguments:
            self.context.fill_prompt(prompt, {}, command)
            return
        self.form = PromptForm(prompt, self.window)
        self.form.submitted.connect(lambda p, values: self.context.fill_prompt(p, values, command))
        self.form.open()

    def _filled(self, filled: FilledPrompt) -> None:
        """The prompt's text replaces the command typed (or follows what the user typed meanwhile)."""
        edit = self.window.composer.edit
        text = edit.toPlainText()
        if text.strip() == filled.command.strip() or not text.strip():
            edit.setPlainText(filled.text)
        else:
            edit.setPlainText(f"{text.rstrip()}\n\n{filled.text}")
        edit.moveCursor(QTextCursor.MoveOperation.End)
        edit.setFocus()


def install_composer_context(window) -> ComposerContext:
    return ComposerContext(window)
