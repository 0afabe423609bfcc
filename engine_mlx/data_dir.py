"""QwenDesk's data folder, shared by the app and the command line: $QWENDESK_DATA_DIR, else the
platform's user data folder (macOS ~/Library/Application Support/QwenDesk, Linux ~/.local/share/QwenDesk)."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "QwenDesk"
ENV_DATA_DIR = "QWENDESK_DATA_DIR"
DATABASE = "qwendesk.sqlite3"  # the app's chats and preferences
DEMO_MODEL = "demo-model"  # the tiny demo model, once the user asked for it
MCP_CONFIG = "mcp.json"  # the MCP servers, in the data folder
MCP_CONSENT = "mcp-consent.json"  # Allow / Ask / Block, beside it


def default_data_dir() -> Path:
    import platformdirs

    return Path(
        os.environ.get(ENV_DATA_DIR) or platformdirs.user_data_dir(APP_NAME, appauthor=False)
    ).expanduser()
