"""The status bar: the loaded model, load progress, speed, MTP acceptance, context use and memory."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QWidget


def mtp_text(stats) -> str:
    """E.g. "MTP 78%": the drafts the model kept, or nothing for an answer that drafted none."""
    if not stats.drafted_tokens:
        return ""
    return f"MTP {stats.accepted_tokens / stats.drafted_tokens:.0%}"


class StatusBar(QStatusBar):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.status_model = QLabel("No model loaded")
        self.status_memory = QLabel()
        self.status_speed = QLabel()
        self.status_mtp = QLabel()
        self.status_mtp.setToolTip(
            "Of the tokens the MTP head drafted for the latest answer, the share the model kept"
        )
        self.status_context = QLabel()
        self.load_progress = QProgressBar()
        self.load_progress.setMaximumWidth(220)
        self.load_progress.setAccessibleName("Loading the model")
        self.load_progress.setRange(0, 1000)
        self.load_progress.hide()
        for widget in (self.status_model, self.load_progress):
            self.addWidget(widget)
        for widget in (
            self.status_speed,
            self.status_mtp,
            self.status_context,
            self.status_memory,
        ):
            self.addPermanentWidget(widget)

    def show_stats(self, stats, context_tokens: int) -> None:
        """Speed and context use of the chat's latest answer (a StoredStats)."""
        self.status_speed.setText(f"{stats.decode_tps:.1f} tok/s" if stats.decode_tps else "")
        self.status_mtp.setText(mtp_text(stats))
        used = stats.prompt_tokens + stats.generated_tokens
        self.status_context.setText(f"Context {used:,} / {context_tokens:,}")

    def clear_stats(self) -> None:
        self.status_speed.setText("")
        self.status_mtp.setText("")
        self.status_context.setText("")
