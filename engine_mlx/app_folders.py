"""The model folders the QwenDesk app knows beyond the usual places: its demo model and the folders the
user added, read-only from its data folder, so ``python -m engine_mlx models`` lists what the picker lists."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from engine_mlx.data_dir import DATABASE, DEMO_MODEL, default_data_dir

FOLDERS_PREF = "model_folders"  # a JSON list of the folders added with "Add folder…"


def parse_folders(value: str | None) -> list[Path]:
    """The preference's JSON list as paths (a damaged value is no folders, not a crash)."""
    try:
        items = json.loads(value or "[]")
    except ValueError:
        return []
    return [Path(p) for p in items if isinstance(p, str)] if isinstance(items, list) else []


def app_model_folders(data: Path | None = None) -> list[Path]:
    """The app's demo model (once built) and added folders, read from its data folder without changing
    it; nothing when the app never ran here or its database cannot be read."""
    data = data or default_data_dir()
    demo, database = data / DEMO_MODEL, data / DATABASE
    folders = [demo] if (demo / "config.json").is_file() else []
    if database.is_file():
        try:
            db = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
            try:
                row = db.execute(
                    "SELECT value FROM preferences WHERE key=?", (FOLDERS_PREF,)
                ).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            row = None
        folders += parse_folders(row[0] if row else None)
    return folders
