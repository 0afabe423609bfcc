"""Grounding in answers: the boxes and points Qwen3.5 names, in its 0–1000 coordinates, mapped to pixels.

Qwen3.5 answers a "where is …" question with JSON such as ``[{"bbox_2d": [x1, y1, x2, y2], "label": "OK"}]``
or ``{"point_2d": [x, y]}``, and a computer-use call with ``"coordinate": [x, y]`` (as JSON, or as a
``<parameter=coordinate>`` of its XML tool calls). Coordinates are relative to the image the model was
given, 0–1000 on each axis whatever its size. The parser finds every complete object in the text, so a
streaming answer shows each box as soon as its object closes; the app and the CLI map and draw with the
same functions, so both give the same pixels.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

SCALE = 1000  # Qwen's relative coordinates run 0..1000 on both axes
# "Locate…" on an attached image: the user types the thing to find where the braces are.
LOCATE_PROMPT = "Locate every {} in this image. Answer as JSON with bbox_2d and label."

# One colour per label, in order of first appearance (RGB); distinct on light and dark images.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 200, 200),
    (240, 50, 230),
    (128, 128, 0),
)

_DECODER = json.JSONDecoder()
# A pathological answer cannot make the parser (or the overlay) do unbounded work.
_MAX_OBJECTS = 1000
_MAX_ATTEMPTS = 4096  # "{" positions tried that did not start a complete object
# Qwen3.5's XML tool call: <function=NAME> … <parameter=coordinate>[x, y]</parameter> … </function>
_XML_FUNCTION = re.compile(r"<function=([^>\n]*)>(.*?)(?:</function>|$)", re.S)
_XML_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\s*(.*?)\s*</parameter>", re.S)
# "image 2", "Picture 2" (Qwen's own label for the second image of a conversation), "screenshot #2"
_EXIF_ORIENTATION = 0x0112  # values 5-8 turn the image a quarter, so width and height swap
_NAMED_IMAGE = re.compile(r"\b(?:image|picture|screenshot|photo)\s*#?\s*(\d{1,3})\b", re.I)


class ShapeKind(str, Enum):
    BOX = "box"
    POINT = "point"


@dataclass(frozen=True)
class Shape:
    """One box (x1, y1, x2, y2) or point (x, y) in relative coordinates: clamped to 0..1000, corners in
    order. ``image`` is the 1-based image number the answer gave explicitly (``"image": n``), if any;
    ``video`` and ``time_s`` place it on a video's frame."""

    kind: ShapeKind
    relative: tuple[float, ...]
    label: str = ""
    image: int | None = None
    video: int | None = None  # an explicit 1-based video number (``"video": n``)
    time_s: float | None = None  # for a video: the moment, in seconds (``"time"``/``"timestamp"``)

    def pixels(self, width: int, height: int) -> tuple[int, ...]:
        """The shape in pixels of a ``width`` × ``height`` image: ``round(v / 1000 × W)`` for x and
        ``round(v / 1000 × H)`` for y."""
        return tuple(
            round(v / SCALE * (width if i % 2 == 0 else height))
            for i, v in enumerate(self.relative)
        )

    def to_json(self, width: int, height: int) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind.value,
            "pixels": list(self.pixels(width, height)),
            "relative": [_plain(v) for v in self.relative],
        }


def parse_grounding(text: str) -> list[Shape]:
    """Every box and point in ``text``, in order: JSON objects (fenced or not, lists or single objects,
    nested in a tool call) and the coordinates of XML tool calls. Incomplete JSON (a streaming prefix)
    yields only the objects already closed; text without grounding yields nothing."""
    shapes: list[Shape] = []
    pos, objects, misses = 0, 0, 0
    while objects < _MAX_OBJECTS and misses < _MAX_ATTEMPTS:
        start = text.find("{", pos)
        if start < 0:
            break
        try:
            value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            misses += 1
            pos = start + 1  # not a complete object here: an inner one may still be
            continue
        objects += 1
        shapes.extend(_walk(value, None, 0))
        pos = end
    shapes.extend(_xml_calls(text))
    return shapes


def choose_image(shape: Shape, *, default: int, count: int, turn_text: str = "") -> int:
    """The 1-based image (of ``count`` in the conversation) a shape belongs to: its explicit ``image``
    field if it names one of them; else the one image the user's turn names ("image 2", "Picture 2");
    else ``default`` (the last image of the user message the answer replies to)."""
    if shape.image is not None and 1 <= shape.image <= count:
        return shape.image
    named = {int(m) for m in _NAMED_IMAGE.findall(turn_text)} & set(range(1, count + 1))
    if len(named) == 1:
        return named.pop()
    return default


