"""Where the API listens, who may call it and its defaults for requests (no server imports: the
CLI reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine_mlx.server.security import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8035
DEFAULT_KEEPALIVE_S = 10.0  # an SSE comment after this long without a byte sent
DEFAULT_MEDIA_CAP_BYTES = 256 << 20  # inline images kept on disk between requests


@dataclass(frozen=True)
class ThinkingDefault:
    """Thinking for requests that say nothing about it (``serve --thinking on|off|budget N``)."""

    on: bool = True
    budget: int | None = None  # thinking tokens before ``</think>`` is forced; None = no limit


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0 = any free port
    api_key: str | None = None
    allow_origins: tuple[str, ...] = ()
    context_tokens: int | None = (
        None  # prompt + reply tokens a request may use; None = the model's own
    )
    thinking: ThinkingDefault = field(default_factory=ThinkingDefault)
    reasoning_alias: bool = (
        False  # also send reasoning as ``reasoning`` (beside ``reasoning_content``)
    )
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    media_cap_bytes: int = DEFAULT_MEDIA_CAP_BYTES
    # Host names clients may use beyond loopback (e.g. studio.local)
    allow_hosts: tuple[str, ...] = ()
    tls_cert: Path | None = None  # serve HTTPS with the user's own certificate and key (PEM)
    tls_key: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def exposed(self) -> bool:
        """Listening beyond this machine (needs an explicit choice; warn the user)."""
        return not is_loopback(self.host)
