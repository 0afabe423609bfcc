"""Light/dark colours that follow the system palette, the application style sheet, and the remembered look
(the theme choice and the window's layout, in ``AppPaths.ui_settings``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QMainWindow, QSplitter, QWidget

from . import render


class Scheme(str, Enum):
    SYSTEM = "system"
    LIGHT = "light"
    DARK = "dark"


@dataclass(frozen=True)
class Colors:
    dark: bool
    window: str
    surface: str  # transcript background
    sidebar: str
    user_bubble: str
    border: str
    text: str
    muted: str
    accent: str
    danger: str

    @property
    def markdown(self) -> render.Palette:
        return render.DARK if self.dark else render.LIGHT


LIGHT = Colors(
    False,
    "#f6f7f9",
    "#ffffff",
    "#eef0f3",
    "#eef2fb",
    "#dcdfe4",
    "#1d2228",
    "#6b7280",
    "#4f6bed",
    "#c0392b",
)
DARK = Colors(
    True,
    "#1b1e23",
    "#22262c",
    "#181a1e",
    "#2c3340",
    "#363b44",
    "#e6e8eb",
    "#9aa3ad",
    "#7b93ff",
    "#ff6b5b",
)


def is_dark(app: QGuiApplication | None = None) -> bool:
    app = app or QGuiApplication.instance()
    hints = app.styleHints()
    scheme = hints.colorScheme() if hasattr(hints, "colorScheme") else Qt.ColorScheme.Unknown
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    return app.palette().color(QPalette.ColorRole.Window).lightness() < 128


def colors(app: QGuiApplication | None = None) -> Colors:
    return DARK if is_dark(app) else LIGHT


def _palette(c: Colors) -> QPalette:
    p = QPalette()
    roles = QPalette.ColorRole
    p.setColor(roles.Window, QColor(c.window))
    p.setColor(roles.WindowText, QColor(c.text))
    p.setColor(roles.Base, QColor(c.surface))
    p.setColor(roles.AlternateBase, QColor(c.sidebar))
    p.setColor(roles.Text, QColor(c.text))
    p.setColor(roles.Button, QColor(c.window))
    p.setColor(roles.ButtonText, QColor(c.text))
    p.setColor(roles.Highlight, QColor(c.accent))
    p.setColor(roles.HighlightedText, QColor("#ffffff"))
    p.setColor(roles.ToolTipBase, QColor(c.surface))
    p.setColor(roles.ToolTipText, QColor(c.text))
    p.setColor(roles.PlaceholderText, QColor(c.muted))
    p.setColor(roles.Link, QColor(c.accent))
    p.setColor(QPalette.ColorGroup.Disabled, roles.Text, QColor(c.muted))
    p.setColor(QPalette.ColorGroup.Disabled, roles.ButtonText, QColor(c.muted))
    return p


def style_sheet(c: Colors) -> str:
    return f"""
    #Sidebar {{ background: {c.sidebar}; border-right: 1px solid {c.border}; }}
    #Sidebar QListWidget {{ background: transparent; border: none; }}
    #Sidebar QListWidget::item {{ padding: 6px 8px; border-radius: 6px; }}
    #Sidebar QListWidget::item:selected {{ background: {c.accent}; color: white; }}
    #Transcript, #TranscriptInner {{ background: {c.surface}; }}
    #UserBubble {{ background: {c.user_bubble}; border-radius: 10px; }}
    #RoleLabel {{ color: {c.muted}; font-weight: 600; }}
    #Muted, #Stats {{ color: {c.muted}; }}
    #StateLabel {{ color: {c.danger}; }}
    #ThinkingHeader {{ color: {c.muted}; border: none; text-align: left; padding: 2px 0; }}
    #ThinkingBody {{ color: {c.muted}; background: {c.window}; border: 1px solid {c.border};
                     border-radius: 6px; }}
    #Composer {{ background: {c.surface}; border-top: 1px solid {c.border}; }}
    #ComposerEdit {{ border: 1px solid {c.border}; border-radius: 8px; padding: 6px;
                     background: {c.surface}; }}
    #AttachmentChip {{ border: 1px solid {c.border}; border-radius: 6px; background: {c.window}; }}
    #Banner {{ background: {c.user_bubble}; border-bottom: 1px solid {c.border}; }}
    #ErrorBanner {{ background: {"#4a2323" if c.dark else "#fdecea"}; border-bottom: 1px solid {c.border}; }}
    #FirstRun {{ background: {c.surface}; }}
    #VideoPane {{ border-left: 1px solid {c.border}; background: {c.window}; }}
    QToolButton#LinkButton {{ border: none; color: {c.muted}; padding: 2px 4px; }}
    QToolButton#LinkButton:hover {{ color: {c.accent}; }}
    #DropZone {{ border: 3px dashed {c.accent}; border-radius: 12px; color: {c.accent};
                 background: {"rgba(123,147,255,0.16)" if c.dark else "rgba(79,107,237,0.10)"}; }}
    QTextBrowser#AnswerView {{ background: transparent; border: none; }}
    #LimitNote {{ color: {c.muted}; font-style: italic; }}
    #ConsentCard {{ border: 1px solid {c.accent}; border-radius: 8px; background: {c.window}; }}
    #Message {{ border: 2px solid transparent; border-radius: 8px; }}
    #Message:focus {{ border: 2px solid {c.accent}; }}
    QScrollArea#Transcript {{ border: 2px solid transparent; }}
    QScrollArea#Transcript:focus {{ border: 2px solid {c.accent}; }}
    """


def apply(app: QApplication, scheme: Scheme = Scheme.SYSTEM) -> Colors:
    """Set the palette and style sheet; SYSTEM follows the platform (and its later changes)."""
    app.setStyle("Fusion") if app.style().name().lower() not in (
        "macos",
        "windowsvista",
        "windows11",
    ) else None
    if scheme is Scheme.SYSTEM:
        hints = app.styleHints()
        if hasattr(hints, "unsetColorScheme"):
            hints.unsetColorScheme()  # forget an explicit Light/Dark chosen earlier
        app.setPalette(app.style().standardPalette())
        c = colors(app)
    else:
        c = DARK if scheme is Scheme.DARK else LIGHT
        hints = app.styleHints()
        if hasattr(hints, "setColorScheme"):
            hints.setColorScheme(Qt.ColorScheme.Dark if c.dark else Qt.ColorScheme.Light)
    app.setPalette(_palette(c))
    app.setStyleSheet(style_sheet(c))
    app.setProperty("qwendesk_dark", c.dark)
    return c


def current(app: QGuiApplication | None = None) -> Colors:
    app = app or QGuiApplication.instance()
    value = app.property("qwendesk_dark") if app else None
    if value is None:
        return colors(app)
    return DARK if value else LIGHT


# --- the remembered look ---------------------------------------------------------------------------
def stored_scheme(settings: QSettings) -> Scheme:
    try:
        return Scheme(str(settings.value("theme", Scheme.SYSTEM.value)))
    except ValueError:
        return Scheme.SYSTEM


def remember_scheme(settings: QSettings, scheme: Scheme) -> None:
    settings.setValue("theme", scheme.value)


def restore_layout(settings: QSettings, window: QMainWindow, splitter: QSplitter) -> bool:
    """The window's geometry and splitter sizes as last saved; returns whether the sidebar was shown."""
    geometry = settings.value("window/geometry")
    if geometry is not None:
        window.restoreGeometry(geometry)
    sizes = settings.value("window/splitter")
    if isinstance(sizes, list) and len(sizes) == 3:
        try:
            splitter.setSizes([int(x) for x in sizes])
        except (TypeError, ValueError):
            pass
    return str(settings.value("window/sidebar", "true")).lower() != "false"


def save_layout(
    settings: QSettings, window: QMainWindow, splitter: QSplitter, sidebar: QWidget
) -> None:
    settings.setValue("window/geometry", window.saveGeometry())
    settings.setValue("window/splitter", [str(x) for x in splitter.sizes()])
    settings.setValue("window/sidebar", "true" if not sidebar.isHidden() else "false")
    settings.sync()
