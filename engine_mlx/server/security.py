"""Desktop safety checks run before any route: Host (DNS rebinding), browser Origin, bearer key.

A web page open in the user's browser can send requests to 127.0.0.1. A foreign ``Host`` header
means the page reached us through a rebinding DNS name; an ``Origin`` header means a browser sent
the request on a page's behalf. Both are refused unless the user allowed that origin.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from engine_mlx.server.errors import ApiError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessPolicy:
    host: str  # the address the server listens on
    port: int
    api_key: str | None = None
    # browser origins allowed to call, e.g. "http://localhost:3000"
    allow_origins: tuple[str, ...] = ()
    # names other machines reach this server by (serve --allow-host)
    allow_hosts: tuple[str, ...] = ()

    def allowed_hosts(self) -> set[str] | None:
        """``Host`` values accepted: the loopback names, the names the user allowed and the address
        listened on; None = any (listening on every interface with no names given: the key guards)."""
        names = set(LOOPBACK_NAMES) | {h.lower() for h in self.allow_hosts}
        if not is_loopback(self.host):
            if self.host in ("0.0.0.0", "::") and not self.allow_hosts:
                return None
            if self.host not in ("0.0.0.0", "::"):
                names.add(self.host if ":" not in self.host else f"[{self.host}]")
        hosts = {f"{name}:{self.port}" for name in names}
        if self.port in (80, 443):
            hosts |= names
        return hosts

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin.rstrip("/") in {
            o.rstrip("/") for o in self.allow_origins
        }

    def check(self, method: str, headers: dict[str, str]) -> None:
        """Raise ApiError (403 or 401) unless the request may go on. ``headers`` are lower-cased."""
        hosts = self.allowed_hosts()
        host = headers.get("host", "").lower()
        if hosts is not None and host not in hosts:
            raise ApiError(
                403,
                f"Host {host or '(none)'!r} is not a name this server answers to; use "
                f"127.0.0.1:{self.port}"
                + (f" or one of {', '.join(self.allow_hosts)}" if self.allow_hosts else "")
                + " (serve --allow-host NAME adds a name).",
                code="forbidden_host",
            )
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin):
            raise ApiError(
                403,
                f"Requests from the web page {origin} are refused; allow that origin in QwenDesk's "
                "Local API settings (or serve --allow-origin) to let it in.",
                code="forbidden_origin",
            )
        if self.api_key and method != "OPTIONS":
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.api_key.encode()
            ):
                raise ApiError(
                    401,
                    "Missing or wrong API key: send it as 'Authorization: Bearer KEY'.",
                    code="invalid_api_key",
                )
