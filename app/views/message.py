"""One message in the transcript: a user bubble (text, attachments, edit) or an assistant answer."""

from __future__ import annotations

from collections.abc import Callable

import shiboken6
from PySide6.QtCore import QPoint, QSize, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QImage, QImageReader, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine_mlx.sizes import human_bytes

from ..render import Palette, Renderer
from ..store import AttachmentKind, MessageState, StoredAttachment, StoredMessage, StoredStats
from . import long_text
from .answer import AnswerView
from .grounding import GroundingImage, GroundingPanel, group_by_image
from .thinking import ThinkingBlock
from .versions import VersionSwitch

THUMB = 120
MATCH_COLOR = "#ffe58a"  # a search match, in both themes


def stats_line(stats: StoredStats) -> str:
    parts = [f"{stats.generated_tokens:,} tokens"]
    if stats.decode_tps:
        parts.append(f"{stats.decode_tps:.1f} tok/s")
    if stats.ttft_s:
        parts.append(f"first token {stats.ttft_s:.2f} s")
    if stats.prompt_tokens:
        prompt = f"prompt {stats.prompt_tokens:,}"
        if stats.reused_tokens:
            prompt += f" ({stats.reused_tokens:,} reused)"
        parts.append(prompt)
    return " · ".join(parts)


STATE_TEXT = {
    MessageState.INTERRUPTED: "Interrupted — QwenDesk closed before this answer finished.",
    MessageState.STOPPED: "Stopped.",
}


def _link_button(text: str, tip: str) -> QToolButton:
    button = QToolButton()
    button.setObjectName("LinkButton")
    button.setText(text)
    button.setToolTip(tip)
    button.setAutoRaise(True)
    button.setCursor(Qt.CursorShape.PointingHandCursor)
    button.setAccessibleName(text)
    # the Chat menu's shortcuts act on the focused message
    button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    return button


PDF_THUMB_PAGES = 4  # page thumbnails shown per sent PDF; "+N" says how many more were sent


def _qimage(image) -> QImage:
    rgb = image.convert("RGB")
    return QImage(
        rgb.tobytes(), rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888
    ).copy()


def _render_pages(path, first: int, last: int) -> list[QImage]:
    from engine_mlx import media

    return [_qimage(page) for page in media.load_pdf_pages(path, first, last, max_side=THUMB)]


def _render_frame(path, start_s: float) -> list[QImage]:
    from engine_mlx import media

    video = media.sample_video(path, fps=1.0, start_s=start_s, end_s=start_s + 0.9, max_side=THUMB)
    return [
        QImage(
            f.tobytes(), f.shape[1], f.shape[0], 3 * f.shape[1], QImage.Format.Format_RGB888
        ).copy()
        for f in video.frames[:1]
    ]


