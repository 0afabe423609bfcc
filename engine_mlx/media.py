"""Attachments turned into pixels: images (EXIF, colour modes, size limits), PDF pages, video.

Every failure a user can cause (a missing, empty, corrupt or unsupported file, a bad page range or
frame rate) is raised as :class:`~engine_mlx.errors.MediaError` naming the file and what is wrong.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import EngineError, MediaError
from .text_files import TEXT_SUFFIXES

# OpenCV and its FFmpeg backend log to stderr on a bad file; the engine reports one clear error itself.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

DEFAULT_MAX_SIDE = 1344
DEFAULT_VIDEO_MAX_SIDE = 768
DEFAULT_VIDEO_FPS = 2.0
MAX_VIDEO_FPS = 8.0
MAX_VIDEO_SECONDS = 60.0
# Images above this are refused before decoding (a decompression-bomb guard). Pillow itself refuses
# more than 2 × PIL.Image.MAX_IMAGE_PIXELS (~179 MP by default) while opening; both read the same.
MAX_IMAGE_PIXELS = 200_000_000
# Each page becomes an image of up to ~1.8k tokens: a whole book would not fit any context.
MAX_PDF_PAGES = 64

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}
)
PDF_SUFFIXES = frozenset({".pdf"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm"})
# Everything a user can attach: the app's file dialog offers exactly these.
ATTACHABLE_SUFFIXES = IMAGE_SUFFIXES | PDF_SUFFIXES | VIDEO_SUFFIXES | TEXT_SUFFIXES

_WHITE = (255, 255, 255)

# PDFium is not thread-safe: pypdfium2 requires that calls into it are serialised process-wide.
_PDFIUM_LOCK = threading.Lock()


class AttachmentKind(str, Enum):
    IMAGE = "image"
    PDF = "pdf"
    VIDEO = "video"
    TEXT = "text"


class SamplingCancelled(EngineError):
    """``sample_video`` stopped because its ``cancelled`` callback returned True."""


def classify(path: Path | str) -> AttachmentKind:
    """The kind of attachment, from the file's extension; MediaError if it cannot be attached."""
    path = Path(path)
    _refuse_non_files(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return AttachmentKind.IMAGE
    if suffix in PDF_SUFFIXES:
        return AttachmentKind.PDF
    if suffix in VIDEO_SUFFIXES:
        return AttachmentKind.VIDEO
    if suffix in TEXT_SUFFIXES:
        return AttachmentKind.TEXT
    kind = f"'{suffix}' files are" if suffix else "files without an extension are"
    raise MediaError(
        path,
        f"{kind} not supported; attach an image ({_list(IMAGE_SUFFIXES)}), "
        f"a PDF, a video ({_list(VIDEO_SUFFIXES)}) or a text or code file (.txt, .md, .py, …)",
    )


def _list(suffixes: frozenset[str]) -> str:
    return ", ".join(sorted(suffixes))


# What a path that is not a regular file is, by the file type ``stat`` reports, and what to do.
_NOT_FILES = (
    (stat.S_ISDIR, "is a folder, not a file; attach an image, a PDF, a video or a text file"),
    (
        stat.S_ISFIFO,
        "is a named pipe (FIFO), not a file; save what it delivers to a file and attach that",
    ),
    (stat.S_ISCHR, "is a device, not a file; attach a regular file"),
    (stat.S_ISBLK, "is a device, not a file; attach a regular file"),
    (stat.S_ISSOCK, "is a socket, not a file; attach a regular file"),
)


def _refuse_non_files(path: Path) -> os.stat_result | None:
    """The path's stat (None if it does not exist); MediaError naming what it is if it exists but is
    not a regular file: a folder, a named pipe, a device, a socket or a symbolic link loop."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise MediaError(
                path, "is a symbolic link to a file that does not exist; attach the file itself"
            ) from None
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise MediaError(
                path, "is a symbolic link that loops back on itself; attach the file itself"
            ) from None
        raise MediaError(path, f"cannot be read ({e.strerror or e})") from None
    for is_kind, reason in _NOT_FILES:
        if is_kind(info.st_mode):
            raise MediaError(path, reason)
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(path, "is not a regular file; attach a regular file")
    return info


def check_file(path: Path) -> int:
    """The file's size; MediaError if it is missing, not a regular file, unreadable or empty (the
    errors every loader shares: images, PDFs, videos and text files)."""
    info = _refuse_non_files(path)
    if info is None:
        raise MediaError(path, "does not exist; it may have been moved or deleted")
    if info.st_size == 0:
        raise MediaError(path, "is empty (0 bytes)")
    return info.st_size


# ------------------------------------------------------------------------------------------ images


def _fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most ``max_side``, keeping the aspect."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _too_large(path: Path, pixels: int, limit: int) -> MediaError:
    return MediaError(
        path,
        f"is too large to read safely ({pixels / 1e6:.0f} megapixels, the limit is "
        f"{limit / 1e6:.0f}); scale it down and attach it again",
    )


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit grayscale to 8-bit by scaling the range (Pillow's convert('L') clips to white)."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        scaled = arr.astype(np.float32) / 257.0
    elif img.mode == "F":
        peak = float(np.nanmax(arr)) if arr.size else 0.0
        scaled = np.nan_to_num(arr.astype(np.float32)) * (255.0 if peak <= 1.0 else 255.0 / peak)
    else:  # "I": 32-bit ints, usually holding 16-bit samples
        peak = int(arr.max()) if arr.size else 0
        if peak <= 255:
            scaled = arr.astype(np.float32)
        elif peak <= 65535:
            scaled = arr.astype(np.float32) / 257.0
        else:
            scaled = arr.astype(np.float32) * (255.0 / peak)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparent pixels become white."""
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        img = _scale_to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode == "RGB":
        return img
    return img.convert("RGB")


