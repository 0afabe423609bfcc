"""A Markdown answer that streams: finished blocks are inserted once, only the tail is replaced.

Each flush (at most every ``FLUSH_MS``) costs O(new text): the QTextDocument keeps the finished blocks,
and the cursor removes and re-inserts just the open tail block. The widget's height follows the document,
so the transcript scrolls instead of the answer.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QGuiApplication, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QFrame, QSizePolicy, QTextBrowser, QWidget

from ..render import Palette, Renderer, StreamingMarkdown

FLUSH_MS = 50
# Qt's rich-text layout (run at the end of each flush) costs a little more the longer the document: the
# flush interval grows with it, up to MAX_FLUSH_MS at SLOW_FLUSH_CHARS, so the GUI thread's work per
# token stays flat through a very long answer (text still appears at least ~10 times a second).
MAX_FLUSH_MS = 90
SLOW_FLUSH_CHARS = 80_000


def flush_interval(chars: int) -> int:
    return FLUSH_MS + (MAX_FLUSH_MS - FLUSH_MS) * min(chars, SLOW_FLUSH_CHARS) // SLOW_FLUSH_CHARS


# While streaming, the widget grows in steps of this many pixels: every height change re-lays out the
# transcript, so growing per line of text would do that several times a second.
GROW_STEP = 120


class AnswerView(QTextBrowser):
    codeCopied = Signal(str)

    def __init__(
        self, palette: Palette, parent: QWidget | None = None, renderer: Renderer | None = None
    ):
        """``renderer``: one shared by a transcript's answers (building one costs a Markdown parser and a
        highlighter style, ~10 ms); each answer gets its own otherwise."""
        super().__init__(parent)
        self.setObjectName("AnswerView")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.viewport().setAutoFillBackground(False)
        # Transparent through the application's style sheet (theme.py): a style sheet per widget costs
        # a parse and a polish for every answer created.
        self.document().setDocumentMargin(2)
        # Read-only and rewritten at its tail on every flush: an undo history would only grow.
        self.document().setUndoRedoEnabled(False)
        self.anchorClicked.connect(self._on_anchor)
        self._stream = StreamingMarkdown(renderer if renderer is not None else Renderer(palette))
        self._tail_pos = 0
        self._pending: list[str] = []
        self._rest = ""  # an elided answer's text not shown yet (see set_markdown)
        self.streaming = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(FLUSH_MS)
        self._timer.timeout.connect(self.flush)
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)
        self.setFixedHeight(8)

    # --- content ------------------------------------------------------------------------------
    @property
    def markdown(self) -> str:
        return self._stream.source + "".join(self._pending) + self._rest

    def set_markdown(self, text: str, shown: str | None = None) -> None:
        """A complete answer (from history): rendered once. ``shown``, a start of ``text``, elides it:
        only that part is rendered, as a stream shows it, until ``show_all`` (long_text.py says why)."""
        self.clear()
        self._stream = StreamingMarkdown(self._stream.renderer)
        self._tail_pos = 0
        self._pending.clear()
        if shown is not None and len(shown) < len(text):
            self._rest = text[len(shown) :]
            self._insert(self._stream.feed(shown), self._stream.tail_html())
            return
        self._rest = ""
        blocks = self._stream.feed(text) + self._stream.finish()
        self._insert(blocks, "")

    @property
    def shown_chars(self) -> int:
        """How much of the answer is rendered (all of it unless elided)."""
        return len(self.markdown) - len(self._rest)

    def show_all(self) -> None:
        """Render the rest of an elided answer."""
        if self._rest:
            rest, self._rest = self._rest, ""
            self._insert(self._stream.feed(rest) + self._stream.finish(), "")

    def append(self, delta: str) -> None:
        """Streaming: queue the text; the coalescing timer renders it."""
        self.show_all()  # an elided answer carried on: its whole text first
        self._pending.append(delta)
        self.streaming = True
        if not self._timer.isActive():
            self._timer.start(flush_interval(len(self._stream.text)))

    def finish(self) -> None:
        """The answer is complete: render everything left as finished blocks."""
        self._timer.stop()
        text = "".join(self._pending)
        self._pending.clear()
        blocks = self._stream.feed(text) + self._stream.finish()
        self._insert(blocks, "")
        self.streaming = False
        self._fit_height()

    def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        blocks = self._stream.feed(text)
        self._insert(blocks, self._stream.tail_html())

    def _insert(self, blocks, tail_html: str) -> None:
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        cursor.setPosition(self._tail_pos)
        cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        cursor.removeSelectedText()
        for block in blocks:
            self._insert_fragment(cursor, block.html)
        self._tail_pos = cursor.position()
        if tail_html:
            self._insert_fragment(cursor, tail_html)
        cursor.endEditBlock()

    @staticmethod
    def _insert_fragment(cursor: QTextCursor, html: str) -> None:
        # A paragraph or heading would merge into the current block: start a new one first. Lists and
        # tables open their own blocks (an extra empty block there would show as a gap).
        if cursor.position() > 0 and html.startswith(("<p", "<h", "<blockquote", "<hr")):
            cursor.insertBlock(QTextBlockFormat(), QTextCharFormat())
        cursor.insertHtml(html)

    # --- geometry -----------------------------------------------------------------------------
    def _fit_height(self, *_: object) -> None:
        height = int(self.document().size().height()) + 4
        if self.streaming:
            height = -(-height // GROW_STEP) * GROW_STEP
        if height != self.height():
            self.setFixedHeight(height)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        width = self.viewport().width()
        if width > 0 and abs(self.document().textWidth() - width) > 0.5:
            self.document().setTextWidth(width)
            self._fit_height()

    def sizeHint(self) -> QSize:
        return QSize(400, self.height())

    def wheelEvent(self, event) -> None:
        event.ignore()  # let the transcript scroll

    # --- copy links ---------------------------------------------------------------------------
    def _on_anchor(self, url: QUrl) -> None:
        if url.scheme() == "copy":
            code = self._stream.code(int(url.path() or url.toString().split(":", 1)[1]))
            if code is not None:
                QGuiApplication.clipboard().setText(code)
                self.codeCopied.emit(code)
        elif url.scheme() in ("http", "https", "mailto"):
            from PySide6.QtGui import QDesktopServices

            QDesktopServices.openUrl(url)

    def code_count(self) -> int:
        return len(self._stream.codes)

    def copy_code(self, index: int) -> None:
        self._on_anchor(QUrl(f"copy:{index}"))


WARM_UP_MARKDOWN = """# Heading
## Part
### Section