class AttachmentThumb(QFrame):
    """A sent attachment: an image, a PDF's first pages, a video's first frame (rendered off the GUI
    thread), or a text file's name and size. A click (or Enter) opens what was sent."""

    def __init__(self, att: StoredAttachment, parent: QWidget | None = None):
        super().__init__(parent)
        self.attachment = att
        self.viewer = None  # the window showing what was sent, once opened
        self.setObjectName("AttachmentChip")
        self.setToolTip(f"{att.name} · click to open what was sent")
        self.setAccessibleName(f"Open {att.name}")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)
        self.images = QHBoxLayout()
        self.images.setSpacing(4)
        layout.addLayout(self.images)
        self.caption = QLabel()
        self.caption.setObjectName("Muted")
        self.caption.setWordWrap(True)
        self.caption.setMaximumWidth(THUMB * 2)
        layout.addWidget(self.caption)
        self.pictures: list[QLabel] = []  # the image, the PDF's pages or the video's frame
        self._task = None
        if att.kind is AttachmentKind.IMAGE:
            self.caption.hide()
            reader = QImageReader(str(att.path))
            reader.setAutoTransform(True)
            size = reader.size()
            if size.isValid() and size.width() > 0:
                reader.setScaledSize(
                    size.scaled(QSize(THUMB * 2, THUMB), Qt.AspectRatioMode.KeepAspectRatio)
                )
            image = reader.read()
            if not image.isNull():
                self.pictures.append(self._add_image(image))
            else:
                self.caption.setText(f"{att.name}\n(missing)")
                self.caption.show()
        elif att.kind is AttachmentKind.PDF:
            last = att.last_page or att.page_count or att.first_page
            shown_last = min(last, att.first_page + PDF_THUMB_PAGES - 1)
            more = last - shown_last
            pages = (
                f"page {att.first_page}"
                if last == att.first_page
                else f"pages {att.first_page}–{last}"
            )
            self.caption.setText(f"{att.name} · {pages}" + (f" (+{more} more)" if more > 0 else ""))
            self._start(lambda _ctx: _render_pages(att.path, att.first_page, shown_last))
        elif att.kind is AttachmentKind.VIDEO:
            end = att.end_s if att.end_s is not None else att.duration_s or 0
            self.caption.setText(f"{att.name} · {att.start_s:.1f}–{end:.1f} s · {att.fps:g} fps")
            self._start(lambda _ctx: _render_frame(att.path, att.start_s))
        else:
            try:
                size = human_bytes(att.path.stat().st_size)
            except OSError:
                size = "missing"
            self.caption.setText(f"Text · {att.name}\n{size}")
            self.setContentsMargins(4, 4, 4, 4)

    def open(self) -> None:
        from .attachment_viewer import open_attachment

        self.viewer = open_attachment(self.attachment, self.window())

    def mouseReleaseEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(
            event.position().toPoint()
        ):
            self.open()
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space):
            self.open()
            return
        super().keyPressEvent(event)

    def _start(self, fn) -> None:
        from ..operations import Operation

        self._task = (
            Operation(self, fn, self._show_images, label="Drawing the attachment")
            .failure(self._show_failure)
            .run_in_background()
        )

    def _show_images(self, images: list[QImage]) -> None:
        if not shiboken6.isValid(self):
            return
        for image in images:
            self.pictures.append(self._add_image(image))

    def _show_failure(self, error: Exception) -> None:
        if shiboken6.isValid(self):
            self.caption.setText(f"{self.caption.text()}\n(cannot be shown: {error})")

    def _add_image(self, image: QImage) -> QLabel:
        label = QLabel()
        label.setPixmap(QPixmap.fromImage(image))
        self.images.addWidget(label)
        return label


def limit_note(tokens: int | None) -> str:
    limit = f"the {tokens:,}-token limit" if tokens else "its token limit"
    return f"The model was still thinking when it reached {limit}: there is no answer yet."


def cut_note(tokens: int, thought: bool) -> str:
    """An answer the token limit cut after its thinking (the limit counts thinking and answer together)."""
    counts = "its thinking and answer together" if thought else "the answer"
    return (
        f"Cut off at the {tokens:,}-token limit, which counts {counts}. "
        "Continue carries it on, or raise Max tokens per reply in Chat settings."
    )


ENDED_IN_THINKING = (
    "The model ended its turn while still thinking: there is no answer. Try Regenerate."
)


