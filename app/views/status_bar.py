"""The status bar: the loaded model, load progress, speed, context use and memory."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QWidget


class StatusBar(QStatusBar):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.status_model = QLabel("No model loaded")
        self.status_memory = QLabel()
        self.status_speed = QLabel()
        self.status_context = QLabel()
        self.load_progress = QProgressBar()
        self.load_progress.setMaximumWidth(220)
        self.load_progress.setRange(0, 1000)
        self.load_progress.hide()
        for widget in (self.status_model, self.load_progress):
            self.addWidget(widget)
        for widget in (self.status_speed, self.status_context, self.status_memory):
            self.addPermanentWidget(widget)
