"""Text and code files attached to a message: read as UTF-8 with a size cap, entering the prompt as a
fenced block headed by the file name (every model can read them, text-only checkpoints included)."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import MediaError
from .sizes import human_bytes

# About 40k tokens of code: larger files would crowd out the conversation.
MAX_TEXT_BYTES = 160 * 1024

TEXT_SUFFIXES = frozenset(
    {
        ".txt",
        ".text",
        ".md",
        ".markdown",
        ".rst",
        ".org",
        ".tex",
        ".bib",
        ".log",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".conf",
        ".xml",
        ".html",
        ".htm",
        ".css",
        ".scss",
        ".svg",
        ".py",
        ".pyi",
        ".ipynb",
        ".js",
        ".mjs",
        ".cjs",
        ".jsx",
        ".ts",
        ".tsx",
        ".vue",
        ".svelte",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".cxx",
        ".hpp",
        ".hh",
        ".m",
        ".mm",
        ".swift",
        ".java",
        ".kt",
        ".kts",
        ".go",
        ".rs",
        ".rb",
        ".php",
        ".pl",
        ".lua",
        ".r",
        ".jl",
        ".scala",
        ".dart",
        ".cs",
        ".fs",
        ".hs",
        ".ml",
        ".ex",
        ".exs",
        ".erl",
        ".clj",
        ".el",
        ".zig",
        ".nim",
        ".sh",
        ".bash",
        ".zsh",
        ".fish",
        ".ps1",
        ".bat",
        ".sql",
        ".graphql",
        ".proto",
        ".cmake",
        ".gradle",
        ".diff",
        ".patch",
    }
)


def load_text(path: Path | str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The file's text; MediaError if it is missing, empty, too large, or not UTF-8 text."""
    from .media import check_file  # media imports this module's suffix list

    path = Path(path)
    size = check_file(path)
    if size > max_bytes:
        raise MediaError(
            path, f"is {human_bytes(size)}; text files can be at most {human_bytes(max_bytes)}"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MediaError(path, f"cannot be read ({e.strerror or e})") from None
    if b"\0" in data:
        raise MediaError(path, "is a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MediaError(path, "is not UTF-8 text") from None


def fenced_block(name: str, text: str) -> str:
    """The file as it enters the prompt: its name, then a fence longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    language = Path(name).suffix.lstrip(".").lower()
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"{name}\n{fence}{language}\n{body}{fence}"


__all__ = ["MAX_TEXT_BYTES", "TEXT_SUFFIXES", "fenced_block", "load_text"]
