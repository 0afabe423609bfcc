"""The built-in "Files" tool: read-only access to the folders the user chose, as an in-process MCP server.

It runs through the same MCP path as any server (the SDK's in-process transport), needs no network and
no process. Every path the model names is resolved (symlinks and ``..`` included) and must land inside
one of the roots; anything else is refused with a message the model can act on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

MAX_READ_CHARS = (
    200_000  # read_text returns at most this much of a file (the host caps results too)
)
MAX_LIST = 1000  # entries per listing
MAX_SEARCH_HITS = 200
MAX_SEARCH_FILE_BYTES = 2 << 20  # content search skips files larger than this
MAX_SEARCH_FILES = 20_000  # files visited per search


class PathRefused(ToolError):  # the SDK passes a ToolError's message on to the model
    pass


def resolve_inside(roots: Sequence[Path], path: str) -> Path:
    """``path`` (absolute, or relative to the first root) resolved, if it lies inside a root."""
    if not roots:
        raise PathRefused("No folders are shared with the Files tool; add one in Settings ▸ Tools.")
    if "\0" in path:
        raise PathRefused("The path contains a NUL character.")
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = real_roots[0] / candidate
    real = Path(os.path.realpath(candidate))
    if not any(real == root or real.is_relative_to(root) for root in real_roots):
        shared = ", ".join(str(r) for r in real_roots)
        raise PathRefused(
            f"{path} is outside the shared folders ({shared}); only those can be read."
        )
    return real


def _walk(root: Path, roots: Sequence[Path]) -> Iterator[Path]:
    """Files under ``root`` whose real path stays inside the roots (symlinked folders not followed)."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                resolve_inside(roots, str(path))
            except PathRefused:
                continue
            yield path


def files_server(roots: Sequence[Path]) -> MCPServer:
    """An in-process MCP server with list, read and search over ``roots``."""
    roots = tuple(Path(r) for r in roots)
    server = MCPServer(
        "files",
        instructions="Read-only access to the folders the user shared with QwenDesk.",
        log_level="WARNING",
    )

    @server.tool(description="List the shared folders, or the files and folders in one of them.")
    def list_folder(path: str = "") -> str:
        if not path:
            return (
                "\n".join(str(Path(os.path.realpath(r))) for r in roots) or "No folders are shared."
            )
        folder = resolve_inside(roots, path)
        if not folder.is_dir():
            raise PathRefused(f"{path} is not a folder.")
        entries = sorted(folder.iterdir(), key=lambda p: p.name.lower())
        lines = [
            f"{p.name}/" if p.is_dir() else f"{p.name}  ({p.stat().st_size:,} bytes)"
            for p in entries[:MAX_LIST]
        ]
        if len(entries) > MAX_LIST:
            lines.append(f"… and {len(entries) - MAX_LIST:,} more")
        return "\n".join(lines) or "(empty folder)"

    @server.tool(description="Read a text file from a shared folder.")
    def read_text(path: str) -> str:
        file = resolve_inside(roots, path)
        if not file.is_file():
            raise PathRefused(f"{path} is not a file.")
        with open(file, encoding="utf-8", errors="replace") as handle:
            text = handle.read(MAX_READ_CHARS + 1)
        if len(text) > MAX_READ_CHARS:
            return (
                text[:MAX_READ_CHARS]
                + f"\n[… the file is longer; the first {MAX_READ_CHARS:,} characters are shown]"
            )
        return text

    @server.tool(
        description="Search the shared folders for files whose name or text contains the query."
    )
    def search(query: str, path: str = "") -> str:
        if not query.strip():
            raise PathRefused("The query is empty.")
        bases = (
            [resolve_inside(roots, path)] if path else [Path(os.path.realpath(r)) for r in roots]
        )
        needle = query.lower()
        hits: list[str] = []
        visited = 0
        for base in bases:
            for file in _walk(base, roots):
                visited += 1
                if visited > MAX_SEARCH_FILES or len(hits) >= MAX_SEARCH_HITS:
                    break
                if needle in file.name.lower():
                    hits.append(f"{file}  (name)")
                    continue
                try:
                    if file.stat().st_size > MAX_SEARCH_FILE_BYTES:
                        continue
                    with open(file, encoding="utf-8", errors="strict") as handle:
                        for number, line in enumerate(handle, 1):
                            if needle in line.lower():
                                hits.append(f"{file}:{number}: {line.strip()[:200]}")
                                break
                except (OSError, UnicodeDecodeError):
                    continue  # binary or unreadable: names only
        return "\n".join(hits) or f"Nothing in the shared folders matches {query!r}."

    return server
