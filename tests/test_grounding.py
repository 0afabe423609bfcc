"""Grounding: boxes and points parsed from answers, mapped to the pixels of the image the user sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine_mlx.grounding import Shape, ShapeKind, choose_image, image_size, parse_grounding
from tests.media_files import write_image, write_pdf

ROOT = Path(__file__).resolve().parent.parent

ANSWER = """Here they are:

```json
[
  {"bbox_2d": [100, 200, 300, 400], "label": "Submit button"},
  {"bbox_2d": [500, 500, 600, 650], "label": "Cancel"}
]
```

and the logo is at {"point_2d": [900, 50], "label": "logo"}.
"""


def test_parses_fenced_lists_and_loose_objects_in_order():
    shapes = parse_grounding(ANSWER)
    assert shapes == [
        Shape(ShapeKind.BOX, (100, 200, 300, 400), "Submit button"),
        Shape(ShapeKind.BOX, (500, 500, 600, 650), "Cancel"),
        Shape(ShapeKind.POINT, (900, 50), "logo"),
    ]


def test_several_blocks_and_a_single_object():
    text = '{"bbox_2d": [1, 2, 3, 4]}\ntext between\n```json\n{"bbox_2d": [5, 6, 7, 8], "label": "b"}\n```'
    assert [s.relative for s in parse_grounding(text)] == [(1, 2, 3, 4), (5, 6, 7, 8)]


def test_clamps_and_orders_corners():
    (box, point) = parse_grounding(
        '[{"bbox_2d": [1200, 900, -40, 100]}, {"point_2d": [-3, 1001.5]}]'
    )
    assert box.relative == (0, 100, 1000, 900)
    assert point.relative == (0, 1000)


@pytest.mark.parametrize(
    "text",
    [
        "No grounding here, just {braces} and [1, 2, 3, 4].",
        '{"bbox_2d": [1, 2, 3]}',  # three numbers
        '{"bbox_2d": [1, 2, "3", 4]}',  # a string
        '{"bbox_2d": [true, 2, 3, 4]}',  # a bool is not a number
        '{"point_2d": [1, 2, 3]}',
        '{"bbox_2d": [1, 2, 3, 4}',  # malformed
        "{" * 5000 + '"bbox_2d": [1, 2, 3, 4]',  # deep and unclosed
        "",
    ],
)
def test_text_without_valid_grounding_gives_nothing(text):
    assert parse_grounding(text) == []


def test_nested_objects_carry_the_image_field_down():
    text = (
        '{"image": 2, "objects": [{"bbox_2d": [10, 20, 30, 40], "label": "cat"}], "note": {"x": 1}}'
    )
    (shape,) = parse_grounding(text)
    assert shape == Shape(ShapeKind.BOX, (10, 20, 30, 40), "cat", image=2)


def test_streaming_prefixes_show_each_object_once_it_closes():
    full = parse_grounding(ANSWER)
    seen = []
    for end in range(len(ANSWER) + 1):
        shapes = parse_grounding(ANSWER[:end])
        assert shapes == full[: len(shapes)], ANSWER[:end]
        seen.append(len(shapes))
    assert seen == sorted(seen) and seen[-1] == 3
    # the first box appears the moment its object closes, before the list does
    first_close = ANSWER.index("}") + 1
    assert len(parse_grounding(ANSWER[:first_close])) == 1
    assert len(parse_grounding(ANSWER[: first_close - 1])) == 0


def test_computer_use_calls_json_and_xml():
    json_call = '<tool_call>\n{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [512, 300]}}\n</tool_call>'
    xml_call = (
        "<tool_call>\n<function=computer_use>\n<parameter=action>\nleft_click\n</parameter>\n"
        "<parameter=coordinate>\n[40, 960]\n</parameter>\n</function>\n</tool_call>"
    )
    assert parse_grounding(json_call) == [Shape(ShapeKind.POINT, (512, 300), "left_click")]
    assert parse_grounding(xml_call) == [Shape(ShapeKind.POINT, (40, 960), "left_click")]
    assert parse_grounding(xml_call[: xml_call.index("960")]) == []  # still streaming


def test_pixels_round_relative_coordinates_to_the_image():
    box = Shape(ShapeKind.BOX, (0, 250, 1000, 999))
    assert box.pixels(333, 517) == (0, round(0.25 * 517), 333, round(0.999 * 517))
    assert Shape(ShapeKind.POINT, (500, 500)).pixels(1, 1) == (round(0.5), round(0.5))


def test_which_image_explicit_then_named_then_default():
    plain = Shape(ShapeKind.POINT, (1, 1))
    assert choose_image(plain, default=3, count=3) == 3
    assert choose_image(plain, default=3, count=3, turn_text="In image 1, where is the cat?") == 1
    assert choose_image(plain, default=3, count=3, turn_text="Compare picture 1 and picture 2") == 3
    assert choose_image(plain, default=3, count=3, turn_text="image 7 please") == 3  # no such image
    explicit = Shape(ShapeKind.POINT, (1, 1), image=2)
    assert choose_image(explicit, default=3, count=3, turn_text="image 1") == 2
    assert choose_image(Shape(ShapeKind.POINT, (1, 1), image=9), default=3, count=3) == 3


def _exif_jpeg(path: Path, orientation: int, size=(301, 157)) -> Path:
    image = Image.new("RGB", size, (20, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    return path


@pytest.mark.parametrize("orientation, swapped", [(1, False), (3, False), (6, True), (8, True)])
def test_image_size_is_the_upright_size(tmp_path, orientation, swapped):
    path = _exif_jpeg(tmp_path / f"o{orientation}.jpg", orientation)
    assert image_size(path) == ((157, 301) if swapped else (301, 157))
    from engine_mlx.media import load_image

    assert load_image(path, max_side=4096).size == image_size(path)  # what the model and user see


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine_mlx", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_cli_boxes_prints_and_draws_pixels_on_the_upright_image(tmp_path, orientation):
    image = _exif_jpeg(tmp_path / "shot.jpg", orientation, size=(401, 233))
    width, height = image_size(image)
    answer = '[{"bbox_2d": [100, 200, 600, 700], "label": "Save"}, {"point_2d": [800, 300], "label": "x"}]'
    done = _run_cli(
        "boxes",
        "--image",
        str(image),
        "--answer",
        answer,
        "--json",
        "--draw",
        str(tmp_path / "out.png"),
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    box = [
        round(100 / 1000 * width),
        round(200 / 1000 * height),
        round(600 / 1000 * width),
        round(700 / 1000 * height),
    ]
    assert rows == [
        {"label": "Save", "kind": "box", "pixels": box, "relative": [100, 200, 600, 700]},
        {
            "label": "x",
            "kind": "point",
            "pixels": [round(0.8 * width), round(0.3 * height)],
            "relative": [800, 300],
        },
    ]
    drawn = Image.open(tmp_path / "out.png").convert("RGB")
    assert drawn.size == (width, height)
    x1, y1, x2, y2 = box
    red = (230, 25, 75)  # the first label's colour
    # the box's four edges, away from the label tab in the top-left corner
    for xy in [(x1 + (x2 - x1) // 2, y2), (x2, y1 + (y2 - y1) // 2), (x1, y2 - 3), (x2 - 3, y1)]:
        assert drawn.getpixel(xy) == red, xy
    # inside stays as it was
    assert drawn.getpixel(((x1 + x2) // 2, (y1 + y2) // 2)) == (
        20,
        20,
        20,
    )
    px, py = rows[1]["pixels"]
    assert drawn.getpixel((px, py)) == (60, 180, 75)  # the second label's crosshair centre


def test_cli_boxes_text_output_and_bad_input(tmp_path):
    image = write_image(tmp_path / "a.png", size=(200, 100))
    answer = tmp_path / "answer.txt"
    answer.write_text('{"point_2d": [500, 500], "label": "centre"}', encoding="utf-8")
    done = _run_cli("boxes", "--image", str(image), "--answer-file", str(answer))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["point", "100,50", "centre"]
    none = _run_cli("boxes", "--image", str(image), "--answer", "no boxes")
    assert none.returncode == 0 and "no boxes or points" in none.stdout
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"not a png at all")
    failed = _run_cli("boxes", "--image", str(corrupt), "--answer", "{}")
    assert failed.returncode == 2
    assert "bad.png" in failed.stderr and "Traceback" not in failed.stderr


def test_chat_boxes_events_map_to_images_and_pdf_pages(tmp_path):
    from engine_mlx.cli import _boxes_events
    from engine_mlx.conversation import Conversation, ImageAttachment, Message, PdfAttachment, Role
    from engine_mlx.media import load_pdf_pages

    first = write_image(tmp_path / "first.png", size=(640, 480))
    pdf = write_pdf(tmp_path / "doc.pdf", pages=2)
    convo = Conversation(
        (
            Message(Role.USER, "look", (ImageAttachment(first),)),
            Message(Role.ASSISTANT, "ok"),
            Message(Role.USER, "and now this document", (PdfAttachment(pdf, 2, 2),)),
        )
    )
    page = load_pdf_pages(pdf, 2, 2)[0]
    answer = (
        '[{"bbox_2d": [0, 0, 500, 500], "label": "title"}, {"image": 1, "point_2d": [500, 500]}]'
    )
    events = _boxes_events(convo, answer)
    assert [(e["image"], e["path"], e["page"]) for e in events] == [
        (1, str(first), None),
        (2, str(pdf), 2),
    ]
    on_image, on_page = events
    assert on_image["boxes"][0]["pixels"] == [320, 240]
    w, h = page.size
    assert (on_page["width"], on_page["height"]) == (w, h)
    assert on_page["boxes"][0]["pixels"] == [0, 0, round(w / 2), round(h / 2)]
    assert _boxes_events(convo, "no grounding") == []
    assert _boxes_events(Conversation((Message(Role.USER, "hi"),)), answer) == []


def test_a_forced_answer_from_the_engine_gives_the_boxes_events(engine, tmp_path):
    """Through the real engine, tokenizer and detokenizer (the reply forced: the random model cannot
    choose it), the answer's boxes come out as ``chat --json``'s boxes events for the attached image."""
    from engine_mlx.cli import _boxes_events
    from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role
    from engine_mlx.events import AnswerDelta
    from engine_mlx.forcing import ForcedText
    from engine_mlx.settings import GenerationSettings

    image = _exif_jpeg(tmp_path / "shot.jpg", 6, size=(300, 200))  # shown upright as 200 x 300
    convo = Conversation((Message(Role.USER, "Where is the logo?", (ImageAttachment(image),)),))
    forced = '[{"point_2d": [250, 750], "label": "logo"}]'
    settings = GenerationSettings(thinking=False, max_tokens=100, forced=ForcedText(forced))
    answer = "".join(e.text for e in engine.generate(convo, settings) if isinstance(e, AnswerDelta))
    assert answer == forced
    (event,) = _boxes_events(convo, answer)
    assert (event["image"], event["width"], event["height"]) == (1, 200, 300)
    assert event["boxes"] == [
        {"label": "logo", "kind": "point", "pixels": [50, 225], "relative": [250, 750]}
    ]


def test_a_moment_in_a_video_maps_onto_that_frame(tmp_path):
    from engine_mlx.cli import _boxes_events
    from engine_mlx.conversation import (
        Conversation,
        ImageAttachment,
        Message,
        Role,
        VideoAttachment,
    )
    from engine_mlx.grounding import choose_video
    from tests.media_files import write_video

    assert [
        s.time_s
        for s in parse_grounding(
            '[{"time": 2.5, "bbox_2d": [0, 0, 10, 10]}, {"timestamp": "00:03.5", "point_2d": [1, 1]},'
            ' {"time": "4s", "point_2d": [2, 2]}, {"time": -1, "point_2d": [3, 3]}]'
        )
    ] == [2.5, 3.5, 4.0, None]
    video = write_video(tmp_path / "clip.mp4", seconds=3.0, size=(160, 120))
    image = write_image(tmp_path / "still.png", size=(64, 32))
    convo = Conversation((Message(Role.USER, "watch", (VideoAttachment(video),)),))
    answer = '{"time": 1.5, "bbox_2d": [500, 500, 1000, 1000], "label": "ball"}'
    (event,) = _boxes_events(convo, answer)
    assert (event["video"], event["time_s"], event["width"], event["height"]) == (1, 1.5, 160, 120)
    assert event["boxes"][0]["pixels"] == [80, 60, 160, 120]
    # a chat with an image too: a shape without a moment stays on the image; one with a moment, the video
    both = Conversation(
        (Message(Role.USER, "both", (ImageAttachment(image), VideoAttachment(video))),)
    )
    plain, timed = parse_grounding(
        '[{"point_2d": [500, 500]}, {"time": 1, "point_2d": [500, 500]}]'
    )
    assert (
        choose_video(plain, videos=1, images=1) is None
        and choose_video(timed, videos=1, images=1) == 1
    )
    events = _boxes_events(both, '[{"point_2d": [500, 500]}, {"time": 1, "point_2d": [500, 500]}]')
    assert [("image" in e, e["boxes"][0]["pixels"]) for e in events] == [
        (True, [32, 16]),
        (False, [80, 60]),
    ]
