"""Where QwenDesk keeps its data and logs (platformdirs; QWENDESK_DATA_DIR overrides both for tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "QwenDesk"
ENV_DATA_DIR = "QWENDESK_DATA_DIR"


@dataclass(frozen=True)
class AppPaths:
    data: Path

    @property
    def database(self) -> Path:
        return self.data / "qwendesk.sqlite3"

    @property
    def attachments(self) -> Path:
        return self.data / "attachments"

    @property
    def engine_state(self) -> Path:
        return self.data / "engine-state"

    @property
    def demo_model(self) -> Path:
        return self.data / "demo-model"

    @property
    def logs(self) -> Path:
        return self.data / "logs" if os.environ.get(ENV_DATA_DIR) else Path(
            platformdirs.user_log_dir(APP_NAME, appauthor=False)
        )

    def ensure(self) -> "AppPaths":
        for folder in (self.data, self.attachments, self.engine_state, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def app_paths(data_dir: Path | str | None = None) -> AppPaths:
    """The data folder: an explicit argument, else $QWENDESK_DATA_DIR, else the platform's user data dir."""
    if data_dir is None:
        data_dir = os.environ.get(ENV_DATA_DIR) or platformdirs.user_data_dir(APP_NAME, appauthor=False)
    return AppPaths(Path(data_dir).expanduser())
