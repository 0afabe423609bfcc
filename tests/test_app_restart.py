"""A real ``python -m app``, started twice on one data folder, loads the last model both times (issue 15,
item 1.2: the start-up rescan and the automatic load imported mlx-vlm/transformers on two threads at once,
and the load failed with "cannot import name 'AutoProcessor' from 'transformers'").

The app is watched from outside, through its log file: each run's part of the log must say the model was
loaded and the models were listed, with no error."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.main import CRASH_LOG
from app.paths import ENV_DATA_DIR, app_paths
from app.store import Store

ROOT = Path(__file__).resolve().parent.parent
START_S = 240  # the deadline for a cold start on a busy machine (a wait, not a timed assertion)


def _run_until_loaded(data: Path, log_file: Path) -> str:
    """Start the app, wait until its log says the load and the rescan have ended (or the app exited), quit it
    as the window's Quit does (SIGTERM closes the window), and return this run's part of the log."""
    offset = log_file.stat().st_size if log_file.exists() else 0
    env = {
        **os.environ,
        ENV_DATA_DIR: str(data),
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def this_run() -> str:
        if not log_file.exists():
            return ""
        with open(log_file, encoding="utf-8") as handle:
            handle.seek(offset)
            return handle.read()

    try:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline and proc.poll() is None:
            text = this_run()
            loaded = (
                "loaded " in text
                or "loading failed" in text
                or "loading " in text
                and " ERROR " in text
            )
            scanned = "model folders" in text or "Looking for models failed" in text
            if loaded and scanned:
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    crash_log = log_file.parent / CRASH_LOG
    crashes = crash_log.read_text()[-6000:] if crash_log.exists() else ""
    assert proc.returncode == 0, output[-3000:] + crashes
    return this_run()


def test_the_last_model_is_loaded_on_each_of_two_restarts(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    paths = app_paths(data).ensure()
    shutil.copytree(tiny_model_dir, paths.demo_model)  # the demo model, used last time
    store = Store(paths.database, paths.attachments)
    store.set_pref("last_model", str(paths.demo_model))
    store.close()
    log_file = data / "logs" / "qwendesk.log"
    for run in (1, 2):
        text = _run_until_loaded(data, log_file)
        assert f"loaded {paths.demo_model}" in text, f"run {run}:\n{text[-4000:]}"
        assert " ERROR " not in text and "loading failed" not in text, f"run {run}:\n{text[-4000:]}"
        # the rescan too
        assert re.search(r"found [1-9]\d* model folders", text), f"run {run}:\n{text[-4000:]}"
