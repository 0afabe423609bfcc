"""``mcp.json``: the MCP servers QwenDesk may start, in the notation of Cursor, LM Studio and Claude Desktop.

``{"mcpServers": {NAME: {"command", "args", "env", "cwd"} | {"url", "headers"}}}``, plus QwenDesk's own
optional keys per server: ``"enabled"`` (default true) and ``"timeout"`` (seconds per call, default 60).
A file the user edits by hand is untrusted input: every field is checked, and an error names the
server and the field.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_mlx.errors import EngineError

DEFAULT_TIMEOUT_S = 60.0
MAX_CONFIG_BYTES = 1 << 20  # a server list, not a data file
BUILTIN_FILES = "files"  # the built-in Files tool's server name (reserved)


class ToolConfigError(EngineError):
    """``mcp.json`` cannot be used; the message names the file, the server and the field."""


@dataclass(frozen=True)
class ServerConfig:
    """One MCP server: a command to run (stdio) or a URL (Streamable HTTP)."""

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_stdio(self) -> bool:
        return bool(self.command)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.is_stdio:
            out["command"] = self.command
            if self.args:
                out["args"] = list(self.args)
            if self.env:
                out["env"] = dict(self.env)
            if self.cwd:
                out["cwd"] = self.cwd
        else:
            out["url"] = self.url
            if self.headers:
                out["headers"] = dict(self.headers)
        if not self.enabled:
            out["enabled"] = False
        if self.timeout_s != DEFAULT_TIMEOUT_S:
            out["timeout"] = self.timeout_s
        return out


def parse_config(data: Any, source: str = "mcp.json") -> tuple[ServerConfig, ...]:
    """The servers of an ``mcp.json`` document; ToolConfigError naming the field if it is malformed."""
    if not isinstance(data, dict):
        raise ToolConfigError(f'{source}: expected a JSON object with "mcpServers"')
    servers = data.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise ToolConfigError(f'{source}: "mcpServers" must be an object of servers by name')
    return tuple(_server(name, spec, source) for name, spec in servers.items())


def _server(name: str, spec: Any, source: str) -> ServerConfig:
    where = f"{source}: server {name!r}"
    if not name.strip() or len(name) > 64 or any(c in name for c in "/\\\0\n"):
        raise ToolConfigError(
            f"{source}: {name!r} is not a usable server name (1-64 characters, no slashes)"
        )
    if not isinstance(spec, dict):
        raise ToolConfigError(f"{where} must be an object")
    command, url = spec.get("command"), spec.get("url")
    if bool(command) == bool(url):
        raise ToolConfigError(
            f'{where} needs either "command" (a program to run) or "url" (http/https)'
        )
    enabled = spec.get("enabled", not spec.get("disabled", False))
    if not isinstance(enabled, bool):
        raise ToolConfigError(f'{where}: "enabled" must be true or false')
    timeout = spec.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise ToolConfigError(f'{where}: "timeout" must be a number of seconds between 0 and 3600')
    if url:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ToolConfigError(f'{where}: "url" must be an http:// or https:// address')
        return ServerConfig(
            name,
            url=url,
            headers=_strings(spec.get("headers", {}), f'{where}: "headers"'),
            enabled=enabled,
            timeout_s=float(timeout),
        )
    if not isinstance(command, str):
        raise ToolConfigError(f'{where}: "command" must be a string')
    args = spec.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ToolConfigError(f'{where}: "args" must be a list of strings')
    cwd = spec.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ToolConfigError(f'{where}: "cwd" must be a folder path')
    return ServerConfig(
        name,
        command=command,
        args=tuple(args),
        env=_strings(spec.get("env", {}), f'{where}: "env"'),
        cwd=cwd,
        enabled=enabled,
        timeout_s=float(timeout),
    )


def _strings(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ToolConfigError(f"{where} must be an object of strings")
    return dict(value)


def load_config(path: Path) -> tuple[ServerConfig, ...]:
    """The servers in ``path``; none if the file does not exist."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ToolConfigError(
                f"{path}: is larger than {MAX_CONFIG_BYTES // 1024} KB; it is not an MCP config"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as e:
        raise ToolConfigError(f"{path}: cannot be read ({e})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ToolConfigError(f"{path}: is not valid JSON ({e})") from None
    servers = parse_config(data, str(path))
    if any(s.name == BUILTIN_FILES for s in servers):
        raise ToolConfigError(
            f"{path}: the server name {BUILTIN_FILES!r} is QwenDesk's built-in Files tool; rename it"
        )
    return servers


def save_config(path: Path, servers: tuple[ServerConfig, ...]) -> None:
    """Write ``servers`` to ``path`` atomically (a new file, then a rename)."""
    path = Path(path)
    document = {"mcpServers": {s.name: s.to_json() for s in servers}}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def import_candidates(home: Path | None = None) -> dict[str, Path]:
    """Other apps' MCP configs that "Import" can read, by app name, where they exist."""
    home = home or Path.home()
    if sys.platform == "darwin":
        claude = home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    elif sys.platform == "win32":
        claude = Path(os.environ.get("APPDATA", home)) / "Claude" / "claude_desktop_config.json"
    else:
        claude = home / ".config" / "Claude" / "claude_desktop_config.json"
    found = {"LM Studio": home / ".lmstudio" / "mcp.json", "Claude Desktop": claude}
    return {app: path for app, path in found.items() if path.is_file()}


def merge_imported(
    current: tuple[ServerConfig, ...], imported: tuple[ServerConfig, ...]
) -> tuple[ServerConfig, ...]:
    """``current`` plus the imported servers whose names are new (an existing server is never replaced).
    Imported servers start disabled: the user enables each one they trust."""
    names = {s.name for s in current}
    from dataclasses import replace

    added = tuple(
        replace(s, enabled=False)
        for s in imported
        if s.name not in names and s.name != BUILTIN_FILES
    )
    return current + added
