"""Where QwenDesk keeps its data and logs (platformdirs; QWENDESK_DATA_DIR overrides both for tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from engine_mlx.data_dir import APP_NAME, DATABASE, DEMO_MODEL, ENV_DATA_DIR, default_data_dir


@dataclass(frozen=True)
class AppPaths:
    data: Path

    @property
    def database(self) -> Path:
        return self.data / DATABASE

    @property
    def attachments(self) -> Path:
        return self.data / "attachments"

    @property
    def engine_state(self) -> Path:
        return self.data / "engine-state"

    @property
    def ui_settings(self) -> Path:
        """The window's geometry, splitter sizes, sidebar and theme (QSettings, INI), beside the database."""
        return self.data / "ui.ini"

    @property
    def server_key(self) -> Path:
        """The QwenDesk server's API key (Settings ▸ Engine), readable by the user only."""
        return self.data / "server-key"

    @property
    def backups(self) -> Path:
        return self.data / "backups"

    @property
    def demo_model(self) -> Path:
        return self.data / DEMO_MODEL

    @property
    def logs(self) -> Path:
        return (
            self.data / "logs"
            if os.environ.get(ENV_DATA_DIR)
            else Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))
        )

    def ensure(self) -> AppPaths:
        for folder in (self.data, self.attachments, self.engine_state, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def check(self) -> AppPaths:
        """Create the folders and prove the data folder is writable; ``DataFolderError`` says what to do."""
        import tempfile

        try:
            self.ensure()
            with tempfile.TemporaryFile(dir=self.data):
                pass
        except OSError as error:
            raise DataFolderError(self.data, error) from error
        return self


class DataFolderError(Exception):
    """The data folder cannot be created or written."""

    def __init__(self, folder: Path, error: OSError):
        self.folder = folder
        why = {
            13: "permission denied",
            30: "it is on a read-only disk",
            28: "the disk is full",
        }.get(error.errno or 0, error.strerror or str(error))
        where = f"{error.filename}" if error.filename and Path(error.filename) != folder else ""
        super().__init__(
            f"QwenDesk cannot write to its data folder {folder}{f' ({where})' if where else ''}: {why}. "
            f"Your chats there are untouched. Make the folder writable (or free some space), or start "
            f"QwenDesk with another folder (--data-dir or {ENV_DATA_DIR}), then start it again."
        )


def app_paths(data_dir: Path | str | None = None) -> AppPaths:
    """The data folder: an explicit argument, else $QWENDESK_DATA_DIR, else the platform's user data dir."""
    return AppPaths(default_data_dir() if data_dir is None else Path(data_dir).expanduser())