class MessageWidget(QFrame):
    copyRequested = Signal(str)
    editSubmitted = Signal(int, str)
    regenerateRequested = Signal()
    continueRequested = Signal(int)  # message id: carry this (last) answer on from where it was cut
    scrollRequested = Signal(QWidget)  # bring this child into view (a grounding chip's image)
    versionRequested = Signal(int, int)  # message id, step: show another version of this message

    def __init__(
        self,
        message: StoredMessage,
        palette: Palette,
        parent: QWidget | None = None,
        token_limit: int = 0,
        renderer: Renderer | None = None,
    ):
        super().__init__(parent)
        self.token_limit = token_limit  # the chat's max answer tokens (0 = unknown)
        self.message = message
        self.message_id = message.id
        self.role = message.role
        # () -> (the chat's images and videos before this answer, the user's turn text), set by the transcript
        self.grounding_context: (
            Callable[[], tuple[list[GroundingImage], list[StoredAttachment], str]] | None
        ) = None
        self._palette = palette
        self._renderer = renderer
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)
        # Made only under a text too long to show whole (long_text.py): the note and its "Show all".
        self.show_all_row: QWidget | None = None
        self.show_all_button: QToolButton | None = None
        # Focusable (arrow keys in the transcript), drawn with a focus frame (theme.py), read by name.
        self.setObjectName("Message")
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setAccessibleName("Your message" if message.role == "user" else "Qwen's answer")
        self.versions = VersionSwitch(
            message.version,
            message.version_count,
            "message" if message.role == "user" else "answer",
        )
        self.versions.stepRequested.connect(
            lambda step: self.versionRequested.emit(self.message_id, step)
        )
        outer = QVBoxLayout(self)
        outer.setContentsMargins(16, 8, 16, 8)
        outer.setSpacing(4)
        if message.role == "user":
            self._build_user(outer, message)
        else:
            self._build_assistant(outer, message)

    # --- user ---------------------------------------------------------------------------------
    def _build_user(self, outer: QVBoxLayout, message: StoredMessage) -> None:
        row = QHBoxLayout()
        row.addStretch(1)
        self.bubble = QFrame(self)
        self.bubble.setObjectName("UserBubble")
        self.bubble.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.bubble.setMaximumWidth(760)
        bubble_layout = QVBoxLayout(self.bubble)
        bubble_layout.setContentsMargins(12, 8, 12, 8)
        if message.attachments:
            thumbs = QHBoxLayout()
            thumbs.setSpacing(6)
            for att in message.attachments:
                thumbs.addWidget(AttachmentThumb(att))
            thumbs.addStretch(1)
            bubble_layout.addLayout(thumbs)
        shown = long_text.elide(message.text, long_text.USER_SHOWN_CHARS)
        self.text_label = QLabel(shown)
        self.text_label.setWordWrap(True)
        self.text_label.setTextFormat(Qt.TextFormat.PlainText)
        self.text_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text_label.setVisible(bool(message.text))
        # Wide enough for short messages to stay on one line, wrapping only long ones.
        longest = max(
            (self.text_label.fontMetrics().horizontalAdvance(line) for line in shown.splitlines()),
            default=0,
        )
        self.text_label.setMinimumWidth(min(longest + 4, 520))
        bubble_layout.addWidget(self.text_label)
        self._bubble_layout = bubble_layout
        self.full_text: QPlainTextEdit | None = (
            None  # the whole of an elided message, after "Show all"
        )
        self._add_show_all(bubble_layout, len(shown), len(message.text))
        # The editor and its buttons are made on the first Edit: a long chat opens without hundreds of them.
        self.editor: QPlainTextEdit | None = None
        self.edit_buttons: QWidget | None = None
        row.addWidget(self.bubble, 0)
        outer.addLayout(row)
        actions = QHBoxLayout()
        actions.addStretch(1)
        actions.addWidget(self.versions)
        self.edit_button = _link_button("Edit", "Edit this message and send it again")
        self.edit_button.clicked.connect(self.begin_edit)
        copy = _link_button("Copy", "Copy this message")
        copy.clicked.connect(lambda: self._copy(self.message.text))
        actions.addWidget(self.edit_button)
        actions.addWidget(copy)
        outer.addLayout(actions)

    def _make_editor(self) -> None:
        self.editor = QPlainTextEdit()
        self.editor.setAccessibleName("Edit your message")
        self.editor.setMinimumWidth(360)
        self.editor.setMaximumHeight(160)
        self._bubble_layout.addWidget(self.editor)
        self.edit_buttons = QWidget()
        eb = QHBoxLayout(self.edit_buttons)
        eb.setContentsMargins(0, 0, 0, 0)
        eb.addStretch(1)
        cancel = QPushButton("Cancel")
        cancel.setAccessibleName("Cancel the edit")
        cancel.clicked.connect(self.cancel_edit)
        send = QPushButton("Save && send")
        send.setAccessibleName("Save and send")
        send.setDefault(True)
        send.clicked.connect(self._submit_edit)
        eb.addWidget(cancel)
        eb.addWidget(send)
        self._bubble_layout.addWidget(self.edit_buttons)

    def begin_edit(self) -> None:
        if self.editor is None:
            self._make_editor()
        self.editor.setPlainText(self.message.text)
        self._user_text_view().hide()
        self.editor.show()
        self.edit_buttons.show()
        self.editor.setFocus()

    def cancel_edit(self) -> None:
        if self.editor is not None:
            self.editor.hide()
            self.edit_buttons.hide()
        self._user_text_view().setVisible(bool(self.message.text))

    def _submit_edit(self) -> None:
        text = self.editor.toPlainText()
        self.cancel_edit()
        self.editSubmitted.emit(self.message_id, text)

    # --- assistant ----------------------------------------------------------------------------
    def _build_assistant(self, outer: QVBoxLayout, message: StoredMessage) -> None:
        role = QLabel("Qwen")
        role.setObjectName("RoleLabel")
        outer.addWidget(role)
        self.thinking = ThinkingBlock(self)
        self.thinking.hide()
        outer.addWidget(self.thinking)
        self.progress_label = QLabel()
        self.progress_label.setObjectName("Muted")
        self.progress_label.hide()
        outer.addWidget(self.progress_label)
        self.answer = AnswerView(self._palette, self, self._renderer)
        self.answer.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # selectable by mouse; Tab skips it
        self.answer.setAccessibleName("Answer text")
        outer.addWidget(self.answer)
        # Boxes and points the answer names, drawn on the image; the transcript says which images
        # the chat has before this answer (``grounding_context``).
        self.grounding = GroundingPanel(self)
        self.grounding.copied.connect(self.copyRequested)
        outer.addWidget(self.grounding)
        self.state_label = QLabel()
        self.state_label.setObjectName("StateLabel")
        self.state_label.setWordWrap(True)
        self.state_label.hide()
        outer.addWidget(self.state_label)
        # A reply cut off inside its thinking: say so, and offer to answer again with a higher limit.
        self.limit_row = QWidget()
        limit_layout = QHBoxLayout(self.limit_row)
        limit_layout.setContentsMargins(0, 0, 0, 0)
        self.limit_label = QLabel()
        self.limit_label.setObjectName("LimitNote")
        self.limit_label.setWordWrap(True)
        limit_layout.addWidget(self.limit_label, 1)
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip("Carry on thinking from where it stopped")
        self.continue_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.continue_button.clicked.connect(lambda: self.continueRequested.emit(self.message_id))
        limit_layout.addWidget(self.continue_button)
        self.limit_row.hide()
        self._cut_in_thinking = False
        outer.addWidget(self.limit_row)
        self._stats: StoredStats | None = message.stats
        footer = QHBoxLayout()
        self.stats_label = QLabel()
        self.stats_label.setObjectName("Stats")
        footer.addWidget(self.versions)
        footer.addWidget(self.stats_label)
        footer.addStretch(1)
        self.copy_button = _link_button("Copy", "Copy this answer as Markdown")
        self.copy_button.clicked.connect(lambda: self._copy(self.answer.markdown))
        self.regenerate_button = _link_button("Regenerate", "Answer this again")
        self.regenerate_button.clicked.connect(self.regenerateRequested)
        self.regenerate_button.hide()
        # An answer cut short (Stop, the token limit, a closed app): carry it on from its end.
        self.continue_link = _link_button("Continue", "Carry on this answer from where it stopped")
        self.continue_link.clicked.connect(lambda: self.continueRequested.emit(self.message_id))
        self.continue_link.hide()
        footer.addWidget(self.copy_button)
        footer.addWidget(self.continue_link)
        footer.addWidget(self.regenerate_button)
        outer.addLayout(footer)
        if message.state is MessageState.STREAMING:
            self.progress_label.setText("Reading the prompt…")
            self.progress_label.show()
            self.copy_button.hide()
            # A continued answer (or one still streaming when its chat is reopened): what it has so far.
            if message.thinking and not message.text:
                self.thinking.start(already_s=message.thinking_s or 0.0)
                self.thinking.append(message.thinking)
            elif message.thinking:
                self.thinking.set_static(message.thinking, message.thinking_s, None)
                self.thinking.show()
            if message.text:
                self.answer.append(message.text)
            return
        if message.thinking:
            self.thinking.set_static(
                message.thinking,
                message.thinking_s,
                message.stats.thinking_tokens if message.stats else None,
            )
            self.thinking.show()
        shown = long_text.elide(message.text, long_text.ANSWER_SHOWN_CHARS)
        self.answer.set_markdown(message.text, shown)
        self._add_show_all(outer, len(shown), len(message.text), at=outer.indexOf(self.answer) + 1)
        if message.stats:
            self.stats_label.setText(stats_line(message.stats))
        self._show_state(message.state, message.error)

    def _show_state(self, state: MessageState, error: str) -> None:
        text = error if state is MessageState.ERROR else STATE_TEXT.get(state, "")
        cut = state is MessageState.COMPLETE and self._cut_at_limit()
        if cut:
            text = cut_note(self._limit_tokens(), bool(self.thinking.text().strip()))
        name = "LimitNote" if cut else "StateLabel"  # a note, not an error: the muted style
        if self.state_label.objectName() != name:
            self.state_label.setObjectName(name)
            self.state_label.style().unpolish(self.state_label)
            self.state_label.style().polish(self.state_label)
        self.state_label.setText(text)
        self.state_label.setVisible(bool(text))
        cut_off = (
            state is MessageState.COMPLETE
            and not self.answer.markdown.strip()
            and bool(self.thinking.text().strip())
        )
        # Only the token limit can be raised; a model that ended its turn inside its thinking is said so.
        at_limit = cut_off and (not self.token_limit or self._limit_tokens() >= self.token_limit)
        if cut_off:
            self.limit_label.setText(
                limit_note(self._limit_tokens()) if at_limit else ENDED_IN_THINKING
            )
        self._cut_in_thinking = (
            at_limit  # the limit row's Continue: offered on the last answer only
        )
        self.continue_button.setVisible(at_limit)
        self.limit_row.setVisible(cut_off)
        self.answer.setVisible(not cut_off)  # no blank gap under "Thought for …"

    def _limit_tokens(self) -> int:
        """The tokens of the last run, which the limit applies to."""
        return (self._stats.run_tokens or self._stats.generated_tokens) if self._stats else 0

    def _cut_at_limit(self) -> bool:
        """An answer (not only thinking) that the token limit cut."""
        return (
            bool(self.token_limit)
            and self._limit_tokens() >= self.token_limit
            and bool(self.answer.markdown.strip())
        )

    # streaming API (assistant only) ----------------------------------------------------------
    def set_progress(self, done: int, total: int) -> None:
        if total > 0 and done < total:
            self.progress_label.setText(
                f"Reading the prompt… {100 * done // total}% ({done:,}/{total:,} tokens)"
            )
            self.progress_label.show()
        else:
            self.progress_label.hide()

    def append_thinking(self, text: str) -> None:
        self.progress_label.hide()
        if self.thinking.isHidden():
            self.thinking.show()
            self.thinking.start()
        self.thinking.append(text)

    def start_answer(self, thinking_s: float) -> None:
        self.progress_label.hide()
        if self.thinking.live:
            self.thinking.finish(thinking_s)

    def append_answer(self, text: str) -> None:
        self.answer.append(text)
        if "}" in text or "</parameter>" in text:  # an object closed: a box may be complete
            self.refresh_grounding()

    def refresh_grounding(self) -> None:
        """Draw what the answer points at on the chat's images (nothing if it names no boxes)."""
        if self.role != "assistant" or self.grounding_context is None:
            return
        from engine_mlx.grounding import parse_grounding

        shapes = parse_grounding(self.answer.markdown)
        if not shapes and self.grounding.isHidden():
            return
        images, videos, turn_text = self.grounding_context()
        self.grounding.set_groups(
            group_by_image(shapes, images, turn_text, videos), self.scrollRequested.emit
        )

    def set_stats(self, stats: StoredStats) -> None:
        self._stats = stats  # (before finish(): its note needs the run's tokens)
        self.stats_label.setText(stats_line(stats))
        if not self.thinking.isHidden():
            self.thinking.set_tokens(stats.thinking_tokens)

    def finish(self, state: MessageState, error: str) -> None:
        self.progress_label.hide()
        if self.thinking.live:
            self.thinking.finish()
        self.answer.finish()
        self.copy_button.show()
        self._show_state(state, error)
        self.refresh_grounding()
        self.message = StoredMessage(
            self.message.id,
            self.message.conversation_id,
            self.message.position,
            "assistant",
            self.answer.markdown,
            self.thinking.text(),
            state,
            self.thinking.seconds,
            None,
            error,
        )

    def set_regenerate_visible(self, visible: bool) -> None:
        """Shown on the last answer while nothing streams: Regenerate, and Continue if it was cut short."""
        if self.role == "assistant":
            self.regenerate_button.setVisible(visible)
            self.continue_link.setVisible(visible and self._continuable())
            self.continue_button.setVisible(visible and self._cut_in_thinking)

    def _continuable(self) -> bool:
        """Stopped or interrupted with something written, or an answer the token limit cut (one cut
        inside its thinking has the limit row's Continue instead)."""
        state = self.message.state
        has_answer = bool(self.answer.markdown.strip())
        if state in (MessageState.STOPPED, MessageState.INTERRUPTED):
            return has_answer or bool(self.thinking.text().strip())
        return state is MessageState.COMPLETE and has_answer and self._cut_at_limit()

    # --- long messages ------------------------------------------------------------------------
    def _add_show_all(self, layout: QVBoxLayout, shown: int, total: int, at: int = -1) -> None:
        """Under an elided text: how much of it is shown, and "Show all"."""
        if shown >= total:
            return
        self.show_all_row = QWidget()
        row = QHBoxLayout(self.show_all_row)
        row.setContentsMargins(0, 0, 0, 0)
        note = QLabel(long_text.shown_note(shown, total))
        note.setObjectName("Muted")
        row.addWidget(note)
        self.show_all_button = _link_button(
            "Show all", "Show the whole text (long texts take a moment)"
        )
        self.show_all_button.clicked.connect(self.show_all)
        row.addWidget(self.show_all_button)
        row.addStretch(1)
        layout.insertWidget(at, self.show_all_row)

    def show_all(self) -> None:
        """The whole of an elided message: a user's in a scrolling plain-text box, an answer rendered."""
        if self.show_all_row is None or self.show_all_row.isHidden():
            return
        if self.role == "user":
            self.full_text = long_text.full_text_view(self.message.text)
            self._bubble_layout.insertWidget(
                self._bubble_layout.indexOf(self.text_label), self.full_text
            )
            self.text_label.hide()
        else:
            self.answer.show_all()
        self.show_all_row.hide()

    def _user_text_view(self) -> QWidget:
        return self.full_text if self.full_text is not None else self.text_label

    # --- search -------------------------------------------------------------------------------
    def mark(self, term: str) -> bool:
        """Select (user) or highlight (answer) the first occurrence of ``term``; False if not found."""
        self._match_y = 0
        if not term:
            return False
        if self.role == "user":
            index = self.message.text.lower().find(term.lower())
            if index < 0:
                return False
            if index + len(term) > len(self.text_label.text()):
                self.show_all()  # the match is past the elided part
            if self.full_text is not None:
                self.full_text.setTextCursor(self.full_text.document().find(term))
                self.full_text.ensureCursorVisible()
                self._match_y = self.full_text.y() + self.full_text.cursorRect().top()
                return True
            self.text_label.setSelection(index, len(term))
            self._match_y = self.text_label.y()
            return True
        cursor = self.answer.document().find(term)
        if (
            cursor.isNull()
            and term.lower() in self.answer.markdown.lower()[self.answer.shown_chars :]
        ):
            self.show_all()  # the match is past the elided part
            cursor = self.answer.document().find(term)
        if cursor.isNull():
            return False
        selection = QTextEdit.ExtraSelection()
        selection.cursor = cursor
        selection.format.setBackground(QColor(MATCH_COLOR))
        selection.format.setForeground(QColor("#1d2228"))
        self.answer.setExtraSelections([selection])
        self._match_y = self.answer.y() + self.answer.cursorRect(cursor).top()
        return True

    @property
    def marked_text(self) -> str:
        """The marked match, as shown ("" if none)."""
        if self.role == "user":
            return (
                self.full_text.textCursor().selectedText()
                if self.full_text is not None
                else self.text_label.selectedText()
            )
        selections = self.answer.extraSelections()
        return selections[0].cursor.selectedText() if selections else ""

    def match_point(self) -> QPoint:
        return QPoint(0, getattr(self, "_match_y", 0))

    # --- shared -------------------------------------------------------------------------------
    def _copy(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.copyRequested.emit(text)

    def answer_markdown(self) -> str:
        return self.answer.markdown if self.role == "assistant" else self.message.text
