"""Grounding in the app: an answer's boxes drawn on the chat's image, hover, click-to-copy, toggle,
the larger view and "Save annotated image…", and "Locate…" on an attached image."""

from __future__ import annotations

from PIL import Image
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QFileDialog

from app.paths import app_paths
from app.store import AttachmentKind, Store, StoredAttachment
from engine_mlx.grounding import PALETTE

ANSWER = (
    "Found them.\n```json\n"
    '[{"bbox_2d": [100, 200, 500, 600], "label": "Save"}, {"bbox_2d": [600, 100, 900, 300], "label": "Quit"},'
    ' {"point_2d": [800, 800], "label": "logo"}]\n```'
)
W, H = 400, 300  # the image as the user sees it (upright)
GREY = (90, 90, 90)


def _chat_with_grounding(data, tmp_path, answer=ANSWER):
    source = tmp_path / "screen.png"
    Image.new("RGB", (W, H), GREY).save(source)
    paths = app_paths(data).ensure()
    store = Store(paths.database, paths.attachments)
    cid = store.create_conversation("Where is Save?")
    image = StoredAttachment(AttachmentKind.IMAGE, store.import_file(source), "screen.png")
    store.add_message(cid, "user", "Where is the Save button?", attachments=(image,))
    store.add_message(cid, "assistant", answer)
    store.close()
    return cid


def _open_first_chat(window, qt_wait):
    listing = window.conversation_list
    qt_wait(lambda: listing.count() > 0)
    rect = listing.visualItemRect(listing.item(0))
    QTest.mouseClick(listing.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qt_wait(lambda: any(w.role == "assistant" for w in window.transcript.widgets))
    return next(w for w in window.transcript.widgets if w.role == "assistant")


def _hover(view, point: QPoint) -> None:
    """A mouse move over the view, delivered to it (QTest.mouseMove sends nothing when the offscreen
    cursor is already there, as after an earlier test)."""
    from PySide6.QtCore import QEvent, QPointF
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    local = QPointF(point)
    event = QMouseEvent(
        QEvent.Type.MouseMove,
        local,
        QPointF(view.mapToGlobal(point)),
        Qt.MouseButton.NoButton,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(view, event)


def _rgb(image, x, y):
    c = image.pixelColor(x, y)
    return c.red(), c.green(), c.blue()


def test_answer_boxes_are_drawn_on_the_image_hovered_copied_and_toggled(
    make_window, qt_wait, tmp_path
):
    _chat_with_grounding(tmp_path / "data", tmp_path)
    window = make_window(tmp_path / "data")
    answer = _open_first_chat(window, qt_wait)
    panel = answer.grounding
    qt_wait(lambda: panel.isVisible())
    assert [chip.text() for chip in panel.chips] == ["2 boxes and 1 point on image 1"]
    view = panel.view
    assert (view.image.width(), view.image.height()) == (W, H) and view.scale == 1.0
    shot = view.grab().toImage()
    save, quit_ = PALETTE[0], PALETTE[1]
    # the Save box: x 40..200, y 60..180 in pixels; its right and bottom edges away from the label
    assert _rgb(shot, 200, 120) == save and _rgb(shot, 120, 180) == save
    assert _rgb(shot, 360, 60) == quit_  # the Quit box's right edge, x = 0.9 * 400
    assert _rgb(shot, 120, 120) == GREY  # inside a box stays as it was
    assert _rgb(shot, 320, 240) == PALETTE[2]  # the logo's crosshair centre

    _hover(view, QPoint(200, 120))
    # what the hover tooltip says
    assert "Save" in view.toolTip() and "40,60,200,180" in view.toolTip()
    _hover(view, QPoint(5, 290))
    assert view.toolTip() == ""  # over nothing
    # inside the box, away from its edges: the smallest box around it
    _hover(view, QPoint(120, 120))
    assert "Save" in view.toolTip()
    QTest.mouseClick(view, Qt.MouseButton.LeftButton, pos=QPoint(200, 120))
    assert QGuiApplication.clipboard().text() == "40,60,200,180"
    QTest.mouseClick(view, Qt.MouseButton.LeftButton, pos=QPoint(320, 240))
    assert QGuiApplication.clipboard().text() == "320,240"

    panel.toggle.click()  # Show boxes: off
    hidden = view.grab().toImage()
    assert _rgb(hidden, 200, 120) == GREY and _rgb(hidden, 320, 240) == GREY
    QGuiApplication.clipboard().setText("unchanged")
    QTest.mouseClick(view, Qt.MouseButton.LeftButton, pos=QPoint(200, 120))
    assert QGuiApplication.clipboard().text() == "unchanged"  # hidden overlays copy nothing
    panel.toggle.click()
    assert _rgb(view.grab().toImage(), 200, 120) == save


def test_larger_view_zooms_and_saves_the_annotated_image(
    make_window, qt_wait, tmp_path, monkeypatch
):
    _chat_with_grounding(tmp_path / "data", tmp_path)
    window = make_window(tmp_path / "data")
    panel = _open_first_chat(window, qt_wait).grounding
    qt_wait(lambda: panel.isVisible())
    panel.open_button.click()
    zoom = panel.zoom
    qt_wait(lambda: zoom.isVisible())
    zoom.zoom_in.click()
    assert zoom.view.scale == 1.5 and zoom.view.width() == round(W * 1.5)
    assert _rgb(zoom.view.grab().toImage(), 300, 180) == PALETTE[0]  # (200, 120) at 150 %
    out = tmp_path / "annotated.png"
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), "PNG image (*.png)")
    )
    zoom.save_button.click()
    saved = Image.open(out).convert("RGB")
    assert saved.size == (W, H)
    assert saved.getpixel((200, 120)) == PALETTE[0] and saved.getpixel((120, 120)) == GREY
    assert saved.getpixel((320, 240)) == PALETTE[2]
    zoom.close()


