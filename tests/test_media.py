"""media: real image, PDF and video files written into tmp_path, then read back."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from engine_mlx.errors import MediaError
from engine_mlx.media import (
    DEFAULT_MAX_SIDE,
    AttachmentKind,
    SamplingCancelled,
    classify,
    load_image,
    load_pdf_pages,
    pdf_page_count,
    probe_video,
    sample_video,
)

# ------------------------------------------------------------------------------------------ images


def test_exif_rotated_jpeg_is_turned_upright(tmp_path: Path) -> None:
    # Stored 200 wide × 100 high, left half red; orientation 6 = "rotate 90° clockwise to display".
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif, quality=95)

    out = load_image(path)

    assert out.mode == "RGB"
    assert out.size == (100, 200)
    # After a clockwise turn the stored left half (red) is on top.
    top = out.getpixel((50, 40))
    bottom = out.getpixel((50, 160))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_rgba_png_transparent_pixels_become_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    img.paste((10, 200, 30, 255), (0, 0, 20, 20))
    path = tmp_path / "alpha.png"
    img.save(path)

    out = load_image(path)

    assert out.mode == "RGB"
    assert out.getpixel((30, 10)) == (255, 255, 255)
    assert out.getpixel((5, 10)) == (10, 200, 30)


def test_half_transparent_pixels_are_blended_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "half.png"
    Image.new("LA", (8, 8), (0, 128)).save(path)

    value = load_image(path).getpixel((4, 4))

    assert all(126 <= c <= 129 for c in value)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (20, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (10, 0, 20, 10))
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)

    out = load_image(path)

    assert out.mode == "RGB"
    assert out.getpixel((2, 5)) == (255, 255, 255)  # index 0 is transparent, not black
    assert out.getpixel((15, 5)) == (255, 0, 0)


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    img = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    path = tmp_path / "print.jpg"
    img.save(path, quality=95)
    assert Image.open(path).mode == "CMYK"

    r, g, b = load_image(path).getpixel((16, 16))

    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"

    out = np.asarray(load_image(path))

    assert out.shape == (4, 256, 3)
    assert out[0, 0, 0] == 0
    assert out[0, -1, 0] == 255
    assert 120 <= out[0, 128, 0] <= 135  # mid-grey stays mid-grey instead of saturating to white
    assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0)


def test_grayscale_and_bilevel_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (10, 10), 77).save(tmp_path / "grey.png")
    Image.new("1", (10, 10), 1).save(tmp_path / "bw.bmp")

    assert load_image(tmp_path / "grey.png").getpixel((1, 1)) == (77, 77, 77)
    assert load_image(tmp_path / "bw.bmp").getpixel((1, 1)) == (255, 255, 255)


def test_huge_jpeg_is_downscaled(tmp_path: Path) -> None:
    img = Image.new("RGB", (10000, 8000), (20, 40, 200))
    img.paste((250, 250, 0), (0, 0, 5000, 8000))
    path = tmp_path / "huge.jpg"
    img.save(path, quality=60)
    del img

    out = load_image(path)

    assert out.size == (DEFAULT_MAX_SIDE, 1075)
    left, right = out.getpixel((100, 500)), out.getpixel((1200, 500))
    assert left[0] > 200 and left[2] < 60
    assert right[2] > 150 and right[0] < 60


def test_small_images_keep_their_size_and_max_side_applies(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 100), (1, 2, 3)).save(path)

    assert load_image(path).size == (300, 100)
    assert load_image(path, max_side=150).size == (150, 50)


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000)).save(path)

    with pytest.raises(MediaError, match="too large") as info:
        load_image(path, max_pixels=1_000_000)
    assert info.value.path == path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width × height pixels but holds almost no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def test_decompression_bomb_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(40000, 40000))  # 1.6 gigapixels claimed by a 33-byte file

    with pytest.raises(MediaError, match="too large"):
        load_image(path)


def test_missing_image(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(MediaError, match="does not exist") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_zero_byte_image(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
    path = tmp_path / f"cut.{fmt.lower()}"
    img.save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(MediaError, match="truncated or corrupt") as info:
        load_image(path)
    assert info.value.path == path


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(MediaError, match="not an image"):
        load_image(path)


# -------------------------------------------------------------------------------------------- PDFs

PAGE_SIZES = [(612, 792), (792, 612), (300, 300)]  # portrait letter, landscape letter, square


@pytest.fixture
def three_page_pdf(tmp_path: Path) -> Path:
    pdf = pdfium.PdfDocument.new()
    for width, height in PAGE_SIZES:
        pdf.new_page(width, height)
    path = tmp_path / "three.pdf"
    pdf.save(path)
    pdf.close()
    return path


def test_pdf_page_count(three_page_pdf: Path) -> None:
    assert pdf_page_count(three_page_pdf) == 3


def test_pdf_range_renders_requested_pages(three_page_pdf: Path) -> None:
    pages = load_pdf_pages(three_page_pdf, first_page=2, last_page=3)

    assert [p.size[0] for p in pages] == [1344, 1344]  # landscape, then square
    assert abs(pages[0].size[1] - 1039) <= 1 and pages[1].size[1] == 1344
    assert all(p.mode == "RGB" for p in pages)
    assert pages[0].getpixel((10, 10)) == (255, 255, 255)


def test_pdf_default_range_is_the_whole_document(three_page_pdf: Path) -> None:
    pages = load_pdf_pages(three_page_pdf, max_side=400)

    sizes = [p.size for p in pages]
    assert len(sizes) == 3
    assert sizes[0][1] == 400 and abs(sizes[0][0] - 309) <= 1  # 612 × 792 pt scaled to 400 high
    assert sizes[1][0] == 400 and abs(sizes[1][1] - 309) <= 1
    assert sizes[2] == (400, 400)


@pytest.mark.parametrize(("first", "last"), [(2, 5), (0, 1), (3, 2)])
def test_pdf_range_outside_document(three_page_pdf: Path, first: int, last: int) -> None:
    with pytest.raises(MediaError, match="has 3 pages"):
        load_pdf_pages(three_page_pdf, first_page=first, last_page=last)


def test_pdf_page_limit(three_page_pdf: Path) -> None:
    with pytest.raises(MediaError, match="more than the 2"):
        load_pdf_pages(three_page_pdf, max_pages=2)


def test_pdf_without_pages(tmp_path: Path) -> None:
    path = tmp_path / "empty.pdf"
    pdf = pdfium.PdfDocument.new()
    pdf.save(path)
    pdf.close()

    with pytest.raises(MediaError, match="no pages"):
        load_pdf_pages(path)
    with pytest.raises(MediaError, match="no pages"):
        pdf_page_count(path)


def test_corrupt_pdf(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    with pytest.raises(MediaError, match="not a valid PDF") as info:
        load_pdf_pages(path)
    assert info.value.path == path


def _encrypted_pdf() -> bytes:
    """A one-page PDF with a Standard security handler whose user password is not empty."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /P -4 /O <%s> /U <%s> >>" % (b"11" * 32, b"22" * 32),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<" % (len(objects) + 1)
    out += b"ab" * 16 + b"> <" + b"ab" * 16 + b">] >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def test_password_protected_pdf(tmp_path: Path) -> None:
    path = tmp_path / "locked.pdf"
    path.write_bytes(_encrypted_pdf())
    with pytest.raises(MediaError, match="password-protected"):
        load_pdf_pages(path)


