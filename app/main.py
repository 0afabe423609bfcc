"""Application entry: one instance per data folder, start-up faults as dialogs, logging, the main window.

Start-up, in order: the data folder must be writable; the first launch on a folder takes its lock (a later
launch hands its files to it and exits); the history database must be readable (else the user chooses a
backup copy or a fresh database, and the damaged file is kept); then the window. At exit every thread is
stopped and joined, and answers not yet saved are saved.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path

from .paths import APP_NAME, AppPaths, DataFolderError, app_paths

ICON = Path(__file__).resolve().parent.parent / "resources" / "icon.png"  # also right in the bundle
log = logging.getLogger("qwendesk")


def setup_logging(log_dir: Path) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "qwendesk.log"
    handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)

    def excepthook(kind, value, tb) -> None:
        # An unexpected error in a slot: log it and keep the app running.
        logging.getLogger("qwendesk").error("unhandled exception", exc_info=(kind, value, tb))

    sys.excepthook = excepthook
    record_crashes(log_dir / CRASH_LOG)
    return log_file


CRASH_LOG = "crash.log"


def record_crashes(path: Path) -> None:
    """A crash in native code (Qt, MLX, SQLite) writes every thread's Python stack to ``path``, so
    a user's report and the log say where it happened; each start marks its place in the file."""
    import faulthandler
    import time

    crash_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - faulthandler keeps it open
    crash_file.write(f"--- pid {os.getpid()} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    crash_file.flush()
    faulthandler.enable(file=crash_file, all_threads=True)


def settle_gc() -> None:
    """Move start-up objects (Qt wrappers, modules) out of the GC's reach, so full collections while an
    answer streams walk only new objects and stay short."""
    import gc

    gc.collect()
    gc.freeze()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="qwendesk", description="QwenDesk: Qwen3.5 chat, offline."
    )
    parser.add_argument("--data-dir", type=Path, help="keep history and attachments here")
    parser.add_argument("--theme", choices=("system", "light", "dark"), default="system")
    parser.add_argument(
        "--no-reload", action="store_true", help="do not load the last model on start"
    )
    parser.add_argument(
        "--self-test", action="store_true", help="run the packaged self-test and exit"
    )
    parser.add_argument("files", nargs="*", type=Path, help="images, PDFs or videos to attach")
    return parser.parse_args(argv)


def tell(text: str, *, title: str = APP_NAME) -> None:
    """A start-up fault: on stderr (for a terminal and the log) and in a dialog."""
    from PySide6.QtWidgets import QMessageBox

    print(f"{APP_NAME}: {text}", file=sys.stderr, flush=True)
    log.error("%s", text)
    QMessageBox.critical(None, title, text)


def open_history(paths: AppPaths) -> bool:
    """Make sure the history database opens and reads; on damage or a lock, ask what to do. Returns False
    when the user chose to quit. A damaged file is renamed aside, never overwritten or deleted."""
    from PySide6.QtWidgets import QMessageBox

    from . import recovery
    from .store import DatabaseDamaged, DatabaseLocked, Store, StoreError

    buttons = QMessageBox.StandardButton
    while True:
        try:
            store = Store(paths.database, paths.attachments, check=True)
        except DatabaseLocked as error:
            print(f"{APP_NAME}: {error}", file=sys.stderr, flush=True)
            box = QMessageBox(
                QMessageBox.Icon.Warning,
                APP_NAME,
                f"{error} Close the program that has it open (a database browser, a backup or "
                "sync tool), then press Retry.",
                buttons.Retry | buttons.Close,
            )
            if box.exec() != buttons.Retry:
                return False
            continue
        except DatabaseDamaged as error:
            print(f"{APP_NAME}: {error}", file=sys.stderr, flush=True)
            log.error("%s", error)
            backups = recovery.backups(paths)
            box = QMessageBox(QMessageBox.Icon.Critical, APP_NAME, str(error))
            box.setInformativeText(
                "QwenDesk keeps the damaged file (renamed, next to it) so nothing in it is lost, and can "
                + (f"open the backup copy from {_when(backups[0])} instead, or " if backups else "")
                + "start with a fresh, empty history."
            )
            use_backup = (
                box.addButton("Open the backup copy", QMessageBox.ButtonRole.AcceptRole)
                if backups
                else None
            )
            fresh = box.addButton("Start a fresh history", QMessageBox.ButtonRole.DestructiveRole)
            box.addButton("Quit", QMessageBox.ButtonRole.RejectRole)
            box.exec()
            try:
                if use_backup is not None and box.clickedButton() is use_backup:
                    kept = recovery.restore_backup(paths, backups[0])
                elif box.clickedButton() is fresh:
                    kept = recovery.start_fresh(paths)
                else:
                    return False
            except OSError as move_error:
                tell(
                    f"Could not set the damaged history database aside: {move_error}. Nothing was changed."
                )
                return False
            log.warning("the damaged history database is kept as %s", kept)
            continue
        except StoreError as error:
            tell(f"{error}\n\nNothing was changed. Fix the cause and start QwenDesk again.")
            return False
        recovery.backup_if_due(store, paths)
        store.close()
        return True


