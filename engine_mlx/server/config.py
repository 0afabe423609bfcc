"""Where the API listens and who may call it (no server imports: the CLI reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from engine_mlx.server.security import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8035


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0 = any free port
    api_key: str | None = None
    allow_origins: tuple[str, ...] = ()

    @property
    def exposed(self) -> bool:
        """Listening beyond this machine (needs an explicit choice; warn the user)."""
        return not is_loopback(self.host)


