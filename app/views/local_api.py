"""Settings ▸ Local API: the switch, port, key, base URL and a live log of requests; and the
status-bar indicator shown while the API runs."""

from __future__ import annotations

import sys
import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.controllers.local_api import LocalApiController
from app.views.tables import row_table

LOG_COLUMNS = ("Time", "Client", "Tokens", "Duration", "Result")


def this_machine(platform: str = sys.platform) -> str:
    """How the dialog names the computer the server runs on."""
    return "this Mac" if platform == "darwin" else "this computer"


def _tokens(record) -> str:
    if not record.prompt_tokens and not record.completion_tokens:
        return "—"
    return (
        f"{record.prompt_tokens} in ({record.cached_tokens} cached) · "
        f"{record.completion_tokens} out"
    )


def _result(record) -> str:
    if record.error:
        return f"{record.status}: {record.error}"
    return f"{record.status} {record.finish_reason}".strip()


class LocalApiDialog(QDialog):
    """Operates the controller; every change lands on the running server (restarted if needed)."""

    def __init__(self, controller: LocalApiController, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Local API")
        self.controller = controller
        self.resize(760, 480)

        self.switch = QCheckBox(
            f"Serve the loaded model to apps on {this_machine()} (OpenAI-compatible)"
        )
        self.switch.setObjectName("apiSwitch")
        self.port = QSpinBox()
        self.port.setRange(1024, 65535)
        self.port.setValue(controller.port)
        self.key = QLineEdit(controller.key)
        self.key.setAccessibleName("API key")
        self.key.setPlaceholderText(f"none: any app on {this_machine()} may call")
        self.new_key = QPushButton("New key")
        self.url = QLabel()
        self.url.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_url = QPushButton("Copy base URL")
        for button in (self.new_key, self.copy_url):
            button.setAutoDefault(False)  # Return in the port field must not press them
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.log = row_table(LOG_COLUMNS, stretch=(1, 4), selectable=False)
        self.log.setAccessibleName("Requests")

        form = QFormLayout()
        form.addRow(self.switch)
        form.addRow("Port", self.port)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key, 1)
        key_row.addWidget(self.new_key)
        form.addRow("API key", key_row)
        url_row = QHBoxLayout()
        url_row.addWidget(self.url, 1)
        url_row.addWidget(self.copy_url)
        form.addRow("Base URL", url_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("Requests"))
        layout.addWidget(self.log, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

        for record in controller.records:
            self._add_record(record)
        self.switch.setChecked(controller.running)
        self._refresh()
        self.switch.toggled.connect(self._toggled)
        self.port.editingFinished.connect(self._port_changed)
        self.key.editingFinished.connect(self._key_changed)
        self.new_key.clicked.connect(self._make_key)
        self.copy_url.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(controller.base_url)
        )
        controller.runningChanged.connect(self._refresh)
        controller.refusalChanged.connect(self._refresh)
        controller.failed.connect(self._failed)
        controller.requestLogged.connect(self._add_record)

    def _toggled(self, on: bool) -> None:
        self._port_changed()
        self._key_changed()
        self.controller.set_enabled(on)
        self._refresh()

    def _port_changed(self) -> None:
        if self.port.value() != self.controller.port:
            self.controller.set_port(self.port.value())
            self.controller.restart()
        self._refresh()

    def _key_changed(self) -> None:
        if self.key.text().strip() != self.controller.key:
            self.controller.set_key(self.key.text())
            self.controller.restart()

    def _make_key(self) -> None:
        self.key.setText(self.controller.new_key())
        self._key_changed()

    def _failed(self, message: str) -> None:
        self.status.setText(message)
        self.switch.blockSignals(True)
        self.switch.setChecked(False)
        self.switch.blockSignals(False)

    def _refresh(self, *_args) -> None:
        running, refusal = self.controller.running, self.controller.refusal
        self.url.setText(self.controller.base_url)
        self.switch.setEnabled(not refusal)  # server mode: it cannot be switched on
        if refusal:
            self.status.setText(refusal)
        elif running:
            self.status.setText(
                "Running on 127.0.0.1 only. Point an OpenAI client at the base URL"
                + (" with the key." if self.controller.key else "; any key works.")
            )
        elif not self.status.text().startswith("The local API cannot"):
            self.status.setText("Off.")
        if self.switch.isChecked() != running:
            self.switch.blockSignals(True)
            self.switch.setChecked(running)
            self.switch.blockSignals(False)

    def _add_record(self, record) -> None:
        row = self.log.rowCount()
        self.log.insertRow(row)
        cells = (
            time.strftime("%H:%M:%S", time.localtime(record.time)),
            record.client,
            _tokens(record),
            f"{record.duration_s:.2f} s",
            _result(record),
        )
        for col, text in enumerate(cells):
            self.log.setItem(row, col, QTableWidgetItem(text))
        self.log.scrollToBottom()


class ApiStatusIndicator(QLabel):
    """A status-bar label while the API runs: where it listens and how many requests it served."""

    def __init__(self, controller: LocalApiController, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.served = 0
        self.setObjectName("apiIndicator")
        controller.runningChanged.connect(self._update)
        controller.requestLogged.connect(self._count)
        self._update()

    def _count(self, _record) -> None:
        self.served += 1
        self._update()

    def _update(self, *_args) -> None:
        running = self.controller.running
        self.setVisible(running)
        if running:
            port = self.controller.base_url.rsplit(":", 1)[1].split("/")[0]
            self.setText(f"● API :{port}" + (f" · {self.served} requests" if self.served else ""))
            self.setToolTip(f"Local OpenAI-compatible API at {self.controller.base_url}")
