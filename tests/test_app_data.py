"""The Qt-free parts behind the fixes: typed settings, search patterns, damaged and locked databases,
backups, model output that must not show images or raw HTML, and the CLI's progress line."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import sys

import pytest

from app import recovery
from app.mathtext import tex_to_html
from app.paths import DataFolderError, app_paths
from app.render import render_markdown
from app.store import ChatSettings, DatabaseDamaged, DatabaseLocked, Store, ThinkingMode


def test_settings_take_a_plain_string_thinking_mode_back_as_the_enum():
    settings = ChatSettings(thinking="off")  # what QComboBox.itemData hands back for a str enum
    assert settings.thinking is ThinkingMode.OFF
    assert ChatSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError):
        ChatSettings(thinking="sometimes")


def test_title_search_treats_like_wildcards_literally(tmp_path):
    store = Store(tmp_path / "db.sqlite3", tmp_path / "att")
    for title in ("snake_case", "plain", "100% sure", "back\\slash"):
        store.create_conversation(title)
    assert [h.title for h in store.search("_")] == ["snake_case"]
    # no word: the titles are still searched
    assert [h.title for h in store.search("%")] == ["100% sure"]
    assert [h.title for h in store.search("0% s")] == ["100% sure"]
    assert [h.title for h in store.search("k\\s")] == ["back\\slash"]
    store.close()


def _database_with_history(path) -> None:
    store = Store(path, path.parent / "attachments")
    for n in range(60):
        cid = store.create_conversation(f"chat {n}")
        store.add_message(cid, "user", "some words " * 200)
    store.close()


def corrupt_a_page(path, skip: int = 0) -> int:
    """Overwrite the header of a table b-tree page (after ``skip`` of them), as a bad sector or a torn write
    would; returns the page number."""
    size = 4096
    data = path.read_bytes()
    leaves = [n for n in range(1, len(data) // size) if data[n * size] == 0x0D]
    page = leaves[min(skip, len(leaves) - 1)]
    with open(path, "r+b") as handle:
        handle.seek(page * size)
        handle.write(b"\x51" * 24)
    return page


def test_a_damaged_page_is_found_when_the_database_opens(tmp_path):
    db = tmp_path / "qwendesk.sqlite3"
    _database_with_history(db)
    corrupt_a_page(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(DatabaseDamaged) as caught:
        Store(db, tmp_path / "attachments", check=True)
    assert str(db) in str(caught.value)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # opening it changed nothing


def test_a_locked_database_says_so(tmp_path):
    db = tmp_path / "qwendesk.sqlite3"
    Store(db, tmp_path / "attachments").close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatabaseLocked, match="locked by another program"):
            Store(db, tmp_path / "attachments", check=True, lock_timeout_s=0.2)
    finally:
        holder.execute("COMMIT")
        holder.close()


def test_backup_restore_and_fresh_start_keep_the_damaged_file(tmp_path):
    paths = app_paths(tmp_path / "data").check()
    store = Store(paths.database, paths.attachments)
    cid = store.create_conversation("kept in the backup")
    store.add_message(cid, "user", "hello")
    assert recovery.backup_if_due(store, paths) is not None
    assert recovery.backup_if_due(store, paths) is None  # one a day
    store.close()
    _database_with_history(paths.database)
    corrupt_a_page(paths.database)
    damaged = hashlib.sha256(paths.database.read_bytes()).hexdigest()
    kept = recovery.restore_backup(paths, recovery.backups(paths)[0])
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == damaged
    restored = Store(paths.database, paths.attachments, check=True)
    assert [c.title for c in restored.conversations()] == ["kept in the backup"]
    restored.close()
    corrupt_a_page(paths.database, skip=1)
    kept2 = recovery.start_fresh(paths)
    assert kept2.exists() and kept2 != kept and not paths.database.exists()
    fresh = Store(paths.database, paths.attachments, check=True)
    assert fresh.conversations() == []
    fresh.close()


def test_a_read_only_data_folder_is_explained(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        probe = folder / "probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip(
                "this user writes through file permissions (root): see test_app_faults for a read-only mount"
            )
        with pytest.raises(DataFolderError, match="cannot write to its data folder"):
            app_paths(folder).check()
    finally:
        folder.chmod(0o700)


def test_model_output_cannot_show_local_images_or_raw_html():
    html, _codes = render_markdown("look ![x](/etc/hosts.png) here ![](file:///tmp/a.png)")
    assert "<img" not in html and "/etc/hosts.png" in html
    html, _codes = render_markdown(r"math $\mathbb{<img src=/tmp/a.png width=900>}$ done")
    assert "<img" not in html and "&lt;img" in html
    assert tex_to_html(r"\mathbb{R}") == "ℝ"


def test_cli_progress_is_cleared_before_the_answer(monkeypatch):
    from engine_mlx.cli import CLEAR_LINE, _Printer
    from engine_mlx.events import AnswerDelta, Finished, FinishReason, Progress, ThinkingDelta

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)  # one terminal shows both streams
    _Printer(screen, as_json=False).show(
        [
            Progress(20, 21),
            Progress(21, 21),
            ThinkingDelta("hmm"),
            AnswerDelta("Hi"),
            Finished(FinishReason.STOP),
        ]
    )
    text = screen.getvalue()
    line = text.rsplit("\r", 1)[-1]  # what the terminal's line shows after the last carriage return
    assert text.index("prompt 21/21") < text.index(f"\r{CLEAR_LINE}\x1b[2mThinking: ")
    assert "prompt" not in line


def test_sizes_always_carry_a_unit_and_small_models_are_not_zero(tiny_model_dir):
    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.memory import estimate_fit
    from engine_mlx.sizes import human_bytes

    assert [human_bytes(n) for n in (0, 1, 512, 1536, 1_600_000, 5 * 2**30)] == [
        "0 bytes",
        "1 byte",
        "512 bytes",
        "1.5 KiB",
        "1.5 MiB",
        "5.0 GiB",
    ]
    info = inspect_checkpoint(tiny_model_dir)
    shown = human_bytes(info.weight_bytes)
    assert not shown.startswith("0.0") and shown.split()[1] in ("KiB", "MiB")
    summary = estimate_fit(info, 4096).summary()
    assert f"weights {shown}," in summary and " 0.0 " not in summary


def _check_qt_libs(tmp_path, sonames: list[str]):
    """scripts/check-qt-libs with a library cache that holds only ``sonames``."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    ldconfig = fake / "ldconfig"
    listing = "".join(f"\\t{s} (libc6,x86-64) => /usr/lib/{s}\\n" for s in sonames)
    ldconfig.write_text(f"#!/bin/sh\nprintf '{len(sonames)} libs found in cache\\n{listing}'\n")
    ldconfig.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "QT_QPA_PLATFORM": "xcb"}
    return subprocess.run(
        ["bash", str(root / "scripts" / "check-qt-libs")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(sys.platform != "linux", reason="the check runs on Linux only")
def test_run_script_names_missing_qt_libraries_and_the_apt_line(tmp_path):
    from pathlib import Path

    table = Path(__file__).resolve().parent.parent / "scripts" / "qt-linux-libraries"
    rows = [
        line.split()
        for line in table.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    present = [
        library
        for package, library in rows
        if package not in ("libxcb-cursor0", "libxkbcommon-x11-0")
    ]
    result = _check_qt_libs(tmp_path, present)
    assert result.returncode == 1
    assert "libxcb-cursor.so.0 libxkbcommon-x11.so.0" in result.stderr
    assert "sudo apt-get install -y libxcb-cursor0 libxkbcommon-x11-0\n" in result.stderr
    everything = _check_qt_libs(tmp_path, [library for _package, library in rows])
    assert everything.returncode == 0 and everything.stderr == ""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert all(package in readme for package, _library in rows)
