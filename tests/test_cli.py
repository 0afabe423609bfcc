"""The command line as a user runs it: real processes, the tiny model, JSON events and error exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from media_files import write_image, write_pdf

ENV = {**os.environ, "MLX_DISABLE_COMPILE": "1", "HF_HUB_OFFLINE": "1"}


def run(*args, stdin=None, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "engine_mlx", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def test_tiny_builds_a_loadable_checkpoint(tmp_path):
    result = run("tiny", tmp_path / "m")
    assert result.returncode == 0, result.stderr
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "preprocessor_config.json",
    ):
        assert (tmp_path / "m" / name).is_file()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "qwen3_5_moe" and config["quantization"]["bits"] == 4
    assert config["text_config"]["layer_types"].count("full_attention") == 1


def test_chat_json_events(tiny_model_dir, tmp_path):
    image = write_image(tmp_path / "shot.png")
    result = run(
        "chat",
        "--model",
        tiny_model_dir,
        "--image",
        image,
        "--json",
        "--thinking-budget",
        "3",
        "--max-tokens",
        "10",
        "--seed",
        "0",
        "Describe the picture",
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "progress" and types[-2:] == ["stats", "done"]
    assert "thinking" in types and "answer" in types
    stats = events[-2]
    for key in (
        "prompt_tokens",
        "prefilled_tokens",
        "generated_tokens",
        "thinking_tokens",
        "prefill_tps",
        "decode_tps",
        "ttft_s",
        "peak_memory_bytes",
    ):
        assert key in stats
    assert stats["generated_tokens"] == 10 and stats["prompt_tokens"] > 20


def test_chat_text_output_has_answer_and_stats(tiny_model_dir):
    result = run(
        "chat", "--model", tiny_model_dir, "--no-think", "--max-tokens", "6", "--seed", "1", "Hi"
    )
    assert result.returncode == 0, result.stderr
    assert "[thinking]" not in result.stdout
    assert "prompt tokens" in result.stdout and "generated" in result.stdout


def test_models_lists_a_user_folder_with_its_fit(tiny_model_dir):
    result = run("models", "--json", "--dir", tiny_model_dir)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    mine = [r for r in rows if r["path"] == str(tiny_model_dir)]
    assert mine and mine[0]["vision"] is True and mine[0]["bits"] == 4 and mine[0]["fit"] == "fits"


def one_error_line(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_errors_are_one_clear_line(tiny_model_dir, tmp_path):
    one_error_line(run("chat", "--model", tmp_path / "nowhere", "hi"), "nowhere")
    not_a_model = tmp_path / "folder"
    not_a_model.mkdir()
    one_error_line(run("chat", "--model", not_a_model, "hi"), "folder", "config.json")
    one_error_line(
        run("chat", "--model", tiny_model_dir, "--image", tmp_path / "missing.png", "hi"),
        "missing.png",
    )
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    one_error_line(run("chat", "--model", tiny_model_dir, "--image", broken, "hi"), "broken.jpg")
    video = tmp_path / "clip.mp4"
    video.write_bytes(os.urandom(4096))
    one_error_line(run("chat", "--model", tiny_model_dir, "--video", video, "hi"), "clip.mp4")


def test_json_error_event_on_bad_input(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = run("chat", "--model", tiny_model_dir, "--json", "--image", empty, "hi")
    assert result.returncode != 0
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["type"] == "error" and "empty.png" in last["error"]


def test_attachments_that_are_not_files_are_named(tiny_model_dir, tmp_path):
    """Checked before the model loads, as the app checks a dropped file."""
    folder = tmp_path / "scans"
    folder.mkdir()
    fifo = tmp_path / "feed.mp4"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    cases = [
        ("--image", folder, "is a folder"),
        ("--video", fifo, "is a named pipe"),
        ("--file", loop, "loops back on itself"),
        ("--pdf", "/dev/null", "is a device"),
    ]
    for option, path, reason in cases:
        one_error_line(
            run("chat", "--model", tiny_model_dir, option, path, "hi", timeout=60),
            str(path),
            reason,
        )


def test_heic_and_a_file_under_the_wrong_option_are_refused(tiny_model_dir, tmp_path):
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(b"\0\0\0\x18ftypheic" + bytes(64))
    one_error_line(
        run("chat", "--model", tiny_model_dir, "--image", heic, "hi", timeout=60),
        "IMG_0001.HEIC",
        "'.heic' files are not supported",
    )
    pdf = write_pdf(tmp_path / "paper.pdf")
    one_error_line(
        run("chat", "--model", tiny_model_dir, "--image", pdf, "hi", timeout=60),
        "paper.pdf",
        "is a PDF; pass it with --pdf",
    )


def test_pages_from_a_page_to_the_end(tiny_model_dir, tmp_path):
    pdf = write_pdf(tmp_path / "four.pdf", pages=4)

    def prompt_tokens(pages):
        result = run(
            "chat",
            "--model",
            tiny_model_dir,
            "--pdf",
            pdf,
            "--pages",
            pages,
            "--json",
            "--no-think",
            "--max-tokens",
            "1",
            "--seed",
            "0",
            "Summarize",
        )
        assert result.returncode == 0, result.stderr
        return next(e for e in map(json.loads, result.stdout.splitlines()) if e["type"] == "stats")[
            "prompt_tokens"
        ]

    assert prompt_tokens("3-") == prompt_tokens("3-4") > prompt_tokens("3")
    one_error_line(
        run("chat", "--model", tiny_model_dir, "--pdf", pdf, "--pages", "two", "hi"),
        "--pages",
        "3-",
    )


def test_models_lists_the_apps_demo_model_and_added_folders(tiny_model_dir, tmp_path):
    import shutil

    from app.paths import app_paths
    from app.store import Store
    from engine_mlx.app_folders import FOLDERS_PREF

    paths = app_paths(tmp_path / "data").ensure()
    shutil.copytree(tiny_model_dir, paths.demo_model)
    added = tmp_path / "shelf" / "Qwen3.5-added"
    shutil.copytree(tiny_model_dir, added)
    store = Store(paths.database, paths.attachments)
    store.set_pref(FOLDERS_PREF, json.dumps([str(added.parent)]))
    store.close()
    result = subprocess.run(
        [sys.executable, "-m", "engine_mlx", "models", "--json"],
        capture_output=True,
        text=True,
        env={**ENV, "QWENDESK_DATA_DIR": str(paths.data)},
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    listed = {r["path"] for r in json.loads(result.stdout) if r.get("name")}
    assert {str(paths.demo_model), str(added)} <= listed


def test_help_in_the_interactive_chat_is_answered_locally(tiny_model_dir):
    result = run(
        "chat",
        "--model",
        tiny_model_dir,
        "--no-think",
        "--max-tokens",
        "4",
        "--seed",
        "1",
        stdin="/help\n",
    )
    assert result.returncode == 0, result.stderr
    assert "/continue" in result.stderr and "/help" in result.stderr
    assert "prompt tokens" not in result.stdout  # nothing was generated
