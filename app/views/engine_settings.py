"""Settings ▸ Engine: answer with this Mac's engine, or with a QwenDesk server's (its address and key)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from engine_mlx.errors import ServerError

from ..engine_choice import EngineChoice, EngineMode, connection_for


class EngineSettingsDialog(QDialog):
    """OK keeps the dialog open, with the reason, while the address cannot be used."""

    def __init__(
        self, choice: EngineChoice, key: str, key_path: Path, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.setWindowTitle("Engine")
        self.resize(560, 320)
        layout = QVBoxLayout(self)
        self.this_mac = QRadioButton("This Mac: load a model here")
        self.server = QRadioButton("A QwenDesk server: chat with the model another computer serves")
        self.group = QButtonGroup(self)
        for button in (self.this_mac, self.server):
            self.group.addButton(button)
            layout.addWidget(button)
        form = QFormLayout()
        self.url = QLineEdit(choice.url)
        self.url.setPlaceholderText("http://studio.local:8035")
        self.url.setAccessibleName("Server address")
        self.key = QLineEdit(key)
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("the key the server was started with (serve --api-key)")
        self.key.setAccessibleName("API key")
        self.certificate = QLineEdit(choice.certificate)
        self.certificate.setPlaceholderText(
            "for https with the server's own certificate: its PEM file (serve --tls-cert)"
        )
        self.certificate.setAccessibleName("Server certificate")
        form.addRow("Address", self.url)
        form.addRow("API key", self.key)
        form.addRow("Certificate", self.certificate)
        layout.addLayout(form)
        hint = QLabel(
            "On the server: python -m engine_mlx serve --model DIR --host 0.0.0.0 --api-key KEY "
            "(add --tls-cert/--tls-key for HTTPS). Chats stay on this computer; each message and "
            f"its attachments are sent to the server to be answered. The key is kept in {key_path}, "
            "readable only by you, never in the chat database or a log."
        )
        hint.setObjectName("Muted")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.error = QLabel()
        self.error.setObjectName("Error")
        self.error.setWordWrap(True)
        self.error.hide()
        layout.addWidget(self.error)
        layout.addStretch(1)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        (self.server if choice.mode is EngineMode.SERVER else self.this_mac).setChecked(True)
        self.group.buttonToggled.connect(lambda *_: self._sync())
        self._sync()

    def _sync(self) -> None:
        on = self.server.isChecked()
        for field in (self.url, self.key, self.certificate):
            field.setEnabled(on)
        self.error.hide()

    def value(self) -> tuple[EngineChoice, str]:
        mode = EngineMode.SERVER if self.server.isChecked() else EngineMode.LOCAL
        choice = EngineChoice(mode, self.url.text().strip(), self.certificate.text().strip())
        return choice, self.key.text().strip()

    def accept(self) -> None:
        choice, key = self.value()
        if choice.mode is EngineMode.SERVER:
            try:
                connection_for(choice, key)
            except ServerError as error:
                self.error.setText(str(error))
                self.error.show()
                self.url.setFocus()
                return
        super().accept()