Some **bold**, *italic*, `code`, a [link](https://example.com) and math $x^2 + \\alpha$.

$$\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$$

- item
1. item

| a | b |
|---|---|
| 1 | 2 |

> quote

```python
def f(x):
    return {"a": [1, 2.0, None]}
```

```javascript
const f = (x) => x * 2;
```

```bash
echo "$HOME" | grep -v x
```
"""


def warm_up(palette: Palette, *, background: bool = True) -> None:
    """Render and paint every kind of block once, off screen.

    The first heading, code block or math span otherwise pays one-time costs (Pygments lexer imports,
    font and glyph caches) in the middle of a streaming answer, as a visible stall. The pure-Python part
    (imports, Markdown, highlighting) runs on the thread pool; only the painting runs on the GUI thread.
    """
    if background:
        from ..operations import Operation
        from ..render import render_markdown

        # No parent: a failed warm-up costs only the first answer's stall, so it is logged, not shown.
        Operation(
            None,
            lambda _ctx: render_markdown(WARM_UP_MARKDOWN, palette),
            lambda _result: warm_up(palette, background=False),
            label="Warming up the renderer",
        ).run_in_background()
        return
    view = AnswerView(palette)
    view.resize(600, 400)
    view.set_markdown(WARM_UP_MARKDOWN)
    view.grab()
    view.deleteLater()