def test_pdf_without_pages_after_an_encrypted_one(tmp_path: Path) -> None:
    # PDFium keeps the last load failure's code: the 0-page PDF must not inherit "password-protected".
    locked, empty = tmp_path / "locked.pdf", tmp_path / "empty.pdf"
    locked.write_bytes(_encrypted_pdf())
    pdf = pdfium.PdfDocument.new()
    pdf.save(empty)
    pdf.close()
    with pytest.raises(MediaError, match="password-protected"):
        pdf_page_count(locked)
    with pytest.raises(MediaError, match="has no pages"):
        pdf_page_count(empty)
    with pytest.raises(MediaError, match="has no pages"):
        load_pdf_pages(empty)


def test_missing_pdf(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist"):
        pdf_page_count(tmp_path / "gone.pdf")


# ------------------------------------------------------------------------------------------- video

CODE_BITS = 8  # each frame shows its index in binary as 8 black/white bars


def _write_video(path: Path, seconds: float, fps: float, size: tuple[int, int] = (64, 48)) -> None:
    width, height = size
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    bar = width // CODE_BITS
    for index in range(round(seconds * fps)):
        frame = np.zeros((height, width, 3), np.uint8)
        for bit in range(CODE_BITS):
            if (index >> bit) & 1:
                frame[:, bit * bar : (bit + 1) * bar] = 255
        writer.write(frame)
    writer.release()


def _frame_index(frame: np.ndarray) -> int:
    width = frame.shape[1]
    bar = width // CODE_BITS
    bits = [frame[:, b * bar + bar // 4 : (b + 1) * bar - bar // 4].mean() > 128 for b in range(8)]
    return sum(1 << b for b, on in enumerate(bits) if on)


@pytest.fixture(params=[".mp4", ".avi"])
def five_second_video(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / f"clip{request.param}"
    _write_video(path, seconds=5, fps=10)
    return path


def test_probe_video(five_second_video: Path) -> None:
    info = probe_video(five_second_video)
    assert (info.frame_count, info.fps, info.width, info.height) == (50, 10.0, 64, 48)
    assert info.duration_s == pytest.approx(5.0)


def test_sample_at_2fps_seeks_to_the_right_frames(five_second_video: Path) -> None:
    calls: list[tuple[int, int]] = []

    video = sample_video(five_second_video, fps=2.0, progress=lambda d, t: calls.append((d, t)))

    assert video.timestamps_s == pytest.approx([i * 0.5 for i in range(10)])
    assert len(video.frames) == 10
    assert [_frame_index(f) for f in video.frames] == [i * 5 for i in range(10)]
    assert all(f.dtype == np.uint8 and f.shape == (48, 64, 3) for f in video.frames)
    assert (video.width, video.height, video.source_fps) == (64, 48, 10.0)
    assert video.duration_s == pytest.approx(5.0)
    assert video.clipped is False
    assert calls[-1] == (10, 10) and len(calls) == 10


def test_sample_window_seeks_into_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "window.mp4"
    _write_video(path, seconds=5, fps=10)

    video = sample_video(path, fps=1.0, start_s=2.0, end_s=4.5)

    assert video.timestamps_s == pytest.approx([2.0, 3.0, 4.0])
    assert [_frame_index(f) for f in video.frames] == [20, 30, 40]


def test_frames_are_rgb_and_resized(tmp_path: Path) -> None:
    path = tmp_path / "red.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (320, 160))
    for _ in range(8):
        writer.write(np.full((160, 320, 3), (0, 0, 255), np.uint8))  # BGR red
    writer.release()

    video = sample_video(path, fps=2.0, max_side=100)

    assert (video.width, video.height) == (100, 50)
    r, g, b = video.frames[0][25, 50]
    assert r > 200 and g < 50 and b < 50


def test_sampling_faster_than_the_source_does_not_repeat_frames(tmp_path: Path) -> None:
    path = tmp_path / "slow.avi"
    _write_video(path, seconds=2, fps=4)

    video = sample_video(path, fps=8.0)

    assert [_frame_index(f) for f in video.frames] == list(range(8))


def test_long_video_is_clipped_to_60_seconds(tmp_path: Path) -> None:
    path = tmp_path / "long.avi"
    _write_video(path, seconds=120, fps=4, size=(32, 16))

    video = sample_video(path, fps=1.0, start_s=30.0)

    assert video.clipped is True
    assert video.duration_s == pytest.approx(120.0)
    assert len(video.frames) == 60
    assert video.timestamps_s[0] == pytest.approx(30.0)
    assert video.timestamps_s[-1] == pytest.approx(89.0)


def test_fps_above_limit_is_rejected(five_second_video: Path) -> None:
    with pytest.raises(MediaError, match="at most 8"):
        sample_video(five_second_video, fps=10.0)
    with pytest.raises(MediaError, match="above 0"):
        sample_video(five_second_video, fps=0.0)


def test_start_beyond_the_end(five_second_video: Path) -> None:
    with pytest.raises(MediaError, match="only 5.0 s long"):
        sample_video(five_second_video, start_s=7.0)


def test_random_bytes_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())

    with pytest.raises(MediaError, match="cannot be read as a video") as info:
        sample_video(path)
    assert str(path) in str(info.value)
    with pytest.raises(MediaError, match="cannot be read as a video"):
        probe_video(path)


def test_missing_and_empty_video(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist"):
        sample_video(tmp_path / "gone.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        probe_video(tmp_path / "empty.mp4")


def test_sampling_can_be_cancelled(five_second_video: Path) -> None:
    seen: list[int] = []

    with pytest.raises(SamplingCancelled):
        sample_video(
            five_second_video,
            progress=lambda done, total: seen.append(done),
            cancelled=lambda: len(seen) >= 3,
        )
    assert seen == [1, 2, 3]


# ---------------------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.PNG", AttachmentKind.IMAGE),
        ("b.jpeg", AttachmentKind.IMAGE),
        ("c.pdf", AttachmentKind.PDF),
        ("d.MOV", AttachmentKind.VIDEO),
        ("e.mp4", AttachmentKind.VIDEO),
    ],
)
def test_classify(name: str, kind: AttachmentKind) -> None:
    assert classify(Path(name)) is kind


def test_classify_rejects_unknown_types(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="'.docx' files are not supported"):
        classify(tmp_path / "letter.docx")
    with pytest.raises(MediaError, match="is a folder"):
        classify(tmp_path)


def test_non_files_are_named_as_what_they_are(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    dangling = tmp_path / "gone.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    folder = tmp_path / "album.png"
    folder.mkdir()
    cases = [
        (fifo, "is a named pipe"),
        (loop, "symbolic link that loops"),
        (folder, "is a folder"),
        (dangling, "symbolic link to a file that does not exist"),
        (Path("/dev/null"), "is a device"),
    ]
    for path, reason in cases:
        for check in (classify, load_image):  # the app classifies first; every loader checks too
            with pytest.raises(MediaError, match=reason) as info:
                check(path)
            assert info.value.path == path
