"""A tool call in the transcript: a collapsible block (tool, arguments, result, duration or error, images)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QFrame, QLabel, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from ..controllers.tools import outcome_text, pretty_json
from ..store import StoredToolCall

SHOWN_RESULT_CHARS = (
    20_000  # the block shows this much of a result (the model got up to the host's cap)
)
IMAGE_SIDE = 240


class ToolCallBlock(QFrame):
    """Collapsed: one line (server ▸ tool · how it ended). Expanded: the arguments, the result, the images."""

    def __init__(self, call: StoredToolCall, parent: QWidget | None = None):
        super().__init__(parent)
        self.call = call
        self.setObjectName("ToolCall")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        self.toggle = QToolButton()
        self.toggle.setObjectName("LinkButton")
        self.toggle.setAutoRaise(True)
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setText(f"{call.server} ▸ {call.tool} · {outcome_text(call)}")
        self.toggle.setAccessibleName(f"Tool call {call.tool}, {outcome_text(call)}")
        self.toggle.setToolTip("Show or hide the call's arguments and result")
        self.toggle.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # as every button inside a message
        self.toggle.toggled.connect(self.set_expanded)
        layout.addWidget(self.toggle)
        self.details = QWidget()
        inner = QVBoxLayout(self.details)
        inner.setContentsMargins(18, 0, 0, 0)
        inner.addWidget(QLabel("Arguments"))
        self.arguments = self._text(pretty_json(call.arguments), "Tool call arguments")
        inner.addWidget(self.arguments)
        inner.addWidget(QLabel("Error" if call.outcome == "failed" else "Result"))
        shown = (
            call.result
            if len(call.result) <= SHOWN_RESULT_CHARS
            else (
                call.result[:SHOWN_RESULT_CHARS]
                + f"\n[… {len(call.result) - SHOWN_RESULT_CHARS:,} more characters]"
            )
        )
        self.result = self._text(shown, "Tool call result")
        inner.addWidget(self.result)
        self.images: list[QLabel] = []
        for path in call.images:
            pixmap = QPixmap(str(path))
            label = QLabel()
            label.setAccessibleName(f"Image returned by {call.tool}")
            if pixmap.isNull():
                label.setText(f"[image {path.name} could not be shown]")
            else:
                label.setPixmap(
                    pixmap.scaled(
                        IMAGE_SIDE,
                        IMAGE_SIDE,
                        Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.SmoothTransformation,
                    )
                )
            self.images.append(label)
            inner.addWidget(label)
        layout.addWidget(self.details)
        self.details.hide()
        # An image is worth seeing without a click: a call that returned one opens expanded.
        if self.images:
            self.toggle.setChecked(True)

    @staticmethod
    def _text(text: str, name: str) -> QPlainTextEdit:
        view = QPlainTextEdit(text)
        view.setReadOnly(True)
        view.setAccessibleName(name)
        view.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        lines = min(12, text.count("\n") + 1)
        view.setFixedHeight(view.fontMetrics().lineSpacing() * lines + 12)
        return view

    @property
    def expanded(self) -> bool:
        return self.details.isVisibleTo(self)

    def set_expanded(self, expanded: bool) -> None:
        self.details.setVisible(expanded)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)


def tool_area(message_widget: QWidget) -> QVBoxLayout:
    """The column above an answer's text where its calls (and consent cards) go, made on first use."""
    area = getattr(message_widget, "tool_area", None)
    if area is None:
        box = QWidget(message_widget)
        box.setObjectName("ToolCalls")
        area = QVBoxLayout(box)
        area.setContentsMargins(0, 0, 0, 0)
        area.setSpacing(2)
        outer = message_widget.layout()
        outer.insertWidget(outer.indexOf(message_widget.answer), box)
        message_widget.tool_area = area
    return area


def add_call_blocks(
    message_widget: QWidget, calls: tuple[StoredToolCall, ...]
) -> list[ToolCallBlock]:
    area = tool_area(message_widget)
    blocks = [ToolCallBlock(call) for call in calls]
    for block in blocks:
        area.addWidget(block)
    return blocks


def call_blocks(message_widget: QWidget) -> list[ToolCallBlock]:
    return message_widget.findChildren(ToolCallBlock)
