"""Which engine the app uses (Settings ▸ Engine): this Mac's, or a QwenDesk server's, with its key.

The address is a preference in the database. The key is not: the database is copied into backups and
its rows are plain text, so the key lives in a file of its own in the data folder that only the user can
read (0600), and it is never logged (``ServerConnection`` leaves it out of its repr). No system keychain
is used: that needs a keyring library and, on Linux, a running secret service.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from engine_mlx.remote.connection import ServerConnection

from .store import Store

log = logging.getLogger(__name__)

MODE_PREF = "engine_mode"
URL_PREF = "server_url"
CERTIFICATE_PREF = "server_certificate"


class EngineMode(str, Enum):
    LOCAL = "local"  # this Mac runs the model
    SERVER = "server"  # a QwenDesk server runs it


@dataclass(frozen=True)
class EngineChoice:
    mode: EngineMode = EngineMode.LOCAL
    url: str = ""  # the server's address as the user typed it
    certificate: str = ""  # the server's own certificate (PEM) to trust for https, if any


def read_choice(store: Store) -> EngineChoice:
    try:
        mode = EngineMode(store.get_pref(MODE_PREF, EngineMode.LOCAL.value))
    except ValueError:
        mode = EngineMode.LOCAL
    return EngineChoice(
        mode, store.get_pref(URL_PREF, "") or "", store.get_pref(CERTIFICATE_PREF, "") or ""
    )


def save_choice(store: Store, choice: EngineChoice) -> None:
    store.set_pref(MODE_PREF, choice.mode.value)
    store.set_pref(URL_PREF, choice.url)
    store.set_pref(CERTIFICATE_PREF, choice.certificate)


class KeyFile:
    """The server key on disk: written owner-only, removed when the key is cleared."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as error:
            log.warning(
                "the server key file %s cannot be read: %s", self.path, type(error).__name__
            )
            return ""

    def write(self, key: str) -> None:
        """Replace the key (OSError when the data folder cannot be written)."""
        if not key:
            self.path.unlink(missing_ok=True)
            return
        part = self.path.with_name(self.path.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(key)
        os.chmod(part, 0o600)  # also when the file was there with other permissions
        os.replace(part, self.path)


def connection_for(choice: EngineChoice, key: str) -> ServerConnection:
    """The server connection of a choice (ServerError when the address cannot be used)."""
    return ServerConnection.parse(choice.url, key, choice.certificate)
