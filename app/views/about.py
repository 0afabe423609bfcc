"""Help ▸ About: the version, where MLX runs, and where QwenDesk keeps its data and logs."""

from __future__ import annotations

import html
from importlib import metadata

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from ..paths import AppPaths


def app_version() -> str:
    try:
        return metadata.version("qwendesk")
    except metadata.PackageNotFoundError:
        return "development"


def mlx_device() -> str:
    """ "gpu (Metal)" on a Mac, "cpu" elsewhere; why if MLX cannot be imported."""
    try:
        import mlx.core as mx

        device = mx.default_device()
        kind = "gpu (Metal)" if device.type == mx.DeviceType.gpu else "cpu"
        return f"{kind}, MLX {mx.__version__}"
    except Exception as error:  # noqa: BLE001 - shown, not raised: About must always open
        return f"unavailable ({error})"


def about_text(paths: AppPaths) -> str:
    rows = [
        ("Version", app_version()),
        ("MLX device", mlx_device()),
        ("Data folder", str(paths.data)),
        ("Log folder", str(paths.logs)),
    ]
    body = "".join(
        f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    return (
        "<h3>QwenDesk</h3><p>Qwen3.5 on this computer through MLX. Nothing leaves it.</p>"
        f"<table>{body}</table>"
    )


def about_box(paths: AppPaths, parent: QWidget) -> QMessageBox:
    box = QMessageBox(parent)
    box.setWindowTitle("About QwenDesk")
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setText(about_text(paths))
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setStandardButtons(QMessageBox.StandardButton.Close)
    return box
