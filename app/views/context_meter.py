"""The context meter under the message box: a thin bar, "~1,234 / 8,192 tokens", and the overflow warning."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..controllers.context_meter import MeterReading


class ContextMeter(QWidget):
    newChatWithSummary = Signal()
    dropOldestTurns = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("ContextMeter")
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        self.warning = QFrame()
        self.warning.setObjectName("ErrorBanner")
        warning_row = QHBoxLayout(self.warning)
        warning_row.setContentsMargins(10, 4, 6, 4)
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        warning_row.addWidget(self.warning_label, 1)
        self.summary_button = QPushButton("New chat with a summary")
        self.summary_button.setToolTip(
            "Start a new chat whose system prompt holds a short extract of this one "
            "(made by QwenDesk, not by the model); your message stays in the box"
        )
        self.summary_button.setAccessibleName("Start a new chat with a summary of this one")
        self.summary_button.clicked.connect(self.newChatWithSummary)
        warning_row.addWidget(self.summary_button)
        self.drop_button = QPushButton("Drop oldest turns")
        self.drop_button.setToolTip(
            "Stop sending the oldest turns to the model (they stay in this chat)"
        )
        self.drop_button.setAccessibleName("Drop the oldest turns from the prompt")
        self.drop_button.clicked.connect(self.dropOldestTurns)
        warning_row.addWidget(self.drop_button)
        self.warning.hide()
        column.addWidget(self.warning)
        row = QHBoxLayout()
        row.setSpacing(8)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(6)
        self.bar.setAccessibleName("Context used")
        row.addWidget(self.bar, 1)
        self.label = QLabel()
        self.label.setObjectName("Muted")
        self.label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(self.label)
        column.addLayout(row)
        self.reading: MeterReading | None = None
        self.setVisible(False)

    def show_reading(self, reading: MeterReading) -> None:
        self.reading = reading
        self.setVisible(bool(reading.limit))
        if not reading.limit:
            self.warning.hide()
            return
        self.bar.setRange(0, reading.limit)
        self.bar.setValue(min(reading.used, reading.limit))
        approx = "" if reading.exact else "~"
        trimmed = " · oldest turns not sent" if reading.trimmed else ""
        self.label.setText(f"{approx}{reading.used:,} / {reading.limit:,} tokens{trimmed}")
        self.label.setToolTip(
            "The prompt the next send makes (this chat and your message) of the context the "
            "model was loaded with"
            + ("" if reading.exact else "; an estimate until the model's tokenizer has counted it")
        )
        self.bar.setAccessibleDescription(self.label.text())
        self.warning.setVisible(reading.overflow)
        if reading.overflow:
            left, context = reading.limit - reading.used, f"the {reading.limit:,}-token context"
            if left < 0:
                what = f"This send would take {reading.used:,} tokens, more than {context}"
            elif left == 0:
                what = f"This send would fill {context}, with no room for the answer"
            else:
                what = f"This send would leave only {left:,} tokens of {context} for the answer"
            fix = (
                "start a new chat with a summary, or drop the oldest turns."
                if reading.droppable
                else "shorten your message or remove attachments."
            )
            self.warning_label.setText(f"{what}: {fix}")
            self.summary_button.setVisible(reading.droppable)
            self.drop_button.setVisible(reading.droppable)
