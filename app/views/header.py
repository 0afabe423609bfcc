"""The chat header: the chat's title, its thinking mode, the settings button and the model button."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QPushButton,
    QToolButton,
    QWidget,
)

from ..store import ThinkingMode
from .elided_label import ElidedLabel


class ChatHeader(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Composer")
        head = QHBoxLayout(self)
        head.setContentsMargins(16, 6, 12, 6)
        # a 100-character title must not widen the window
        self.title_label = ElidedLabel("New chat")
        font = self.title_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        self.title_label.setFont(font)
        head.addWidget(self.title_label, 1)
        self.thinking_combo = QComboBox()
        self.thinking_combo.addItem("Thinking on", ThinkingMode.ON)
        self.thinking_combo.addItem("Thinking off", ThinkingMode.OFF)
        self.thinking_combo.addItem("Thinking budget", ThinkingMode.BUDGET)
        self.thinking_combo.setAccessibleName("Thinking")
        self.thinking_combo.setToolTip(
            "Per chat: let the model think first, answer directly, or cap its thinking"
        )
        head.addWidget(self.thinking_combo)
        self.settings_button = QToolButton()
        self.settings_button.setText("⚙")
        self.settings_button.setAccessibleName("Chat settings")
        self.settings_button.setToolTip("Chat settings: system prompt, thinking, sampling (Ctrl+,)")
        head.addWidget(self.settings_button)
        self.model_button = QPushButton("No model")
        self.model_button.setToolTip("Choose, load or unload a model")
        self.model_button.setAccessibleName("Model")  # its text is the model's name
        head.addWidget(self.model_button)
