"""One home per fact: byte counts are written by ``engine_mlx.sizes`` only, and the command line's defaults
are the settings' defaults (not literals beside them)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from engine_mlx.sizes import human_bytes


def test_a_77_byte_text_attachment_reads_77_bytes(qapp, tmp_path: Path) -> None:
    from app.store import AttachmentKind, StoredAttachment
    from app.views.message import AttachmentThumb

    notes = tmp_path / "notes.txt"
    notes.write_text("x" * 76 + "\n")
    big = tmp_path / "big.py"
    big.write_bytes(b"#" * 1_600_000)
    small = AttachmentThumb(StoredAttachment(AttachmentKind.TEXT, notes, "notes.txt"))
    large = AttachmentThumb(StoredAttachment(AttachmentKind.TEXT, big, "big.py"))
    assert small.caption.text() == "Text · notes.txt\n77 bytes"  # it read "1 KB"
    assert large.caption.text() == "Text · big.py\n1.5 MiB"


def test_a_text_file_over_the_limit_states_both_sizes(tmp_path: Path) -> None:
    from engine_mlx.errors import MediaError
    from engine_mlx.text_files import load_text

    path = tmp_path / "log.txt"
    path.write_text("y" * 150)
    with pytest.raises(MediaError, match=r"is 150 bytes; text files can be at most 100 bytes$"):
        load_text(path, max_bytes=100)  # it read "is 0 KB; ... at most 0 KB"


def test_one_formatter_for_every_size_shown() -> None:
    assert [human_bytes(n) for n in (77, 2_000_004, 912_000_000, 807_000_000_000)] == [
        "77 bytes",
        "1.9 MiB",
        "870 MiB",
        "752 GiB",
    ]


def test_cli_defaults_are_the_settings_defaults() -> None:
    from engine_mlx import cli
    from engine_mlx.conversation import VideoAttachment
    from engine_mlx.engine import Engine
    from engine_mlx.media import DEFAULT_VIDEO_FPS
    from engine_mlx.settings import DEFAULT_CONTEXT_TOKENS, GenerationSettings

    parser = cli._parser()
    chat = parser.parse_args(["chat", "--model", "m"])
    serve = parser.parse_args(["serve", "--model", "m"])
    models = parser.parse_args(["models"])
    settings = GenerationSettings()
    assert chat.max_tokens == settings.max_tokens
    assert chat.thinking_budget == settings.thinking_budget
    assert (chat.temperature, chat.seed) == (settings.temperature, settings.seed)
    assert (not chat.no_think) is settings.thinking
    load_default = inspect.signature(Engine.load).parameters["context_tokens"].default
    assert chat.context == serve.context == models.context == load_default == DEFAULT_CONTEXT_TOKENS
    assert chat.fps == VideoAttachment(Path("v.mp4")).fps == DEFAULT_VIDEO_FPS


def test_cli_numeric_defaults_are_named() -> None:
    """A number written as a default beside a named one drifts from it (``serve --context`` read 32768)."""
    import ast

    import engine_mlx.cli as cli

    tree = ast.parse(Path(cli.__file__).read_text(encoding="utf-8"))
    literal = [
        f"line {call.lineno}: {ast.unparse(call.args[0]) if call.args else '?'} default={keyword.value.value!r}"
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument"
        for keyword in call.keywords
        if keyword.arg == "default"
        and isinstance(keyword.value, ast.Constant)
        and isinstance(keyword.value.value, (int, float))
        and not isinstance(keyword.value.value, bool)
    ]
    assert not literal, (
        f"name these defaults in engine_mlx/settings.py (or beside their kin): {literal}"
    )
