"""QwenDesk's app icon: draw the source PNG, and turn it into a macOS .icns (Pillow only, any OS).

    python packaging/make_icon.py draw [resources/icon.png]      # redraw the 1024x1024 source
    python packaging/make_icon.py icns resources/icon.png OUT.icns

The icon is drawn from code so it can be changed by editing this file; ``resources/icon.png`` is the
committed result and the single source for every other size.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "resources" / "icon.png"
SIZE = 1024
# Sizes macOS asks an .icns for (the @2x variants reuse the next size up).
ICNS_SIZES = (16, 32, 64, 128, 256, 512, 1024)

_TOP = (108, 76, 232)  # violet
_BOTTOM = (38, 30, 110)  # indigo
_PAPER = (255, 255, 255)
_ACCENT = (255, 196, 84)  # warm dot, the "thinking" light


def _gradient(size: int) -> Image.Image:
    column = Image.new("RGB", (1, size))
    for y in range(size):
        t = y / (size - 1)
        column.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(_TOP, _BOTTOM)))
    return column.resize((size, size))


def draw(size: int = SIZE) -> Image.Image:
    """The icon at ``size`` (drawn at 2x and downsampled for smooth edges)."""
    s = size * 2
    # macOS icon grid: an 824/1024 rounded square centred on a transparent canvas, with a shadow.
    inset = round(s * 100 / 1024)
    radius = round(s * 185 / 1024)
    box = (inset, inset, s - inset, s - inset)

    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).rounded_rectangle(box, radius=radius, fill=255)
    canvas = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    shadow = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    shadow.putalpha(mask.point(lambda v: v * 90 // 255).filter(ImageFilter.GaussianBlur(s // 64)))
    canvas.alpha_composite(shadow, (0, s // 96))
    tile = _gradient(s).convert("RGBA")
    tile.putalpha(mask)
    canvas.alpha_composite(tile)

    # A speech bubble (rounded body plus a tail at the lower left).
    bubble = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(bubble)
    bx0, by0, bx1, by1 = (round(s * f) for f in (0.25, 0.27, 0.75, 0.66))
    d.rounded_rectangle((bx0, by0, bx1, by1), radius=round(s * 0.11), fill=255)
    d.polygon(
        [
            (round(s * 0.33), by1 - round(s * 0.04)),
            (round(s * 0.29), round(s * 0.77)),
            (round(s * 0.45), by1 - 2),
        ],
        fill=255,
    )
    # Three dots cut out of the bubble: the model is writing.
    dots = Image.new("L", (s, s), 0)
    dd = ImageDraw.Draw(dots)
    r = round(s * 0.042)
    cy = (by0 + by1) // 2
    for cx in (0.38, 0.5, 0.62):
        x = round(s * cx)
        dd.ellipse((x - r, cy - r, x + r, cy + r), fill=255)
    body = ImageChops.subtract(bubble, dots)
    paper = Image.new("RGBA", (s, s), _PAPER + (255,))
    paper.putalpha(body)
    canvas.alpha_composite(paper)
    # The last dot glows warm.
    x = round(s * 0.62)
    glow = Image.new("RGBA", (s, s), _ACCENT + (255,))
    spot = Image.new("L", (s, s), 0)
    ImageDraw.Draw(spot).ellipse((x - r, cy - r, x + r, cy + r), fill=255)
    glow.putalpha(spot)
    canvas.alpha_composite(glow)
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def to_icns(png: Path | str, icns: Path | str) -> Path:
    """Write an .icns with every standard size, each resampled from the source PNG."""
    image = Image.open(png).convert("RGBA")
    if image.size != (SIZE, SIZE):
        image = image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    icns = Path(icns)
    icns.parent.mkdir(parents=True, exist_ok=True)
    extra = [image.resize((n, n), Image.Resampling.LANCZOS) for n in ICNS_SIZES if n != SIZE]
    image.save(icns, format="ICNS", append_images=extra)
    return icns


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "draw" and len(args) <= 2:
        out = Path(args[1]) if len(args) == 2 else SOURCE
        out.parent.mkdir(parents=True, exist_ok=True)
        draw().save(out, optimize=True)
        print(out)
        return 0
    if len(args) == 3 and args[0] == "icns":
        print(to_icns(args[1], args[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
