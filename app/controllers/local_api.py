"""The local OpenAI-compatible API as the app runs it: on/off, port, key, and the request log.

It serves the engine the app already loaded (through the engine's job queue, so chats and API
requests take turns). Off by default; the port and key are kept in the store's preferences, and the
switch is remembered so the server comes back on at the next start once the user turned it on.

It does not run while the app chats with a QwenDesk server (Settings ▸ Engine): no model is loaded
here to serve, and that server already is an OpenAI-compatible API this computer can reach, whole
(JSON schemas, forced tool calls, /v1/completions), which a relay through the app would not be; a
relay would also hand the server to any local app without its key (the local API has none by
default). The switch stays remembered, and the API comes back with This Mac.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine_mlx.errors import ServerError
from engine_mlx.remote.connection import ServerConnection
from engine_mlx.server.config import DEFAULT_PORT, ServerConfig
from engine_mlx.server.records import RequestRecord

from ..engine_choice import EngineChoice, EngineMode

log = logging.getLogger(__name__)

PREF_ENABLED, PREF_PORT, PREF_KEY = "api.enabled", "api.port", "api.key"


class LocalApiController(QObject):
    """Starts and stops the API server; ``requestLogged`` carries each RequestRecord (GUI thread)."""

    runningChanged = Signal(bool)
    failed = Signal(str)  # one sentence, e.g. the port is taken
    refusalChanged = Signal(str)  # why it cannot run now ("" = it can)
    requestLogged = Signal(RequestRecord)

    _recordFromServer = Signal(RequestRecord)  # emitted on the server's thread, delivered queued

    def __init__(
        self,
        shared: Callable[[], tuple[Any, Any]],
        store: Any = None,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self._shared = shared  # () -> (engine, job queue), the app's own
        self._store = store
        self._server = None
        self.refusal = ""  # why the API cannot run now (server mode), "" when it can
        self.records: list[RequestRecord] = []
        self._recordFromServer.connect(self._on_record)

    # ------------------------------------------------------------------ settings

    def _pref(self, key: str, default: str) -> str:
        if self._store is None:
            return default
        try:
            value = self._store.get_pref(key, default)
        except Exception:  # a damaged preference falls back to the default
            log.exception("reading %s", key)
            return default
        return default if value is None else value

    def _set_pref(self, key: str, value: str) -> None:
        if self._store is not None:
            try:
                self._store.set_pref(key, value)
            except Exception:
                log.exception("saving %s", key)

    @property
    def port(self) -> int:
        try:
            return int(self._pref(PREF_PORT, str(DEFAULT_PORT)))
        except ValueError:
            return DEFAULT_PORT

    def set_port(self, port: int) -> None:
        self._set_pref(PREF_PORT, str(int(port)))

    @property
    def key(self) -> str:
        return self._pref(PREF_KEY, "")

    def set_key(self, key: str) -> None:
        self._set_pref(PREF_KEY, key.strip())

    @staticmethod
    def new_key() -> str:
        return "qd-" + secrets.token_urlsafe(24)

    @property
    def remembered_on(self) -> bool:
        return self._pref(PREF_ENABLED, "0") == "1"

    # ------------------------------------------------------------------ server

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        port = self._server.port if self._server is not None else self.port
        return f"http://127.0.0.1:{port}/v1"

    def follow(self, choice: EngineChoice) -> None:
        """The app's engine is now ``choice``: off (the switch remembered) while it is a server's,
        on again with This Mac if the user left it on."""
        was, self.refusal = self.refusal, refusal_for(choice)
        if self.refusal and self._server is not None:
            self.stop(remember=False)
        elif was and not self.refusal and self.remembered_on:
            self.set_enabled(True)
        if was != self.refusal:
            self.refusalChanged.emit(self.refusal)

    def set_enabled(self, on: bool) -> bool:
        """Start or stop; returns whether the server now runs (a taken port reports ``failed``;
        in server mode it stays off, and ``refusal`` says why)."""
        if on and self.refusal:
            return False
        if on and self._server is None:
            from engine_mlx.server.runner import ApiServer

            engine, jobs = self._shared()
            server = ApiServer(
                engine,
                jobs,
                ServerConfig(port=self.port, api_key=self.key or None),
                on_request=self._recordFromServer.emit,
            )
            try:
                server.start()
            except OSError as exc:
                self.failed.emit(
                    f"The local API cannot listen on port {self.port}: "
                    f"{exc.strerror or exc}. Choose another port."
                )
                self.runningChanged.emit(False)
                return False
            self._server = server
            self._set_pref(PREF_ENABLED, "1")
            self.runningChanged.emit(True)
        elif not on and self._server is not None:
            self.stop(remember=True)
        return self.running

    def restart(self) -> None:
        """Apply a new port or key to a running server."""
        if self._server is not None:
            self.stop(remember=False)
            self.set_enabled(True)

    def stop(self, remember: bool = False) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            if remember:
                self._set_pref(PREF_ENABLED, "0")
            self.runningChanged.emit(False)

    def _on_record(self, record: RequestRecord) -> None:
        self.records.append(record)
        del self.records[:-500]
        self.requestLogged.emit(record)


def refusal_for(choice: EngineChoice) -> str:
    """Why the local API cannot run with the engine ``choice`` ("" when it can)."""
    if choice.mode is not EngineMode.SERVER:
        return ""
    try:
        address = ServerConnection.parse(choice.url).base_url
    except ServerError:
        address = choice.url
    return (
        f"Off while QwenDesk chats with the server at {address} (Settings ▸ Engine), as no model "
        "is loaded here to serve: point your apps at that server's address with its key, or "
        "choose This Mac in Settings ▸ Engine to serve here again."
    )
