"""Real media files written for tests: PNG/JPEG with Pillow, PDF with pypdfium2, video with OpenCV."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image(path: Path, size=(320, 240), color=(200, 30, 30)) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, color)
    ImageDraw.Draw(img).rectangle([10, 10, size[0] // 2, size[1] // 2], fill=(20, 20, 220))
    img.save(path)
    return path


def write_pdf(path: Path, pages: int = 2) -> Path:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    for _ in range(pages):
        doc.new_page(300, 400)
    doc.save(str(path))
    doc.close()
    return path


def write_video(path: Path, seconds: float = 3.0, fps: int = 10, size=(160, 120)) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for i in range(int(seconds * fps)):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:, : (i * 7) % size[0]] = (0, 180, 255)
        writer.write(frame)
    writer.release()
    return path
