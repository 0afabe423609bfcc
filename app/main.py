"""Application entry: QApplication, palette, logging to the platform log folder, the main window."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import sys
from pathlib import Path

from .paths import APP_NAME, app_paths

ICON = Path(__file__).resolve().parent.parent / "resources" / "icon.png"  # also right in the bundle


def setup_logging(log_dir: Path) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "qwendesk.log"
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)

    def excepthook(kind, value, tb) -> None:
        # An unexpected error in a slot: log it and keep the app running.
        logging.getLogger("qwendesk").error("unhandled exception", exc_info=(kind, value, tb))

    sys.excepthook = excepthook
    return log_file


def settle_gc() -> None:
    """Move start-up objects (Qt wrappers, modules) out of the GC's reach, so full collections while an
    answer streams walk only new objects and stay short."""
    import gc

    gc.collect()
    gc.freeze()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qwendesk", description="QwenDesk: Qwen3.5 chat, offline.")
    parser.add_argument("--data-dir", type=Path, help="keep history and attachments here")
    parser.add_argument("--theme", choices=("system", "light", "dark"), default="system")
    parser.add_argument("--no-reload", action="store_true", help="do not load the last model on start")
    parser.add_argument("--self-test", action="store_true", help="run the packaged self-test and exit")
    parser.add_argument("files", nargs="*", type=Path, help="images, PDFs or videos to attach")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.self_test:
        from . import selftest

        return int(selftest.run() or 0)
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication

    from . import theme
    from .file_open import FileOpenRouter
    from .store import StoreError
    from .window import MainWindow

    paths = app_paths(args.data_dir).ensure()
    log_file = setup_logging(paths.logs)
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setWindowIcon(QIcon(str(ICON)))
    router = FileOpenRouter(app)
    app.installEventFilter(router)  # Dock drops and "Open With" on macOS
    scheme = theme.Scheme(args.theme)
    theme.apply(app, scheme)
    # The window follows later system changes while View ▸ Theme is "System", and applies a remembered choice.
    try:
        window = MainWindow(paths, reload_last=not args.no_reload)
    except StoreError as error:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, APP_NAME, f"{error}\n\nLog: {log_file}")
        return 1
    window.show()
    router.set_target(window.open_files)
    router.open_paths(args.files)
    settle_gc()
    logging.getLogger("qwendesk").info("started; data in %s", paths.data)
    return app.exec()