def test_an_answer_without_grounding_or_without_images_shows_no_panel(
    make_window, qt_wait, tmp_path
):
    _chat_with_grounding(tmp_path / "data", tmp_path, answer="The Save button is at the top right.")
    window = make_window(tmp_path / "data")
    answer = _open_first_chat(window, qt_wait)
    assert answer.grounding.isHidden() and not answer.grounding.chips


def test_locate_on_an_image_chip_fills_the_composer(make_window, qt_wait, tmp_path):
    window = make_window()
    source = tmp_path / "shot.png"
    Image.new("RGB", (64, 48), GREY).save(source)
    window.attachments.add_paths([source])
    qt_wait(lambda: window.composer.chip_count() == 1)
    chip = next(iter(window.composer._chips.values()))
    assert chip.locate_button is not None
    chip.locate_button.click()
    assert (
        window.composer.text()
        == "Locate every  in this image. Answer as JSON with bbox_2d and label."
    )
    QTest.keyClicks(window.composer.edit, "Save button")
    assert window.composer.text().startswith("Locate every Save button in this image.")


def test_a_forced_grounding_answer_streams_from_the_engine_onto_the_image(
    window, qt_wait, tmp_path, monkeypatch
):
    """The whole path with the demo model: an image attached in the composer, a question sent, and the
    answer (forced token by token through the real engine, tokenizer and detokenizer: the random model
    cannot choose it) drawn on the image as it streams."""
    from dataclasses import replace

    from engine_mlx.engine import Engine
    from engine_mlx.forcing import ForcedText

    answer = '```json\n[{"bbox_2d": [100, 200, 500, 600], "label": "Save"}]\n```'
    generate = Engine.generate

    def forced_generate(self, conversation, settings, cancel=None):
        return generate(
            self, conversation, replace(settings, thinking=False, forced=ForcedText(answer)), cancel
        )

    monkeypatch.setattr(Engine, "generate", forced_generate)
    source = tmp_path / "screen.png"
    Image.new("RGB", (W, H), GREY).save(source)
    window.attachments.add_paths([source])
    qt_wait(lambda: window.composer.chip_count() == 1)
    window.composer.edit.setPlainText("Where is the Save button?")
    QTest.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: not window.chat.busy, 120)
    reply = [w for w in window.transcript.widgets if w.role == "assistant"][-1]
    assert reply.answer_markdown().strip() == answer
    panel = reply.grounding
    qt_wait(lambda: panel.isVisible())
    assert [chip.text() for chip in panel.chips] == ["1 box on image 1"]
    shot = panel.view.grab().toImage()
    assert _rgb(shot, 200, 120) == PALETTE[0] and _rgb(shot, 120, 120) == GREY


def test_boxes_at_a_moment_of_a_video_are_drawn_on_that_frame(make_window, qt_wait, tmp_path):
    from tests.media_files import write_video

    video = write_video(tmp_path / "clip.mp4", seconds=3.0, size=(160, 120))
    paths = app_paths(tmp_path / "data").ensure()
    store = Store(paths.database, paths.attachments)
    cid = store.create_conversation("Where is the ball?")
    clip = StoredAttachment(
        AttachmentKind.VIDEO, store.import_file(video), "clip.mp4", duration_s=3.0
    )
    store.add_message(cid, "user", "Where is the ball at 1.5 s?", attachments=(clip,))
    store.add_message(
        cid, "assistant", '{"time": 1.5, "bbox_2d": [250, 250, 750, 750], "label": "ball"}'
    )
    store.close()
    window = make_window(tmp_path / "data")
    panel = _open_first_chat(window, qt_wait).grounding
    qt_wait(lambda: panel.isVisible())
    assert [chip.text() for chip in panel.chips] == ["1 box on video 1 at 1.5 s"]
    view = panel.view
    # the frame at the video's own size
    assert (view.image.width(), view.image.height()) == (
        160,
        120,
    )
    # the box's right edge, x = 0.75 * 160
    assert _rgb(view.grab().toImage(), 120, 60) == PALETTE[0]
