"""Per-chat settings: system prompt, thinking on/off/budget, and sampling (blank = Qwen's default)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine_mlx.settings import NON_THINKING_SAMPLING, THINKING_SAMPLING, GenerationSettings

from ..store import ChatSettings, ThinkingMode

DEFAULT = "Qwen default"


def _optional_float(
    minimum: float, maximum: float, step: float, decimals: int = 2
) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(minimum - step, maximum)  # the value below the minimum means "default"
    box.setSingleStep(step)
    box.setDecimals(decimals)
    box.setSpecialValueText(DEFAULT)
    return box


def _get(box: QDoubleSpinBox | QSpinBox):
    return None if box.value() == box.minimum() else box.value()


def _set(box, value) -> None:
    box.setValue(box.minimum() if value is None else value)


class SettingsDialog(QDialog):
    def __init__(
        self, settings: ChatSettings, parent: QWidget | None = None, *, for_new_chats: bool = False
    ):
        super().__init__(parent)
        self.setWindowTitle("Settings for new chats" if for_new_chats else "Chat settings")
        self.resize(520, 520)
        layout = QVBoxLayout(self)
        self.system_label = QLabel(
            "System prompt (for new chats)" if for_new_chats else "System prompt (for this chat)"
        )
        layout.addWidget(self.system_label)
        self.system = QPlainTextEdit(settings.system_prompt)
        self.system.setPlaceholderText("e.g. You are a concise assistant. Answer in English.")
        self.system.setMaximumHeight(110)
        self.system_label.setBuddy(self.system)
        layout.addWidget(self.system)
        form = QFormLayout()
        modes = QHBoxLayout()
        self.mode_on = QRadioButton("On")
        self.mode_off = QRadioButton("Off")
        self.mode_budget = QRadioButton("Budget")
        self.group = QButtonGroup(self)
        for button in (self.mode_on, self.mode_off, self.mode_budget):
            self.group.addButton(button)
            modes.addWidget(button)
        self.budget = QSpinBox()
        self.budget.setAccessibleName("Thinking budget")
        self.budget.setRange(1, 65536)
        self.budget.setSingleStep(256)
        self.budget.setSuffix(" tokens")
        self.budget.setValue(settings.thinking_budget)
        modes.addWidget(self.budget)
        {
            ThinkingMode.ON: self.mode_on,
            ThinkingMode.OFF: self.mode_off,
            ThinkingMode.BUDGET: self.mode_budget,
        }[settings.thinking].setChecked(True)
        self.group.buttonToggled.connect(
            lambda *_: self.budget.setEnabled(self.mode_budget.isChecked())
        )
        self.budget.setEnabled(self.mode_budget.isChecked())
        form.addRow("Thinking", modes)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 262144)
        generation = settings.generation
        self.max_tokens.setValue(generation.max_tokens)
        self.max_tokens.setSuffix(" tokens")
        self.max_tokens.setToolTip(
            "The most tokens one reply may generate, its thinking and its answer "
            "together. A reply cut at this limit offers Continue."
        )
        form.addRow("Max tokens per reply\n(thinking + answer)", self.max_tokens)
        self.temperature = _optional_float(0.0, 2.0, 0.05)
        self.top_p = _optional_float(0.0, 1.0, 0.05)
        self.top_k = QSpinBox()
        self.top_k.setRange(-1, 1000)
        self.top_k.setSpecialValueText(DEFAULT)
        self.presence = _optional_float(-2.0, 2.0, 0.1)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setSpecialValueText("Random")
        _set(self.temperature, generation.temperature)
        _set(self.top_p, generation.top_p)
        _set(self.top_k, generation.top_k)
        _set(self.presence, generation.presence_penalty)
        _set(self.seed, generation.seed)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top p", self.top_p)
        form.addRow("Top k", self.top_k)
        form.addRow("Presence penalty", self.presence)
        form.addRow("Seed", self.seed)
        layout.addLayout(form)
        t, n = THINKING_SAMPLING, NON_THINKING_SAMPLING
        hint = QLabel(
            f"Qwen's defaults — thinking: temperature {t.temperature}, top p {t.top_p}, top k {t.top_k}, "
            f"presence {t.presence_penalty}; no thinking: temperature {n.temperature}, top p {n.top_p}, "
            f"top k {n.top_k}, presence {n.presence_penalty}."
        )
        hint.setObjectName("Muted")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def value(self) -> ChatSettings:
        mode = ThinkingMode.ON
        if self.mode_off.isChecked():
            mode = ThinkingMode.OFF
        elif self.mode_budget.isChecked():
            mode = ThinkingMode.BUDGET
        return ChatSettings(
            system_prompt=self.system.toPlainText(),
            thinking=mode,
            thinking_budget=self.budget.value(),
            generation=GenerationSettings(
                max_tokens=self.max_tokens.value(),
                temperature=_get(self.temperature),
                top_p=_get(self.top_p),
                top_k=_get(self.top_k),
                presence_penalty=_get(self.presence),
                seed=_get(self.seed),
            ),
        )