def image_size(path: str | Path) -> tuple[int, int]:
    """An image file's (width, height) as the user sees it: EXIF orientation applied, nothing decoded."""
    from PIL import Image, UnidentifiedImageError

    from engine_mlx.errors import MediaError
    from engine_mlx.media import check_file

    path = Path(path)
    check_file(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(path, f"is not an image QwenDesk can read ({e})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def choose_video(shape: Shape, *, videos: int, images: int) -> int | None:
    """The 1-based video a shape belongs to, or None for an image: its explicit ``video`` field; else,
    when the chat has videos, a shape with a moment (``time``) or one in a chat without images goes on
    the newest video."""
    if not videos or shape.image is not None:
        return None
    if shape.video is not None:
        return shape.video if 1 <= shape.video <= videos else None
    return videos if shape.time_s is not None or not images else None


def label_colours(shapes: Sequence[Shape]) -> dict[str, tuple[int, int, int]]:
    """One palette colour per distinct label, in order of first appearance."""
    colours: dict[str, tuple[int, int, int]] = {}
    for shape in shapes:
        if shape.label not in colours:
            colours[shape.label] = PALETTE[len(colours) % len(PALETTE)]
    return colours


def draw(image: PILImage, shapes: Sequence[Shape]) -> PILImage:
    """A copy of ``image`` (RGB, as the user sees it) with the shapes drawn: labelled boxes, points as
    crosshairs, one colour per label."""
    from PIL import ImageDraw

    out = image.convert("RGB")  # always a copy
    pen = ImageDraw.Draw(out)
    width, height = out.size
    line = max(2, round(min(width, height) / 250))
    arm = max(6, line * 4)
    colours = label_colours(shapes)
    for shape in shapes:
        colour = colours[shape.label]
        px = shape.pixels(width, height)
        if shape.kind is ShapeKind.BOX:
            x1, y1, x2, y2 = (min(v, lim - 1) for v, lim in zip(px, (width, height) * 2))
            pen.rectangle((x1, y1, x2, y2), outline=colour, width=line)
            _, top, _, bottom = pen.textbbox((0, 0), shape.label or "x")
            tab_h = bottom - top + 6  # the label sits above the box where there is room
            anchor = (x1 + 2, y1 - tab_h + 2) if y1 >= tab_h else (x1 + line, y1 + line)
        else:
            x, y = min(px[0], width - 1), min(px[1], height - 1)
            pen.line((x - arm, y, x + arm, y), fill=colour, width=line)
            pen.line((x, y - arm, x, y + arm), fill=colour, width=line)
            anchor = (x + arm, y + line)
        if shape.label:
            left, top, right, bottom = pen.textbbox(anchor, shape.label)
            pen.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=colour)
            pen.text(anchor, shape.label, fill=(255, 255, 255))
    return out


# ------------------------------------------------------------------------------------------ parsing


def _walk(
    value: Any, image: int | None, depth: int, video: int | None = None, time_s: float | None = None
) -> Iterator[Shape]:
    if depth > 32:
        return
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, image, depth + 1, video, time_s)
        return
    if not isinstance(value, dict):
        return
    explicit = value.get("image")
    if isinstance(explicit, int) and not isinstance(explicit, bool):
        image = explicit
    video_n = value.get("video")
    if isinstance(video_n, int) and not isinstance(video_n, bool):
        video = video_n
    moment = _seconds(value.get("time", value.get("timestamp")))
    if moment is not None:
        time_s = moment
    label = value.get("label")
    label = label.strip() if isinstance(label, str) else ""
    found = False
    box = _numbers(value.get("bbox_2d"), 4)
    if box is not None:
        x1, y1, x2, y2 = box
        found = True
        yield Shape(
            ShapeKind.BOX,
            (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)),
            label,
            image,
            video,
            time_s,
        )
    for key in ("point_2d", "coordinate"):
        point = _numbers(value.get(key), 2)
        if point is not None:
            found = True
            action = value.get("action")
            name = label or (action.strip() if isinstance(action, str) else "")
            yield Shape(ShapeKind.POINT, point, name, image, video, time_s)
    for key, child in value.items():
        if isinstance(child, dict | list) and not (
            found and key in ("bbox_2d", "point_2d", "coordinate")
        ):
            yield from _walk(child, image, depth + 1, video, time_s)


def _numbers(value: Any, n: int) -> tuple[float, ...] | None:
    """``value`` as n finite numbers clamped to 0..1000, or None if it is not a list of n numbers."""
    if not isinstance(value, list) or len(value) != n:
        return None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        out.append(min(max(v, 0), SCALE))
    return tuple(out)


def _seconds(value: Any) -> float | None:
    """A moment in a video: a number of seconds, "3.5s", "3.5 s" or "mm:ss(.f)"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) and value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower().removesuffix("s").strip()
    try:
        if ":" in text:
            minutes, _, seconds = text.partition(":")
            moment = int(minutes) * 60 + float(seconds)
        else:
            moment = float(text)
    except ValueError:
        return None
    return moment if math.isfinite(moment) and moment >= 0 else None


def _xml_calls(text: str) -> Iterator[Shape]:
    if "<parameter=" not in text:
        return
    for function in _XML_FUNCTION.finditer(text):
        params = dict(_XML_PARAMETER.findall(function.group(2)))
        if "coordinate" not in params:
            continue
        try:
            point = _numbers(json.loads(params["coordinate"]), 2)
        except ValueError:
            continue
        if point is not None:
            yield Shape(ShapeKind.POINT, point, params.get("action", "").strip())


def _plain(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v
