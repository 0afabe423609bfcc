"""The small form that asks for an MCP prompt's arguments before the server fills it in (a / command)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from engine_mlx.tools.context import PromptSpec


class PromptForm(QDialog):
    """One line per argument; OK is enabled once every required one is filled."""

    # the prompt, {argument: value} (empty optional ones left out)
    submitted = Signal(PromptSpec, dict)

    def __init__(self, prompt: PromptSpec, parent: QWidget | None = None):
        super().__init__(parent)
        self.prompt = prompt
        self.setWindowTitle(f"/{prompt.name}")
        layout = QVBoxLayout(self)
        if prompt.description:
            about = QLabel(f"{prompt.description}\n(from {prompt.server})")
            about.setWordWrap(True)
            layout.addWidget(about)
        form = QFormLayout()
        self.fields: dict[str, QLineEdit] = {}
        for argument in prompt.arguments:
            edit = QLineEdit()
            edit.setAccessibleName(argument.name)
            edit.setPlaceholderText(
                argument.description or ("required" if argument.required else "")
            )
            edit.setToolTip(argument.description)
            edit.textChanged.connect(self._check)
            form.addRow(f"{argument.name}{' *' if argument.required else ''}", edit)
            self.fields[argument.name] = edit
        layout.addLayout(form)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Insert")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._check()

    def values(self) -> dict[str, str]:
        return {name: edit.text() for name, edit in self.fields.items() if edit.text().strip()}

    def _check(self) -> None:
        missing = [
            a.name
            for a in self.prompt.arguments
            if a.required and not self.fields[a.name].text().strip()
        ]
        self.ok_button.setEnabled(not missing)
        self.ok_button.setToolTip(f"Fill in {', '.join(missing)} first" if missing else "")

    def accept(self) -> None:
        if self.ok_button.isEnabled():
            self.submitted.emit(self.prompt, self.values())
            super().accept()
