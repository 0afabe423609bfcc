"""Where a QwenDesk server is and the key it wants: checked once, when the user types them in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from engine_mlx.errors import ServerError


@dataclass(frozen=True)
class ServerConnection:
    """A server's API base URL (``http(s)://host:port/v1``) and its key. The key never appears in
    ``repr`` (nor, so, in a log line or a traceback's locals)."""

    base_url: str
    api_key: str = field(default="", repr=False)
    # For https with the server's own certificate (serve --tls-cert): that certificate (PEM), trusted
    # for this server only; None trusts the system's certificate authorities.
    certificate: Path | None = None
    connect_timeout_s: float = 10.0

    @property
    def host(self) -> str:
        """host:port, for messages."""
        return urlsplit(self.base_url).netloc

    @classmethod
    def parse(cls, url: str, api_key: str = "", certificate: str = "") -> ServerConnection:
        """The connection for what the user typed: ``studio.local:8035``, ``http://10.0.0.5:8035``
        or a full ``https://studio.local:8035/v1``; ServerError says what is wrong with it."""
        text = url.strip()
        if not text:
            raise ServerError(
                "Enter the server's address, e.g. http://studio.local:8035 (what "
                "`python -m engine_mlx serve` prints on the server)."
            )
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https"):
            raise ServerError(
                f"{url.strip()!r} is not an http:// or https:// address; enter the server's address "
                "as `serve` prints it, e.g. http://studio.local:8035."
            )
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or parts.query or parts.fragment:
            raise ServerError(
                f"{url.strip()!r} is not a server address; enter host and port, e.g. "
                "http://studio.local:8035."
            )
        if parts.username or parts.password:
            raise ServerError(
                "Put the API key in the key field, not in the address (it would be shown and saved "
                "with the address)."
            )
        path = parts.path.rstrip("/")
        if not path.endswith("/v1"):
            path += "/v1"
        key = api_key.strip()
        if any(c.isspace() or not c.isprintable() for c in key):
            raise ServerError(
                "The API key holds spaces or control characters; paste the key alone."
            )
        cert = Path(certificate.strip()).expanduser() if certificate.strip() else None
        if cert is not None and parts.scheme != "https":
            raise ServerError(
                "A certificate is only used with an https:// address; write https:// before the "
                "server's address, or leave the certificate empty."
            )
        if cert is not None and not cert.is_file():
            raise ServerError(
                f"The certificate {cert} is not a file; choose the PEM file the server was started "
                "with (serve --tls-cert)."
            )
        return cls(f"{parts.scheme}://{parts.netloc}{path}", key, cert)
