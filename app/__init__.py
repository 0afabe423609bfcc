"""QwenDesk's desktop app (PySide6)."""
