"""Settings ▸ Tools: the MCP servers (status, form or raw JSON, import, stderr log), the Files tool's shared
folders, the consent table and the step limit."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine_mlx.tools.config import (
    BUILTIN_FILES,
    DEFAULT_TIMEOUT_S,
    ServerConfig,
    ToolConfigError,
    import_candidates,
    load_config,
    merge_imported,
    parse_config,
)
from engine_mlx.tools.consent import Consent

from ..controllers.tools import ToolPrefs, ToolsController

NETWORK_NOTE = (
    "QwenDesk itself stays offline. A tool server is a program of its own: it may use the network "
    "(a web search, a URL server), so add only servers you trust."
)
LOG_TAIL_BYTES = 200_000


def _button(text: str, tip: str = "") -> QPushButton:
    button = QPushButton(text)
    button.setAccessibleName(text.replace("…", "").replace("&", ""))
    if tip:
        button.setToolTip(tip)
    return button


def check_servers(document: str) -> tuple[ServerConfig, ...]:
    """The servers in ``document`` (mcp.json's text); ToolConfigError naming the field if it is unusable."""
    try:
        data = json.loads(document)
    except ValueError as error:
        raise ToolConfigError(
            f"mcp.json: is not valid JSON ({error}); fix it and apply again"
        ) from None
    servers = parse_config(data)
    if any(s.name == BUILTIN_FILES for s in servers):
        raise ToolConfigError(
            f"mcp.json: the server name {BUILTIN_FILES!r} is QwenDesk's built-in Files tool; "
            "rename it"
        )
    return servers


class ServerDialog(QDialog):
    """Add or edit one server as a form; its fields are checked by the same rules as mcp.json."""

    def __init__(self, server: ServerConfig | None, taken: set[str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Edit tool server" if server else "Add tool server")
        self.taken = taken
        self.result_server: ServerConfig | None = None
        server = server or ServerConfig("", command="")
        form = QFormLayout(self)
        note = QLabel(NETWORK_NOTE)
        note.setWordWrap(True)
        form.addRow(note)
        self.name = QLineEdit(server.name)
        self.kind = QComboBox()
        self.kind.addItem("Run a program (stdio)", "stdio")
        self.kind.addItem("Connect to a URL (Streamable HTTP)", "http")
        self.kind.setCurrentIndex(0 if server.is_stdio or not server.url else 1)
        self.command = QLineEdit(server.command)
        self.args = QLineEdit(shlex.join(server.args))
        self.env = QPlainTextEdit("\n".join(f"{k}={v}" for k, v in server.env.items()))
        self.cwd = QLineEdit(server.cwd or "")
        self.url = QLineEdit(server.url)
        self.headers = QPlainTextEdit("\n".join(f"{k}: {v}" for k, v in server.headers.items()))
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(1, 3600)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(server.timeout_s)
        self.enabled = QCheckBox("Enabled (start it now and whenever QwenDesk starts)")
        self.enabled.setChecked(server.enabled)
        for label, field, name in (
            ("&Name", self.name, "Server name"),
            ("&Kind", self.kind, "Server kind"),
            ("&Command", self.command, "Command"),
            ("&Arguments", self.args, "Arguments (as in a shell)"),
            ("&Environment (NAME=value lines)", self.env, "Environment"),
            ("&Working folder", self.cwd, "Working folder"),
            ("&URL", self.url, "URL"),
            ("&Headers (Name: value lines)", self.headers, "Headers"),
            ("&Timeout per call", self.timeout, "Timeout per call"),
        ):
            field.setAccessibleName(name)
            form.addRow(label, field)
        self.enabled.setAccessibleName("Enabled")
        form.addRow(self.enabled)
        self.error = QLabel()
        self.error.setObjectName("StateLabel")
        self.error.setWordWrap(True)
        self.error.hide()
        form.addRow(self.error)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        for button in buttons.buttons():
            button.setAccessibleName(button.text().replace("&", ""))
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.kind.currentIndexChanged.connect(self._sync_kind)
        self._sync_kind()

    def _sync_kind(self) -> None:
        stdio = self.kind.currentData() == "stdio"
        for field in (self.command, self.args, self.env, self.cwd):
            field.setEnabled(stdio)
        for field in (self.url, self.headers):
            field.setEnabled(not stdio)

    def spec(self) -> dict:
        """The server as mcp.json holds it (ValueError with the reason if a line cannot be read)."""
        spec: dict = {}
        if self.kind.currentData() == "stdio":
            spec["command"] = self.command.text().strip()
            spec["args"] = shlex.split(self.args.text())
            env = {}
            for line in self.env.toPlainText().splitlines():
                if line.strip():
                    key, sep, value = line.partition("=")
                    if not sep or not key.strip():
                        raise ValueError(
                            f"The environment line {line!r} is not NAME=value; fix it."
                        )
                    env[key.strip()] = value
            if env:
                spec["env"] = env
            if self.cwd.text().strip():
                spec["cwd"] = self.cwd.text().strip()
        else:
            spec["url"] = self.url.text().strip()
            headers = {}
            for line in self.headers.toPlainText().splitlines():
                if line.strip():
                    key, sep, value = line.partition(":")
                    if not sep or not key.strip():
                        raise ValueError(f"The header line {line!r} is not Name: value; fix it.")
                    headers[key.strip()] = value.strip()
            if headers:
                spec["headers"] = headers
        if not self.enabled.isChecked():
            spec["enabled"] = False
        if self.timeout.value() != DEFAULT_TIMEOUT_S:
            spec["timeout"] = self.timeout.value()
        return spec

    def accept(self) -> None:
        name = self.name.text().strip()
        try:
            if name in self.taken or name == BUILTIN_FILES:
                raise ValueError(f"There is already a server named {name!r}; choose another name.")
            (server,) = parse_config({"mcpServers": {name: self.spec()}}, "This server")
        except (ValueError, ToolConfigError) as error:
            self.error.setText(str(error))
            self.error.show()
            return
        self.result_server = server
        super().accept()


class ToolsSettingsDialog(QDialog):
    def __init__(self, tools: ToolsController, parent: QWidget | None = None):
        super().__init__(parent)
        self.tools = tools
        self.import_home: Path | None = None  # where "Import" looks (tests: a fake home folder)
        self.setWindowTitle("Tools")
        self.resize(760, 520)
        layout = QVBoxLayout(self)
        self.tabs = QTabWidget()
        self.tabs.setAccessibleName("Tools settings")
        layout.addWidget(self.tabs)
        self.tabs.addTab(self._servers_tab(), "Servers")
        self.tabs.addTab(self._json_tab(), "Raw JSON")
        self.tabs.addTab(self._folders_tab(), "Shared folders")
        self.tabs.addTab(self._consent_tab(), "Consent")
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        for button in close.buttons():
            button.setAccessibleName("Close")
        close.rejected.connect(self.close)
        layout.addWidget(close)
        # (not the raw JSON: text being typed there is never replaced behind the user's back)
        tools.statusChanged.connect(self.refresh_status)
        tools.statusChanged.connect(self.fill_consent)
        tools.consentChanged.connect(self.fill_consent)
        self._timer = QTimer(self)  # a server's state changes on its own (a crash, a restart)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self.refresh_status)
        self._timer.start()
        self.refresh()

    # --- servers ------------------------------------------------------------------------------
    def _servers_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        note = QLabel(NETWORK_NOTE)
        note.setWordWrap(True)
        layout.addWidget(note)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Server", "Status", "Tools", "Last error"])
        self.table.setAccessibleName("Tool servers")
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.table, 1)
        row = QHBoxLayout()
        self.add_button = _button("Add…", "Add a tool server")
        self.edit_button = _button("Edit…", "Edit the selected server")
        self.remove_button = _button("Remove", "Remove the selected server")
        self.log_button = _button("Show log…", "The selected server's error output (stderr)")
        self.import_button = _button(
            "Import…", "Add the servers of LM Studio's or Claude Desktop's MCP config"
        )
        for button, slot in (
            (self.add_button, self.add_server),
            (self.edit_button, self.edit_server),
            (self.remove_button, self.remove_server),
            (self.log_button, self.show_log),
            (self.import_button, self.import_servers),
        ):
            button.clicked.connect(slot)
            row.addWidget(button)
        row.addStretch(1)
        layout.addLayout(row)
        limits = QFormLayout()
        self.steps = QSpinBox()
        self.steps.setRange(1, 100)
        self.steps.setValue(self.tools.prefs.max_steps)
        self.steps.setAccessibleName("Step limit")
        self.steps.setToolTip("How many times in a row the model may call tools in one answer")
        self.steps.valueChanged.connect(
            lambda n: self.tools.set_prefs(replace(self.tools.prefs, max_steps=n))
        )
        limits.addRow("Step &limit (tool calls in a row per answer)", self.steps)
        layout.addLayout(limits)
        self.message = QLabel()
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        return page

    def refresh(self) -> None:
        self.refresh_status()
        self.json_edit.setPlainText(
            json.dumps({"mcpServers": {s.name: s.to_json() for s in self.tools.servers}}, indent=2)
        )
        self.folders.clear()
        self.folders.addItems(list(self.tools.prefs.files_roots))
        self.fill_consent()

    def refresh_status(self) -> None:
        status = {s.name: s for s in self.tools.status()}
        rows = [s.name for s in self.tools.servers] + (
            [BUILTIN_FILES] if self.tools.prefs.files_roots else []
        )
        self.table.setRowCount(len(rows))
        enabled = {s.name: s.enabled for s in self.tools.servers}
        for index, name in enumerate(rows):
            st = status.get(name)
            state = (
                st.state.value
                if st
                else ("disabled" if not enabled.get(name, True) else "starting")
            )
            cells = [
                "Files (built-in)" if name == BUILTIN_FILES else name,
                state,
                str(st.tool_count) if st else "",
                st.error if st else "",
            ]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, name)
                self.table.setItem(index, column, item)

    def selected(self) -> str | None:
        items = self.table.selectedItems()
        return items[0].data(Qt.ItemDataRole.UserRole) if items else None

    def _save(self, servers: tuple[ServerConfig, ...]) -> None:
        try:
            self.tools.save_servers(servers)
        except OSError as error:
            self.message.setText(f"Could not save {self.tools.config_path}: {error}.")
            return
        self.refresh()

    def add_server(self) -> ServerDialog:
        dialog = self.server_dialog = ServerDialog(None, {s.name for s in self.tools.servers}, self)
        dialog.accepted.connect(lambda: self._save(self.tools.servers + (dialog.result_server,)))
        dialog.open()
        return dialog

    def edit_server(self) -> ServerDialog | None:
        name = self.selected()
        current = next((s for s in self.tools.servers if s.name == name), None)
        if current is None:
            self.message.setText(
                "Select a server you added (the built-in Files tool has no settings here)."
            )
            return None
        dialog = self.server_dialog = ServerDialog(
            current, {s.name for s in self.tools.servers} - {name}, self
        )
        dialog.accepted.connect(
            lambda: self._save(
                tuple(dialog.result_server if s.name == name else s for s in self.tools.servers)
            )
        )
        dialog.open()
        return dialog

    def remove_server(self) -> None:
        name = self.selected()
        if name and name != BUILTIN_FILES:
            self._save(tuple(s for s in self.tools.servers if s.name != name))

    def show_log(self) -> QDialog | None:
        name = self.selected()
        st = next((s for s in self.tools.status() if s.name == name), None)
        if st is None or st.stderr_log is None:
            self.message.setText("Select a running program server: only those write an error log.")
            return None
        try:
            with open(st.stderr_log, "rb") as handle:
                handle.seek(max(0, st.stderr_log.stat().st_size - LOG_TAIL_BYTES))
                text = handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            text = ""
        dialog = self.log_dialog = QDialog(self)
        dialog.setWindowTitle(f"{name}: error output")
        layout = QVBoxLayout(dialog)
        view = self.log_view = QPlainTextEdit(
            text or "(the server has written nothing to its error output)"
        )
        view.setReadOnly(True)
        view.setAccessibleName(f"Error output of {name}")
        layout.addWidget(QLabel(str(st.stderr_log)))
        layout.addWidget(view)
        dialog.resize(700, 400)
        dialog.show()
        return dialog

    def import_servers(self) -> None:
        found = import_candidates(self.import_home)
        if not found:
            self.message.setText(
                "No LM Studio or Claude Desktop MCP config was found on this computer."
            )
            return
        servers, notes = self.tools.servers, []
        for app, path in found.items():
            try:
                imported = load_config(path)
            except ToolConfigError as error:
                notes.append(f"{app}: {error}")
                continue
            before = len(servers)
            servers = merge_imported(servers, imported)
            notes.append(
                f"{app}: {len(servers) - before} new server(s), added disabled; enable the ones you trust."
            )
        self._save(servers)
        self.message.setText(" ".join(notes))

    # --- raw JSON -----------------------------------------------------------------------------
    def _json_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        label = QLabel(
            "mcp.json, in the notation of Cursor, LM Studio and Claude Desktop "
            '(plus "enabled" and "timeout" in seconds per server):'
        )
        label.setWordWrap(True)
        layout.addWidget(label)
        self.json_edit = QPlainTextEdit()
        self.json_edit.setAccessibleName("mcp.json")
        layout.addWidget(self.json_edit, 1)
        self.json_error = QLabel()
        self.json_error.setObjectName("StateLabel")
        self.json_error.setWordWrap(True)
        layout.addWidget(self.json_error)
        self.json_apply = _button("Apply", "Check the JSON and use these servers")
        self.json_apply.clicked.connect(self.apply_json)
        layout.addWidget(self.json_apply, 0, Qt.AlignmentFlag.AlignRight)
        return page

    def apply_json(self) -> bool:
        try:
            servers = check_servers(self.json_edit.toPlainText())
        except ToolConfigError as error:
            self.json_error.setText(str(error))  # the text stays as typed
            return False
        self.json_error.setText("")
        self._save(servers)
        return True

    # --- shared folders -----------------------------------------------------------------------
    def _folders_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        label = QLabel(
            "The built-in Files tool can list, read and search these folders (read-only); "
            "nothing outside them."
        )
        label.setWordWrap(True)
        layout.addWidget(label)
        self.folders = QListWidget()
        self.folders.setAccessibleName("Shared folders")
        layout.addWidget(self.folders, 1)
        row = QHBoxLayout()
        self.add_folder_button = _button("Add folder…", "Share a folder with the Files tool")
        self.remove_folder_button = _button("Remove folder", "Stop sharing the selected folder")
        self.add_folder_button.clicked.connect(self._pick_folder)
        self.remove_folder_button.clicked.connect(self.remove_folder)
        row.addWidget(self.add_folder_button)
        row.addWidget(self.remove_folder_button)
        row.addStretch(1)
        layout.addLayout(row)
        return page

    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Share a folder with the Files tool", str(Path.home())
        )
        if folder:
            self.add_folder(Path(folder))

    def add_folder(self, folder: Path) -> None:
        roots = self.tools.prefs.files_roots
        if str(folder) not in roots:
            self.tools.set_prefs(replace(self.tools.prefs, files_roots=(*roots, str(folder))))
        self.refresh()

    def remove_folder(self) -> None:
        item = self.folders.currentItem()
        if item is not None:
            roots = tuple(r for r in self.tools.prefs.files_roots if r != item.text())
            self.tools.set_prefs(ToolPrefs(roots, self.tools.prefs.max_steps))
            self.refresh()

    # --- consent ------------------------------------------------------------------------------
    def _consent_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        label = QLabel(
            "Ask shows a card in the chat before each call; a tool's own choice overrides its server's."
        )
        label.setWordWrap(True)
        layout.addWidget(label)
        self.consent_table = QTableWidget(0, 2)
        self.consent_table.setHorizontalHeaderLabels(["Server or tool", "Consent"])
        self.consent_table.setAccessibleName("Consent")
        self.consent_table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.consent_table, 1)
        return page

    def fill_consent(self) -> None:
        table = self.tools.consent
        rows: list[tuple[str, str | None]] = [(name, None) for name in self.tools.available()]
        known = {(t.server, t.name) for t in self.tools.host.tools()}
        known |= {tuple(key.split("/", 1)) for key in table.tools}
        rows += sorted((server, tool) for server, tool in known)
        self.consent_table.setRowCount(len(rows))
        self.consent_combos: dict[tuple[str, str | None], QComboBox] = {}
        for index, (server, tool) in enumerate(rows):
            label = f"{server} ▸ {tool}" if tool else f"{server} (every tool)"
            self.consent_table.setItem(index, 0, QTableWidgetItem(label))
            combo = QComboBox()
            combo.setAccessibleName(f"Consent for {label}")
            if tool:
                combo.addItem("As its server", None)
            for choice in Consent:
                combo.addItem(choice.value.capitalize(), choice)
            current = (
                table.tools.get(f"{server}/{tool}")
                if tool
                else table.servers.get(server, Consent.ASK)
            )
            combo.setCurrentIndex(max(0, combo.findData(current)))
            combo.activated.connect(
                lambda _i, s=server, t=tool, c=combo: self._consent_chosen(s, t, c)
            )
            self.consent_table.setCellWidget(index, 1, combo)
            self.consent_combos[(server, tool)] = combo

    def _consent_chosen(self, server: str, tool: str | None, combo: QComboBox) -> None:
        choice = combo.currentData()
        table = self.tools.consent
        if tool is None:
            table = table.with_server(server, Consent(choice))
        elif choice is None:
            table = replace(
                table, tools={k: v for k, v in table.tools.items() if k != f"{server}/{tool}"}
            )
        else:
            table = table.with_tool(server, tool, Consent(choice))
        self.tools.set_consent(table)