def _when(path: Path) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))


def quit_on_interrupt(app, window) -> None:
    """Ctrl+C in the terminal closes the window as the Quit menu does. Python runs signal handlers only
    between bytecodes, so a timer wakes the interpreter up a few times a second while Qt waits."""
    from PySide6.QtCore import QTimer

    def interrupted(_signum, _frame) -> None:
        from PySide6.QtWidgets import QDialog

        log.info("interrupted from the terminal: quitting")
        for widget in app.topLevelWidgets():  # an open dialog answers "no": Cancel, Close, Quit
            if isinstance(widget, QDialog) and widget.isVisible():
                widget.reject()
        if window is not None:
            window.close()
        app.exit(0)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(200)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (
        "--self-test" in argv
    ):  # the one place that dispatches it (the self-test has options of its own)
        from . import selftest

        return int(selftest.run(argv) or 0)
    args = parse_args(argv)
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication

    from . import theme
    from .instance import InstanceError, SingleInstance

    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setWindowIcon(QIcon(str(ICON)))
    scheme = theme.Scheme(args.theme)
    theme.apply(app, scheme)
    quit_on_interrupt(app, None)  # also while a start-up dialog is open

    paths = app_paths(args.data_dir)
    try:
        paths.check()
    except DataFolderError as error:
        tell(str(error))
        return 1
    log_file = setup_logging(paths.logs)

    instance = SingleInstance(paths.data)
    try:
        first = instance.acquire()
        if not first:
            instance.hand_over(args.files)
            log.info(
                "handed %d files to the QwenDesk already running on %s", len(args.files), paths.data
            )
            return 0
    except InstanceError as error:
        tell(f"{error} Quit it (or wait until it has closed), then start QwenDesk again.")
        return 1
    try:
        return _run_window(app, args, paths, instance, log_file)
    finally:
        instance.release()


def _run_window(app, args, paths: AppPaths, instance, log_file: Path) -> int:
    from .file_open import FileOpenRouter
    from .operations import Operation
    from .store import StoreError

    # Files opened before the window exists (Dock drops, "Open With", the command line, later launches
    # while a start-up dialog is open) wait in the router and are attached once the window is there.
    router = FileOpenRouter(app)
    app.installEventFilter(router)
    router.open_paths(args.files)
    shown: list = []  # the window, once built

    def handed_over(files: list) -> None:
        router.open_paths(files)
        for window in shown:  # a launch without files still brings the window to the front
            window.show()
            window.raise_()
            window.activateWindow()

    instance.filesReceived.connect(handed_over)
    if not open_history(paths):
        return 1
    from .window import MainWindow

    # The window follows later system changes while View ▸ Theme is "System", and applies a remembered choice.
    try:
        window = MainWindow(paths, reload_last=not args.no_reload)
    except StoreError as error:
        _stop_half_built_windows(app)
        tell(f"{error}\n\nLog: {log_file}")
        return 1
    quit_on_interrupt(app, window)
    window.show()
    shown.append(window)
    router.set_target(window.open_files)
    settle_gc()
    log.info("pid %d started; data in %s", os.getpid(), paths.data)
    code = app.exec()
    window.close()  # no-op when already closed; covers app.quit() from elsewhere
    Operation.stop_all()
    log.info("quit with code %d", code)
    return code


def _stop_half_built_windows(app) -> None:
    """A window whose construction failed may already run its engine thread: join it before exiting."""
    for widget in app.topLevelWidgets():
        engine = getattr(widget, "engine", None)
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()
