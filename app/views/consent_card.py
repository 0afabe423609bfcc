"""The consent card: inline in the answer, it asks before a tool runs, with its arguments editable."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine_mlx.tools.loop import Approval, ConsentAnswer, ToolCallProposed


class ConsentCard(QFrame):
    """Run once, Always allow this tool, or Deny; the arguments as formatted JSON, editable before running."""

    answered = Signal(str, ConsentAnswer)  # call id, the user's answer

    def __init__(self, proposed: ToolCallProposed, parent: QWidget | None = None):
        super().__init__(parent)
        self.proposed = proposed
        self.setObjectName("ConsentCard")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAccessibleName(f"Run the tool {proposed.tool}?")
        layout = QVBoxLayout(self)
        title = QLabel(f"<b>{proposed.server} ▸ {proposed.tool}</b> wants to run")
        layout.addWidget(title)
        if proposed.description:
            description = QLabel(proposed.description)
            description.setWordWrap(True)
            description.setObjectName("Muted")
            layout.addWidget(description)
        label = QLabel("&Arguments (you can edit them before running):")
        layout.addWidget(label)
        self.editor = QPlainTextEdit(json.dumps(proposed.arguments, indent=2, ensure_ascii=False))
        self.editor.setAccessibleName("Tool call arguments (JSON)")
        label.setBuddy(self.editor)
        lines = min(12, self.editor.toPlainText().count("\n") + 2)
        self.editor.setFixedHeight(self.editor.fontMetrics().lineSpacing() * lines + 14)
        layout.addWidget(self.editor)
        self.error = QLabel()
        self.error.setObjectName("StateLabel")
        self.error.setWordWrap(True)
        self.error.hide()
        layout.addWidget(self.error)
        row = QHBoxLayout()
        row.addStretch(1)
        self.deny_button = QPushButton("Deny")
        self.always_button = QPushButton("Always allow this tool")
        self.run_button = QPushButton("Run once")
        for button, approval in (
            (self.deny_button, Approval.DENY),
            (self.always_button, Approval.ALWAYS),
            (self.run_button, Approval.RUN_ONCE),
        ):
            button.setAccessibleName(button.text())
            button.clicked.connect(lambda _checked=False, a=approval: self._answer(a))
            row.addWidget(button)
        self.always_button.setToolTip(
            f"Run it, and never ask again for {proposed.server} ▸ {proposed.tool} "
            "(change this in Settings ▸ Tools)"
        )
        layout.addLayout(row)

    def focusNextPrevChild(self, next: bool) -> bool:
        """Tab walks the card's own controls (the transcript would otherwise move past the message), then
        leaves it."""
        order = [
            w
            for w in (self.editor, self.deny_button, self.always_button, self.run_button)
            if w.isEnabled() and w.isVisible()
        ]
        current = QApplication.focusWidget()
        if current in order:
            index = order.index(current) + (1 if next else -1)
            if 0 <= index < len(order):
                order[index].setFocus(
                    Qt.FocusReason.TabFocusReason if next else Qt.FocusReason.BacktabFocusReason
                )
                return True
        return super().focusNextPrevChild(next)

    def arguments(self) -> dict | None:
        """The edited arguments, or None (and the reason shown) if they are not a JSON object."""
        try:
            value = json.loads(self.editor.toPlainText())
        except ValueError as error:
            self._refuse(f"The arguments are not valid JSON ({error}); fix them, or press Deny.")
            return None
        if not isinstance(value, dict):
            self._refuse("The arguments must be a JSON object ({…}); fix them, or press Deny.")
            return None
        return value

    def _refuse(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    def _answer(self, approval: Approval) -> None:
        if approval is Approval.DENY:
            answer = ConsentAnswer(Approval.DENY)
        else:
            arguments = self.arguments()
            if arguments is None:
                return
            answer = ConsentAnswer(
                approval, None if arguments == self.proposed.arguments else arguments
            )
        self.set_answered(
            {
                Approval.DENY: "Denied.",
                Approval.ALWAYS: "Allowed (always).",
                Approval.RUN_ONCE: "Running…",
            }[approval]
        )
        self.answered.emit(self.proposed.call_id, answer)

    def set_answered(self, text: str) -> None:
        for button in (self.deny_button, self.always_button, self.run_button):
            button.setEnabled(False)
        self.editor.setReadOnly(True)
        self.error.setText(text)
        self.error.show()
