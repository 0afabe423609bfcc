"""QwenDesk's desktop app (PySide6)."""

from .qtcompat import make_singletons_immortal

make_singletons_immortal()
