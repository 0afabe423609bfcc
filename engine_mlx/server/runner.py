"""Run the API on uvicorn: on a background thread (the app) or the main thread (the CLI).

Uvicorn because it streams, shuts down cleanly (in-flight requests get a grace period) and runs
in a thread of its own, while every MLX call stays on the engine's job thread.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from engine_mlx.jobs import EngineThread
from engine_mlx.server.app import ServerContext, build_app
from engine_mlx.server.config import ServerConfig
from engine_mlx.server.records import RequestRecord
from engine_mlx.server.security import AccessPolicy

log = logging.getLogger(__name__)


class ApiServer:
    """The OpenAI-compatible server for an engine whose MLX work runs on ``jobs``."""

    def __init__(
        self,
        engine: Any,
        jobs: EngineThread,
        config: ServerConfig | None = None,
        on_request: Callable[[RequestRecord], None] | None = None,
    ):
        self.config = config or ServerConfig()
        self._engine, self._jobs, self._on_request = engine, jobs, on_request
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.context: ServerContext | None = None

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1] if self._socket else self.config.port

    @property
    def base_url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"{self.config.scheme}://{host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._server is not None

    def bind(self) -> None:
        """Take the port now, so a busy port fails here (OSError) and not on the server thread."""
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError:
            sock.close()
            raise
        sock.listen(64)
        self._socket = sock
        self.context = ServerContext(
            self._engine,
            self._jobs,
            AccessPolicy(
                self.config.host,
                self.port,
                self.config.api_key or None,
                self.config.allow_origins,
                self.config.allow_hosts,
            ),
            on_request=self._on_request,
            config=self.config,
        )
        tls = (
            {"ssl_certfile": str(self.config.tls_cert), "ssl_keyfile": str(self.config.tls_key)}
            if self.config.tls_cert
            else {}
        )
        uv = uvicorn.Config(
            build_app(self.context),
            log_level="warning",
            timeout_graceful_shutdown=3,
            access_log=False,
            lifespan="off",
            **tls,
        )
        self._server = uvicorn.Server(uv)

    def serve(self) -> None:
        """Serve on this thread until ``stop`` (or Ctrl-C on the main thread)."""
        if self._server is None:
            self.bind()
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._cleanup()

    def start(self) -> None:
        """Bind, then serve on a background thread; returns once the server accepts requests."""
        self.bind()
        server = self._server
        self._thread = threading.Thread(target=self.serve, name="api-server", daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            threading.Event().wait(0.01)

    def stop(self) -> None:
        """Cancel the requests in flight and end ``serve`` (from any thread)."""
        server = self._server
        if server is None:
            return
        if self.context is not None:
            self.context.cancel_all()
        server.should_exit = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
            self._thread = None

    def _cleanup(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.context is not None:
            shutil.rmtree(self.context.media.folder, ignore_errors=True)
        self._server = None