def load_image(
    path: Path | str, max_side: int = DEFAULT_MAX_SIDE, *, max_pixels: int = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Read an image as RGB, upright (EXIF orientation applied), longest side <= ``max_side``."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    path = Path(path)
    check_file(path)
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        reason = "is not an image QwenDesk can read (unknown or unsupported format)"
        raise MediaError(path, reason) from None
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise MediaError(
            path,
            f"is too large to read safely (over {limit / 1e6:.0f} megapixels); "
            "scale it down and attach it again",
        ) from None
    except OSError as e:
        raise MediaError(path, f"cannot be read ({e})") from None
    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise MediaError(path, f"has no pixels ({width}×{height})")
        if width * height > max_pixels:
            raise _too_large(path, width * height, max_pixels)
        try:
            if img.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the size we need.
                img.draft(None, _fit_size(width, height, max_side))
            img.load()  # a full decode here, so truncation and corruption surface as errors now
            ImageOps.exif_transpose(img, in_place=True)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            detail = str(e) or type(e).__name__
            reason = f"is truncated or corrupt and cannot be decoded ({detail})"
            raise MediaError(path, reason) from None
        try:
            rgb = _to_rgb(img)
        except ValueError:
            reason = f"uses the colour mode {img.mode}, which cannot be converted to RGB"
            raise MediaError(path, reason) from None
        target = _fit_size(*rgb.size, max_side)
        if target != rgb.size:
            rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        elif rgb is img:
            rgb = rgb.copy()  # detach from the file before it is closed
    return rgb


# -------------------------------------------------------------------------------------------- PDFs


def _open_pdf(
    path: Path,
) -> Any:  # pypdfium2.PdfDocument (imported lazily: it loads a native library)
    """The open document; MediaError naming why it cannot be opened.

    PDFium sets its last-error code only when a load fails and never clears it, and pypdfium2 reads
    that code also for a document that loaded but has no pages: after an encrypted PDF, a 0-page one
    would be called password-protected. So the document is loaded here, and the code is read only
    when this very load failed.
    """
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    check_file(path)
    raw = pdfium_c.FPDF_LoadDocument(os.fsencode(path.resolve()) + b"\0", None)
    if not raw:
        code = pdfium_c.FPDF_GetLastError()  # set by the load that just failed
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            reason = "is password-protected; save a copy without a password and attach that"
        elif code == pdfium_c.FPDF_ERR_SECURITY:
            reason = (
                "is encrypted with a security scheme PDFium does not support; "
                "save an unprotected copy"
            )
        elif code == pdfium_c.FPDF_ERR_FILE:
            reason = "cannot be opened; check that it exists and that you may read it"
        else:
            reason = "is not a valid PDF or is damaged and cannot be opened"
        raise MediaError(path, reason)
    pdf = pdfium.PdfDocument(raw)
    if len(pdf) < 1:
        pdf.close()
        raise MediaError(path, "has no pages")
    return pdf


def pdf_page_count(path: Path | str) -> int:
    """Number of pages; MediaError if the file is missing, not a PDF, encrypted or has no pages."""
    path = Path(path)
    with _PDFIUM_LOCK:
        pdf = _open_pdf(path)
        try:
            return len(pdf)
        finally:
            pdf.close()


def load_pdf_pages(
    path: Path | str,
    first_page: int = 1,
    last_page: int | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    *,
    max_pages: int | None = MAX_PDF_PAGES,
) -> list[Image.Image]:
    """Render pages ``first_page``..``last_page`` (1-based, inclusive; None = the last) as RGB.

    Each page is rendered at the scale that makes its longest side ``max_side`` pixels, so small and
    large paper sizes both come out at the resolution the vision encoder uses.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    path = Path(path)
    with _PDFIUM_LOCK:
        pdf = _open_pdf(path)
        try:
            count = len(pdf)
            last = count if last_page is None else last_page
            pages_word = "page" if count == 1 else "pages"
            if first_page < 1 or last < first_page or last > count:
                raise MediaError(
                    path,
                    f"has {count} {pages_word}, so pages {first_page}–{last} cannot be read; "
                    f"choose a range within 1–{count}",
                )
            wanted = last - first_page + 1
            if max_pages is not None and wanted > max_pages:
                raise MediaError(
                    path,
                    f"pages {first_page}–{last} are {wanted} pages, more than the {max_pages} "
                    "QwenDesk reads at once; choose a shorter page range",
                )
            images = []
            for index in range(first_page - 1, last):
                page = pdf[index]
                try:
                    images.append(_render_page(path, page, index + 1, max_side))
                finally:
                    page.close()
            return images
        finally:
            pdf.close()


def _render_page(path: Path, page: Any, number: int, max_side: int) -> Image.Image:
    import pypdfium2 as pdfium

    width_pt, height_pt = page.get_size()  # PDF points (1/72 inch), rotation applied
    if width_pt <= 0 or height_pt <= 0:
        raise MediaError(path, f"page {number} has no area ({width_pt:g}×{height_pt:g} points)")
    scale = max_side / max(width_pt, height_pt)
    try:
        bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255))
        image = bitmap.to_pil().convert("RGB")
    except pdfium.PdfiumError as e:
        raise MediaError(path, f"page {number} cannot be rendered ({e})") from None
    # Rounding in PDFium can overshoot by a pixel; keep the promise on the longest side.
    target = _fit_size(image.width, image.height, max_side)
    return image if target == image.size else image.resize(target, Image.Resampling.LANCZOS)


# ------------------------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoInfo:
    """What the video pane shows before sampling; ``width``/``height`` as displayed (rotated)."""

    duration_s: float
    fps: float
    frame_count: int
    width: int
    height: int


@dataclass(frozen=True)
class SampledVideo:
    """Frames (RGB uint8, H×W×3) and the time of each in the source video, in seconds."""

    frames: list[np.ndarray]
    timestamps_s: list[float]
    duration_s: float
    source_fps: float
    width: int  # of the sampled frames
    height: int
    clipped: bool  # True when the requested range was cut to max_seconds


def _open_video(path: Path) -> Any:  # an opened cv2.VideoCapture
    import cv2

    check_file(path)
    # FFmpeg explicitly: CAP_ANY may pick the image-sequence backend, which reads '%' as a pattern.
    backend = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    cap = cv2.VideoCapture(str(path), backend)
    if not cap.isOpened():
        cap.release()
        raise MediaError(
            path, "cannot be read as a video: its format is not supported, or the file is damaged"
        )
    return cap


def _probe(path: Path, cap: Any) -> VideoInfo:
    import cv2

    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    if not math.isfinite(fps) or fps <= 0:
        raise MediaError(path, "does not report a frame rate, so frames cannot be timed")
    if frame_count <= 0 or width <= 0 or height <= 0:
        raise MediaError(path, "has no video frames")
    # OpenCV rotates phone videos upright when decoding; report the displayed shape.
    rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 180
    if rotation == 90:
        width, height = height, width
    return VideoInfo(
        duration_s=frame_count / fps, fps=fps, frame_count=frame_count, width=width, height=height
    )


def probe_video(path: Path | str) -> VideoInfo:
    """Duration, frame rate, frame count and size, without decoding frames."""
    path = Path(path)
    cap = _open_video(path)
    try:
        return _probe(path, cap)
    finally:
        cap.release()


def _plan(
    path: Path,
    info: VideoInfo,
    fps: float,
    start_s: float,
    end_s: float | None,
    max_seconds: float,
) -> tuple[list[int], bool]:
    """Source frame indices to sample (ascending, no repeats) and whether the window was clipped."""
    if start_s >= info.duration_s:
        raise MediaError(
            path,
            f"starts at {start_s:g} s but the video is only {info.duration_s:.1f} s long; "
            "choose an earlier start",
        )
    end = info.duration_s if end_s is None else min(end_s, info.duration_s)
    clipped = end - start_s > max_seconds
    if clipped:
        end = start_s + max_seconds
    count = max(1, math.ceil((end - start_s) * fps - 1e-9))
    indices: list[int] = []
    for i in range(count):
        index = min(round((start_s + i / fps) * info.fps), info.frame_count - 1)
        # Sampling faster than the source would repeat frames: keep each source frame once.
        if not indices or index > indices[-1]:
            indices.append(index)
    return indices, clipped


def sample_video(
    path: Path | str,
    fps: float = DEFAULT_VIDEO_FPS,
    start_s: float = 0.0,
    end_s: float | None = None,
    max_side: int = DEFAULT_VIDEO_MAX_SIDE,
    max_seconds: float = MAX_VIDEO_SECONDS,
    max_fps: float = MAX_VIDEO_FPS,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> SampledVideo:
    """Sample frames at ``fps`` from ``start_s`` to ``end_s`` (None = the end), ``max_seconds`` max.

    Frames are reached by seeking; a hop of at most one second forward is decoded instead, which
    is cheaper than a seek (that restarts decoding at the previous keyframe). Only the sampled
    frames are kept in memory. ``progress(done, total)`` is called after each frame; when
    ``cancelled()`` returns True, :class:`SamplingCancelled` is raised.
    """
    import cv2

    path = Path(path)
    if not (math.isfinite(fps) and 0 < fps <= max_fps):
        raise MediaError(
            path, f"cannot be sampled at {fps:g} fps; choose a rate above 0 and at most {max_fps:g}"
        )
    if not math.isfinite(start_s) or start_s < 0:
        raise MediaError(path, f"cannot start at {start_s:g} s; the start must be 0 s or later")
    if end_s is not None and not end_s > start_s:
        raise MediaError(
            path,
            f"cannot be sampled from {start_s:g} s to {end_s:g} s; the end must be after the start",
        )
    if max_side < 1 or max_seconds <= 0:
        raise ValueError(f"max_side and max_seconds must be positive: {max_side}, {max_seconds}")

    cap = _open_video(path)
    try:
        info = _probe(path, cap)
        indices, clipped = _plan(path, info, fps, start_s, end_s, max_seconds)
        # Decoding forward this many frames is cheaper than a seek, which restarts from a keyframe.
        hop_limit = max(1, round(info.fps))
        frames: list[np.ndarray] = []
        timestamps: list[float] = []
        position = 0  # index of the frame the next read() returns
        for done, index in enumerate(indices):
            if cancelled is not None and cancelled():
                raise SamplingCancelled(f"{path}: video sampling was cancelled")
            if 0 <= index - position <= hop_limit:
                while position < index and cap.grab():
                    position += 1
            if position != index:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                position = index
            ok, frame = cap.read()
            if not ok or frame is None:
                break  # the container over-reported its frame count; keep what was decoded
            position += 1
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            height, width = frame.shape[:2]
            target = _fit_size(width, height, max_side)
            if target != (width, height):
                frame = cv2.resize(frame, target, interpolation=cv2.INTER_AREA)
            frames.append(np.ascontiguousarray(frame))
            timestamps.append(round(index / info.fps, 6))
            if progress is not None:
                progress(done + 1, len(indices))
    finally:
        cap.release()
    if not frames:
        raise MediaError(path, f"has no frames that can be decoded from {start_s:g} s on")
    height, width = frames[0].shape[:2]
    return SampledVideo(
        frames=frames,
        timestamps_s=timestamps,
        duration_s=info.duration_s,
        source_fps=info.fps,
        width=width,
        height=height,
        clipped=clipped,
    )


__all__ = [
    "ATTACHABLE_SUFFIXES",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_VIDEO_FPS",
    "DEFAULT_VIDEO_MAX_SIDE",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "MAX_PDF_PAGES",
    "MAX_VIDEO_FPS",
    "MAX_VIDEO_SECONDS",
    "PDF_SUFFIXES",
    "TEXT_SUFFIXES",
    "VIDEO_SUFFIXES",
    "AttachmentKind",
    "SampledVideo",
    "SamplingCancelled",
    "VideoInfo",
    "classify",
    "load_image",
    "load_pdf_pages",
    "pdf_page_count",
    "probe_video",
    "sample_video",
]
