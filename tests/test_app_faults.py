"""Faults with real processes, a real SQLite file and real file systems: a second launch on the same data
folder, Ctrl+C, a damaged database, a read-only data folder and a disk that fills up while an answer streams.

A tiny tmpfs stands in for a full or read-only disk; making one needs root (tests skip cleanly without).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_app_data import corrupt_a_page

ROOT = Path(__file__).resolve().parent.parent


def env_for(data: Path) -> dict:
    env = {
        **os.environ,
        "QWENDESK_DATA_DIR": str(data),
        "QT_QPA_PLATFORM": "offscreen",
        "MLX_DISABLE_COMPILE": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


_launched: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while _launched:
        proc = _launched.pop()
        if proc.poll() is None:  # a failed test left it waiting in a dialog
            proc.kill()
            proc.wait(30)


class App:
    """``python -m app`` as a user starts it, on one data folder."""

    def __init__(
        self, data: Path, *args: str, log_name: str = "app", cwd: Path = ROOT, reload: bool = False
    ):
        self.data = data
        self.err_path = data.parent / f"{log_name}-{time.monotonic_ns()}.stderr"
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - closed in wait()
        command = [sys.executable, "-m", "app", *([] if reload else ["--no-reload"]), *args]
        self.proc = subprocess.Popen(
            command, cwd=cwd, env=env_for(data), stdout=subprocess.DEVNULL, stderr=self._err
        )
        _launched.append(self.proc)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, condition, timeout: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc.poll() is not None and not condition():
                break
            time.sleep(0.1)
        assert condition(), (
            f"{what or condition} did not happen; exit {self.proc.poll()}; stderr:\n{self.stderr}"
        )

    def started(self) -> bool:
        log = self.data / "logs" / "qwendesk.log"
        return log.exists() and f"pid {self.proc.pid} started" in log.read_text(errors="replace")

    def interrupt(self) -> int:
        """Ctrl+C in the terminal."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._err.close()
        return code


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(size, read_only=False)`` -> a fresh tmpfs mount point; skips where mounting is denied."""
    mounts: list[Path] = []

    def mount(size: str, name: str = "mnt") -> Path:
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'})")
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def remount_read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True, capture_output=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean_exit(app: App) -> None:
    err = app.stderr
    assert "Traceback" not in err, err
    assert "QThread: Destroyed" not in err, err


# --- one instance per data folder ---------------------------------------------------------------------


def test_a_second_launch_hands_its_file_to_the_first_and_touches_nothing(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    photo = tmp_path / "photo.png"
    Image.new("RGB", (1024, 768), "teal").save(photo)
    first = App(data, log_name="first")
    try:
        first.wait_for(first.started, 90, "the first window")
        # The first window's live answer, as a second instance would find it in the database.
        db = sqlite3.connect(data / "qwendesk.sqlite3", isolation_level=None)
        db.execute(
            "INSERT INTO conversations(id, title, created_at, updated_at) VALUES('c1', 'live', 0, 0)"
        )
        db.execute(
            "INSERT INTO messages(conversation_id, position, role, text, state, created_at) "
            "VALUES('c1', 0, 'assistant', 'half an answer', 'streaming', 0)"
        )
        # A relative path, as typed in a terminal: it must resolve in the second process's folder.
        second = App(data, "photo.png", log_name="second", cwd=tmp_path)
        assert second.wait() == 0, second.stderr
        first.wait_for(lambda: list((data / "attachments").glob("*/*.png")), 30, "the hand-over")
        imported = list((data / "attachments").glob("*/*.png"))
        assert len(imported) == 1 and imported[0].read_bytes() == photo.read_bytes()
        third = App(data, log_name="third")  # a launch with no files: it must not clean anything up
        assert third.wait() == 0, third.stderr
        assert imported[0].exists()  # the first window's pending attachment survived
        state = db.execute("SELECT state FROM messages WHERE conversation_id='c1'").fetchone()[0]
        assert state == "streaming"  # not marked "interrupted" by the later launches
        db.close()
        assert first.proc.poll() is None  # still running
    finally:
        code = first.interrupt()
    assert code == 0
    clean_exit(first)


# --- start-up faults ----------------------------------------------------------------------------------


def test_a_damaged_database_is_reported_and_left_untouched(tmp_path):
    from app.store import Store

    data = tmp_path / "data"
    data.mkdir()
    store = Store(data / "qwendesk.sqlite3", data / "attachments")
    for n in range(40):
        store.add_message(store.create_conversation(f"chat {n}"), "user", "words " * 400)
    store.close()
    database = data / "qwendesk.sqlite3"
    corrupt_a_page(database)
    before = digest(database)
    app = App(data)
    app.wait_for(lambda: "is damaged" in app.stderr, 60, "the damaged-database message")
    assert app.proc.poll() is None  # the dialog is open, waiting for the user's choice
    assert app.interrupt() == 1
    clean_exit(app)
    assert digest(database) == before


def test_a_read_only_data_folder_is_reported_and_nothing_is_lost(tmp_path, mount_tmpfs):
    from app.store import Store

    data = mount_tmpfs("8m", "data")
    store = Store(data / "qwendesk.sqlite3", data / "attachments")
    store.add_message(store.create_conversation("precious"), "user", "keep me")
    store.close()
    before = digest(data / "qwendesk.sqlite3")
    remount_read_only(data)
    app = App(data)
    app.wait_for(
        lambda: "cannot write to its data folder" in app.stderr, 60, "the read-only message"
    )
    assert "read-only" in app.stderr
    assert app.interrupt() == 1
    clean_exit(app)
    assert digest(data / "qwendesk.sqlite3") == before


def test_ctrl_c_while_a_model_loads_joins_the_engine_thread(tmp_path, tiny_model_dir):
    from app.store import Store

    data = tmp_path / "data"
    data.mkdir()
    store = Store(data / "qwendesk.sqlite3", data / "attachments")
    store.set_pref("last_model", str(tiny_model_dir))
    store.close()
    app = App(data, reload=True)  # loads the last model on the engine thread at start
    log = data / "logs" / "qwendesk.log"
    app.wait_for(app.started, 90, "start-up")
    app.wait_for(lambda: "loading " in log.read_text(), 30, "the model load")
    assert app.interrupt() == 0
    clean_exit(app)
    assert "quit with code 0" in log.read_text()


# --- a disk that fills up while an answer streams -------------------------------------------------------


def fill(folder: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = folder / "filler.bin"
    chunk = b"\0" * (64 * 1024)
    # Unbuffered: a write the full disk cut short leaves nothing for close() to flush (and fail on again).
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as error:
            assert error.errno == 28, error
    return filler


def test_a_full_disk_while_streaming_loses_no_answer(
    qapp, qt_wait, tiny_model_dir, mount_tmpfs, caplog
):
    from app import theme
    from app.paths import app_paths
    from app.store import ChatSettings, MessageState, Store, ThinkingMode
    from app.window import MainWindow

    data = mount_tmpfs("24m", "data")
    theme.apply(qapp, theme.Scheme.LIGHT)
    window = MainWindow(app_paths(data), reload_last=False)
    window.show()
    window.models.load(tiny_model_dir)
    qt_wait(lambda: window.models.loaded_info is not None, 120)
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=120, seed=5)
    )
    window.composer.edit.setPlainText("Tell me a long story")
    assert window.send(window.composer.text())
    qt_wait(lambda: window.chat._stream is not None and window.chat._stream.answer, 60)
    filler = fill(data)
    qt_wait(lambda: not window.chat.busy, 120)
    qt_wait(lambda: window.chat.unsaved, 10, "the final save failing on the full disk")
    assert "disk is full" in window.error_banner.label.text()
    assert window.transcript.widgets[-1].answer.markdown  # the answer is on screen meanwhile
    # The engine's state snapshot for the follow-up cannot be written either; it must leave no file.
    qt_wait(lambda: "persist failed" in caplog.text, 30, "the engine's snapshot save failing")
    assert not list((data / "engine-state").glob("*.tmp*"))
    filler.unlink()  # space frees up: the timer saves it without being asked
    qt_wait(lambda: not window.chat.unsaved, 10, "the retried save")
    cid = window.chat.current_id
    window.close()
    assert not list((data / "engine-state").glob("*.tmp*")), list((data / "engine-state").iterdir())
    again = Store(data / "qwendesk.sqlite3", data / "attachments")  # "after a restart"
    again.mark_interrupted()
    answer = again.messages(cid)[-1]
    again.close()
    assert answer.state is MessageState.COMPLETE and answer.text and answer.stats is not None


# --- the damaged-database dialog, operated ------------------------------------------------------------


def _history_with_backup(tmp_path):
    from app import recovery
    from app.paths import app_paths
    from app.store import Store

    paths = app_paths(tmp_path / "data").check()
    store = Store(paths.database, paths.attachments)
    store.add_message(store.create_conversation("in the backup"), "user", "hello")
    recovery.backup_if_due(store, paths)
    for n in range(40):
        store.add_message(store.create_conversation(f"later {n}"), "user", "words " * 300)
    store.close()
    corrupt_a_page(paths.database)
    return paths, digest(paths.database)


@pytest.mark.parametrize("choice", ["Open the backup copy", "Start a fresh history"])
def test_the_damaged_database_dialog_restores_a_backup_or_starts_fresh(qapp, tmp_path, choice):
    from PySide6.QtWidgets import QMessageBox
    from test_app_operated import with_modal

    from app.main import open_history
    from app.store import Store

    paths, damaged = _history_with_backup(tmp_path)
    shown: dict = {}

    def choose(box) -> None:
        assert isinstance(box, QMessageBox)
        shown["text"] = f"{box.text()} {box.informativeText()}"
        next(b for b in box.buttons() if b.text() == choice).click()

    errors = with_modal(choose)
    assert open_history(paths) is True
    assert not errors, errors
    assert "is damaged" in shown["text"] and "keeps the damaged file" in shown["text"]
    kept = list(paths.data.glob("qwendesk.sqlite3.damaged-*"))
    assert [digest(k) for k in kept if not k.name.endswith(("-wal", "-shm"))] == [damaged]
    store = Store(paths.database, paths.attachments, check=True)
    titles = [c.title for c in store.conversations()]
    store.close()
    assert titles == (["in the backup"] if choice.startswith("Open") else [])


def test_quitting_from_the_damaged_database_dialog_changes_nothing(qapp, tmp_path):
    from test_app_operated import with_modal

    from app.main import open_history

    paths, damaged = _history_with_backup(tmp_path)
    errors = with_modal(lambda box: next(b for b in box.buttons() if b.text() == "Quit").click())
    assert open_history(paths) is False
    assert not errors, errors
    assert digest(paths.database) == damaged
    assert not list(paths.data.glob("*.damaged-*"))


def test_a_locked_database_asks_to_retry_and_then_opens(qapp, tmp_path):
    from PySide6.QtWidgets import QMessageBox
    from test_app_operated import with_modal

    from app.main import open_history
    from app.paths import app_paths
    from app.store import Store

    paths = app_paths(tmp_path / "data").check()
    Store(paths.database, paths.attachments).close()
    holder = sqlite3.connect(paths.database, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    shown: list[str] = []

    def release_and_retry(box) -> None:
        shown.append(box.text())
        holder.execute("COMMIT")
        holder.close()  # the other program lets go
        box.button(QMessageBox.StandardButton.Retry).click()

    errors = with_modal(release_and_retry, 30)
    assert open_history(paths) is True
    assert not errors, errors
    assert len(shown) == 1 and "locked by another program" in shown[0]


def test_a_native_crash_leaves_every_threads_stack_in_the_crash_log(tmp_path):
    """A crash in native code (here a read of address 0) cannot be caught, but the app's logging set-up
    leaves the Python stacks in ``logs/crash.log``, after the line that marks this start."""
    from app.main import CRASH_LOG

    crash = (
        "import ctypes, sys\n"
        "from pathlib import Path\n"
        "from app.main import setup_logging\n"
        "setup_logging(Path(sys.argv[1]))\n"
        "def reads_address_zero():\n"
        "    ctypes.string_at(0)\n"
        "reads_address_zero()\n"
    )
    logs = tmp_path / "logs"
    for _ in range(2):  # a second start appends: the first crash's record is kept
        proc = subprocess.run(
            [sys.executable, "-c", crash, str(logs)],
            cwd=ROOT,
            env=env_for(tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == -signal.SIGSEGV, proc.stderr
    text = (logs / CRASH_LOG).read_text()
    assert text.count("--- pid ") == 2 and text.count("Fatal Python error: Segmentation fault") == 2
    assert "line 6 in reads_address_zero" in text
