"""Opening what was sent: a click on a sent chip opens, inside the app, the image (zoomable), the PDF pages
sent, the video frames sent, or the text file; the composer's PDF chip follows its page range."""

from __future__ import annotations

import test_app_window as base
from media_files import write_image, write_video
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.store import AttachmentKind, ThinkingMode
from app.views.message import AttachmentThumb

send, stored = base.send, base.stored


def write_mixed_pdf(path, sizes=((300, 400), (400, 200), (200, 200), (300, 300))):
    """A PDF whose pages differ in shape, so a picture of page 2 cannot pass for page 1."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    for width, height in sizes:
        doc.new_page(width, height)
    doc.save(str(path))
    doc.close()
    return path


def sent_thumbs(window) -> dict[AttachmentKind, AttachmentThumb]:
    user = window.transcript.widget_for(stored(window)[0].id)
    return {thumb.attachment.kind: thumb for thumb in user.findChildren(AttachmentThumb)}


def open_thumb(window, qt_wait, thumb: AttachmentThumb):
    QApplication.processEvents()
    QTest.mouseClick(thumb, Qt.MouseButton.LeftButton)
    assert thumb.viewer is not None and thumb.viewer.isVisible()
    return thumb.viewer


def test_a_click_on_each_sent_chip_opens_what_was_sent(window, qt_wait, tmp_path):
    image = write_image(tmp_path / "photo.png", size=(320, 240))
    pdf = write_mixed_pdf(tmp_path / "doc.pdf")
    video = write_video(tmp_path / "clip.avi", seconds=3.0)
    notes = tmp_path / "notes.txt"
    notes.write_text("x" * 76 + "\n")  # 77 bytes
    window.attachments.add_paths([image, pdf, video, notes])
    qt_wait(
        lambda: len(window.attachments.items) == 4, 60, lambda: window.error_banner.label.text()
    )
    pdf_key = next(p.key for p in window.attachments.items if p.kind is AttachmentKind.PDF)
    chip = window.composer._chips[pdf_key]
    chip.first.setValue(2)
    chip.last.setValue(3)
    qt_wait(lambda: not window.video_pane.busy, 60)
    send(window, qt_wait, "What is in these?", thinking=ThinkingMode.OFF, max_tokens=4)
    thumbs = sent_thumbs(window)
    assert thumbs[AttachmentKind.TEXT].caption.text() == "Text · notes.txt\n77 bytes"
    # The image, zoomable.
    viewer = open_thumb(window, qt_wait, thumbs[AttachmentKind.IMAGE])
    assert len(viewer.pictures) == 1 and viewer.pictures[0].pixmap().width() == 320
    QTest.mouseClick(viewer.zoom_in, Qt.MouseButton.LeftButton)
    assert viewer.pictures[0].pixmap().width() == 400 and viewer.zoom_label.text() == "125 %"
    QTest.mouseClick(viewer.zoom_out, Qt.MouseButton.LeftButton)
    QTest.mouseClick(viewer.zoom_out, Qt.MouseButton.LeftButton)
    assert viewer.pictures[0].pixmap().width() == 256
    viewer.close()
    # The PDF: the pages sent, not the whole document.
    viewer = open_thumb(window, qt_wait, thumbs[AttachmentKind.PDF])
    qt_wait(lambda: viewer.pictures, 60, lambda: viewer.summary.text())
    assert viewer.captions == ["Page 2", "Page 3"] and "pages 2–3 of 4" in viewer.summary.text()
    landscape = viewer.pictures[0].pixmap()
    assert landscape.width() > landscape.height()  # page 2 is the landscape one
    viewer.close()
    # The video: the frames sent (2 a second over its 3 s).
    viewer = open_thumb(window, qt_wait, thumbs[AttachmentKind.VIDEO])
    qt_wait(lambda: viewer.pictures, 60, lambda: viewer.summary.text())
    assert viewer.captions == ["0.0 s", "0.5 s", "1.0 s", "1.5 s", "2.0 s", "2.5 s"]
    viewer.close()
    # The text file, by keyboard too.
    thumb = thumbs[AttachmentKind.TEXT]
    thumb.setFocus()
    QTest.keyClick(thumb, Qt.Key.Key_Return)
    assert thumb.viewer.isVisible() and thumb.viewer.text.toPlainText() == "x" * 76 + "\n"


def test_a_sent_file_gone_from_the_data_folder_says_so(window, qt_wait, tmp_path):
    notes = tmp_path / "gone.txt"
    notes.write_text("soon gone")
    window.attachments.add_paths([notes])
    qt_wait(lambda: len(window.attachments.items) == 1, 60)
    send(window, qt_wait, "Read it", thinking=ThinkingMode.OFF, max_tokens=4)
    thumb = sent_thumbs(window)[AttachmentKind.TEXT]
    thumb.attachment.path.unlink()
    viewer = open_thumb(window, qt_wait, thumb)
    assert "gone.txt cannot be shown" in viewer.summary.text()


def test_the_composer_pdf_chip_follows_its_page_range(window, qt_wait, tmp_path):
    window.attachments.add_paths([write_mixed_pdf(tmp_path / "doc.pdf")])
    qt_wait(lambda: len(window.attachments.items) == 1, 60)
    pending = window.attachments.items[0]
    assert pending.thumbnail.height() > pending.thumbnail.width()  # page 1: portrait
    chip = window.composer._chips[pending.key]
    chip.first.setFocus()
    QTest.keyClick(chip.first, Qt.Key.Key_Up)  # page 2, the landscape one
    qt_wait(
        lambda: (
            window.attachments.items[0].thumbnail.width()
            > window.attachments.items[0].thumbnail.height()
        ),
        30,
    )
    shown = chip.thumb.pixmap()
    assert shown.width() > shown.height()
    assert "p. 2–4 of 4" in chip.caption.text()
