"""The page shown when there is no model at all: where to get Qwen3.5 MLX weights, or try the demo model."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

TEXT = """
<h2>Welcome to QwenDesk</h2>
<p>QwenDesk runs Qwen3.5 entirely on this computer through MLX. Nothing you type or attach leaves it.</p>
<p><b>Get a model.</b> <i>Get models…</i> downloads a Qwen3.5 MLX checkpoint from Hugging Face once (it
says the size first and resumes if interrupted). QwenDesk also finds models already in the Hugging Face
cache and in LM Studio's folder; use <i>Add folder…</i> for any other place.</p>
<p><b>Images, PDFs and videos need a vision checkpoint</b> (an <i>mlx-vlm</i> conversion). The common
4-bit <i>mlx-lm</i> conversions are <b>text-only</b>: they chat well but cannot see attachments.</p>
<p><b>Just trying the interface?</b> The demo model is tiny and built in a few seconds. It has
<b>random weights</b>: its answers are gibberish, but streaming, thinking, attachments and history all work.</p>
"""


class FirstRunPage(QFrame):
    chooseModel = Signal()
    getModels = Signal()
    addFolder = Signal()
    useDemo = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("FirstRun")
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        column = QVBoxLayout()
        text = QLabel(TEXT)
        text.setWordWrap(True)
        text.setTextFormat(Qt.TextFormat.RichText)
        text.setMaximumWidth(640)
        column.addWidget(text)
        buttons = QHBoxLayout()
        self.choose_button = QPushButton("Choose a model…")
        self.choose_button.clicked.connect(self.chooseModel)
        self.get_button = QPushButton("Get models…")
        self.get_button.clicked.connect(self.getModels)
        self.folder_button = QPushButton("Add folder…")
        self.folder_button.clicked.connect(self.addFolder)
        self.demo_button = QPushButton("Try the demo model (random weights)")
        self.demo_button.clicked.connect(self.useDemo)
        for button in (self.get_button, self.choose_button, self.folder_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        column.addLayout(buttons)
        demo = QHBoxLayout()  # its own row, so the page (and the window) can be narrow
        demo.addWidget(self.demo_button)
        demo.addStretch(1)
        column.addLayout(demo)
        self.status = QLabel()
        self.status.setObjectName("Muted")
        column.addWidget(self.status)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addLayout(column)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)
