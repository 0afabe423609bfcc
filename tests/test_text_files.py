"""Text and code attachments: classified by the one suffix list, read with a size cap, and entering the
prompt as a fenced block headed by the file name (for vision and text-only models alike)."""

from __future__ import annotations

import pytest

from engine_mlx import media
from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role, TextAttachment
from engine_mlx.errors import MediaError, UnsupportedInputError
from engine_mlx.prompt import MediaLimits, load_media, template_messages
from engine_mlx.text_files import MAX_TEXT_BYTES, fenced_block, load_text


def test_classify_text_and_code(tmp_path):
    assert media.classify(tmp_path / "notes.md") is media.AttachmentKind.TEXT
    assert media.classify(tmp_path / "main.PY") is media.AttachmentKind.TEXT
    assert media.TEXT_SUFFIXES <= media.ATTACHABLE_SUFFIXES
    # the engine cannot decode it, so nothing offers it
    assert ".heic" not in media.ATTACHABLE_SUFFIXES
    with pytest.raises(MediaError, match="text or code file"):
        media.classify(tmp_path / "archive.zip")


def test_fenced_block_names_the_file_and_outlasts_inner_fences():
    block = fenced_block("demo.py", "print('hi')\n```\nnot the end\n```\n")
    lines = block.splitlines()
    assert lines[0] == "demo.py" and lines[1] == "````py" and lines[-1] == "````"
    assert "not the end" in block


def test_load_text_refuses_large_binary_and_non_utf8(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("x" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(MediaError, match="big.txt.*at most"):
        load_text(big)
    binary = tmp_path / "blob.json"
    binary.write_bytes(b"{\0\0}")
    with pytest.raises(MediaError, match="binary"):
        load_text(binary)
    latin = tmp_path / "old.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(MediaError, match="not UTF-8"):
        load_text(latin)


def test_text_attachment_enters_the_prompt_as_a_fenced_block(tmp_path):
    code = tmp_path / "stored-copy.bin"
    code.write_text("def add(a, b):\n    return a + b\n")
    image = tmp_path / "x.png"
    from media_files import write_image

    write_image(image)
    message = Message(
        Role.USER, "Review this", (TextAttachment(code, "add.py"), ImageAttachment(image))
    )
    convo = Conversation((message,))
    for text_only in (False, True):
        if text_only:
            with pytest.raises(UnsupportedInputError):  # the image still needs a vision model
                template_messages(convo, text_only=True)
            convo = Conversation(
                (Message(Role.USER, "Review this", (TextAttachment(code, "add.py"),)),)
            )
        entry = template_messages(convo, text_only=text_only)[0]
        text = entry["content"] if text_only else entry["content"][-1]["text"]
        assert text == "add.py\n```py\ndef add(a, b):\n    return a + b\n```\n\nReview this"
    # Only the image reaches the vision tower.
    loaded = load_media(message.attachments, MediaLimits())
    assert len(loaded.images) == 1 and not loaded.videos


def test_engine_reads_the_file_into_the_prompt(engine, tmp_path):
    from engine_mlx.events import Stats
    from engine_mlx.settings import GenerationSettings

    notes = tmp_path / "notes.txt"
    notes.write_text("remember the milk, the eggs and the bread\n" * 20)
    settings = GenerationSettings(thinking=False, max_tokens=1)

    def prompt_tokens(conversation) -> int:
        return next(
            e for e in engine.generate(conversation, settings) if isinstance(e, Stats)
        ).prompt_tokens

    plain = prompt_tokens(Conversation((Message(Role.USER, "Summarise"),)))
    with_file = prompt_tokens(
        Conversation((Message(Role.USER, "Summarise", (TextAttachment(notes),)),))
    )
    assert with_file > plain + 100


def test_cli_names_a_missing_file(tmp_path, capsys):
    from engine_mlx.cli import main

    code = main(
        ["chat", "--model", str(tmp_path), "--file", str(tmp_path / "gone.txt"), "Summarise"]
    )
    assert code != 0 and "gone.txt" in capsys.readouterr().err
