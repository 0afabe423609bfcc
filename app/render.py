"""Markdown → HTML blocks for the transcript, built for streaming (pure: no Qt).

``StreamingMarkdown`` splits a growing answer into *finished* blocks, rendered exactly once, and the
*open tail*, re-rendered on each (coalesced) update. A block ends at a blank line outside a code fence or
at a closing fence; a long open code fence is finished in chunks of lines, so the tail stays short and one
update costs O(new text), not O(whole answer). The HTML targets QTextDocument's subset of HTML/CSS.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.util import ClassNotFound

from .mathtext import tex_to_html

FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")
CODE_CHUNK_LINES = 40  # an open code fence is finished in chunks of this many lines
# Code spans are matched first and kept verbatim so `$x$` inside code is not turned into math.
MATH = re.compile(
    r"(?P<code>(?P<ticks>`+).+?(?P=ticks))"
    r"|\$\$(?P<d1>.+?)\$\$"
    r"|\\\[(?P<d2>.+?)\\\]"
    r"|\\\((?P<i1>.+?)\\\)"
    r"|(?<![\\$\w])\$(?P<i2>[^\s$](?:[^$\n]*?[^\s$\\])?)\$(?![\d$])",
    re.DOTALL,
)


@dataclass(frozen=True)
class Palette:
    """Colours the HTML uses; the view passes the ones of the current light/dark theme."""

    dark: bool = False
    code_bg: str = "#f4f5f7"
    code_border: str = "#dfe2e6"
    muted: str = "#6b7280"
    link: str = "#2563eb"

    @property
    def pygments_style(self) -> str:
        return "github-dark" if self.dark else "friendly"


LIGHT = Palette()
DARK = Palette(dark=True, code_bg="#1f2329", code_border="#343a42", muted="#9aa3ad", link="#6ea8fe")


@dataclass(frozen=True)
class Block:
    """Finished HTML for a piece of the answer, rendered once."""

    html: str


class Renderer:
    """Renders one Markdown block (or a chunk of a code fence) to HTML; registers code for copy links."""

    def __init__(self, palette: Palette = LIGHT):
        self.palette = palette
        self._formatter = HtmlFormatter(nowrap=True, noclasses=True, style=palette.pygments_style)
        self._md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
        self._md.enable(["table", "strikethrough"])

        # markdown-it binds rules to its own renderer: forward to this object.
        def fence_rule(_renderer, tokens, idx, options, env) -> str:
            return self._render_fence_token(tokens, idx)

        self._md.add_render_rule("fence", fence_rule)
        self._md.add_render_rule("code_block", fence_rule)
        self._md.add_render_rule("image", _image_rule)
        self._codes: list[str] | None = None

    # --- code ---------------------------------------------------------------------------------
    def highlight(self, code: str, language: str) -> str:
        try:
            lexer = (
                get_lexer_by_name(language, stripnl=False) if language else TextLexer(stripnl=False)
            )
        except ClassNotFound:
            lexer = TextLexer(stripnl=False)
        out = highlight(code, lexer, self._formatter)
        return out[:-1] if out.endswith("\n") and not code.endswith("\n") else out

    def code_html(
        self,
        code: str,
        language: str,
        copy_id: int | None,
        *,
        header: bool = True,
        footer: bool = True,
    ) -> str:
        p = self.palette
        body = self.highlight(code.rstrip("\n") if footer else code.removesuffix("\n"), language)
        head = ""
        if header:
            label = html.escape(language or "code")
            link = (
                f' &nbsp; <a href="copy:{copy_id}" style="color:{p.link}; text-decoration:none">Copy</a>'
                if copy_id is not None
                else ""
            )
            head = (
                f'<tr><td style="padding:4px 10px 0 10px"><span style="color:{p.muted}; font-size:small">'
                f"{label}</span>{link}</td></tr>"
            )
        top = "8px" if header else "0px"
        bottom = "8px" if footer else "0px"
        return (
            f'<table width="100%" cellspacing="0" cellpadding="0" bgcolor="{p.code_bg}" '
            f'style="margin-top:{top}; margin-bottom:{bottom}; border-color:{p.code_border}">{head}'
            f'<tr><td style="padding:2px 10px 6px 10px"><pre style="margin:0; white-space:pre-wrap">{body}</pre>'
            f"</td></tr></table>"
        )

    def _render_fence_token(self, tokens, idx) -> str:
        token = tokens[idx]
        language = token.info.strip().split(" ")[0] if token.info else ""
        copy_id = None
        if self._codes is not None:
            copy_id = len(self._codes)
            self._codes.append(token.content)
        return self.code_html(token.content, language, copy_id)

    # --- markdown -----------------------------------------------------------------------------
    def markdown(self, text: str, codes: list[str] | None = None) -> str:
        """HTML for Markdown ``text``; code blocks inside append their text to ``codes`` (for copy links)."""
        maths: list[str] = []

        def stash(match: re.Match) -> str:
            if match.group("code"):
                return match.group(0)
            for key in ("d1", "d2"):
                if match.group(key) is not None:
                    maths.append(
                        f'<p align="center"><span style="font-family:serif">'
                        f"{tex_to_html(match.group(key))}</span></p>"
                    )
                    return f"\n\nQDMATH{len(maths) - 1}X\n\n"
            tex = match.group("i1") if match.group("i1") is not None else match.group("i2")
            maths.append(f'<span style="font-family:serif">{tex_to_html(tex)}</span>')
            return f"QDMATH{len(maths) - 1}X"

        source = MATH.sub(stash, text) if ("$" in text or "\\" in text) else text
        self._codes = codes
        try:
            out = self._md.render(source)
        finally:
            self._codes = None
        if maths:
            out = re.sub(r"<p>QDMATH(\d+)X</p>", lambda m: maths[int(m.group(1))], out)
            out = re.sub(r"QDMATH(\d+)X", lambda m: maths[int(m.group(1))], out)
        return out


def _image_rule(_renderer, tokens, idx, _options, _env) -> str:
    """Model output never shows images: a path or URL in ``![alt](src)`` could reveal any local file (or
    fetch one). The alt text and the address are shown as plain text instead."""
    token = tokens[idx]
    alt = "".join(child.content for child in token.children or ()) or "image"
    src = str(token.attrGet("src") or "")
    return f"[{html.escape(alt)}: {html.escape(src)}]" if src else f"[{html.escape(alt)}]"


class StreamingMarkdown:
    """Feed text as it streams; take finished blocks; re-render only ``tail_html()``.

    ``codes`` holds every finished code block's text in order; copy links are ``copy:<index>``.
    Codes inside the open tail get the following indices until they are finished.
    """

    def __init__(self, renderer: Renderer):
        self.renderer = renderer
        self.text = ""
        self.codes: list[str] = []
        self._tail_codes: list[str] = []
        self._stable = 0  # text[:_stable] is rendered into finished blocks
        self._scan = 0  # start of the first line not yet classified
        self._fence: str | None = None  # the open fence's marker (``` or ~~~...), if any
        self._fence_lang = ""
        self._fence_id: int | None = None
        self._fence_chunks = 0
        self._fence_lines = 0
        self._fence_body = 0
        self._fence_code_origin = 0
        self._source_len: int | None = None

    def feed(self, delta: str) -> list[Block]:
        """Append ``delta``; returns the blocks that became finished (render each once, in order)."""
        self.text += delta
        blocks: list[Block] = []
        while True:
            newline = self.text.find("\n", self._scan)
            if newline < 0:
                break
            start, end = self._scan, newline + 1
            line = self.text[start:newline]
            self._scan = end
            if self._fence is not None:
                stripped = line.strip()
                if (
                    stripped.startswith(self._fence[0])
                    and set(stripped) == {self._fence[0]}
                    and len(stripped) >= len(self._fence)
                ):
                    blocks.append(self._finish_fence(start, end, closed=True))
                    continue
                self._fence_lines += 1
                if self._fence_lines >= CODE_CHUNK_LINES:
                    blocks.append(self._fence_chunk(end))
                continue
            match = FENCE_OPEN.match(line)
            if match:
                if self.text[self._stable : start].strip():
                    blocks.append(self._markdown_block(start))
                self._stable = start
                self._fence = match.group(1)
                self._fence_lang = match.group(2)
                self._fence_id = len(self.codes)
                self.codes.append("")
                self._fence_chunks = 0
                self._fence_lines = 0
                self._fence_body = end
                self._fence_code_origin = end
                continue
            if not line.strip():
                if self.text[self._stable : start].strip():
                    blocks.append(self._markdown_block(end))
                else:
                    self._stable = end
        return blocks

    def finish(self) -> list[Block]:
        """The answer is complete: everything left becomes finished blocks."""
        self._source_len = len(self.text)
        blocks = self.feed("\n") if not self.text.endswith("\n") and self.text else []
        if self._fence is not None:
            blocks.append(self._finish_fence(len(self.text), len(self.text), closed=False))
        elif self.text[self._stable :].strip():
            blocks.append(self._markdown_block(len(self.text)))
        self._tail_codes = []
        return blocks

    def tail_html(self) -> str:
        """HTML for the unfinished part: cheap, since it is at most one block or one code chunk."""
        self._tail_codes = []
        if self._fence is not None:
            code = self.text[self._fence_body :]
            self.codes[self._fence_id] = self.text[self._fence_code_origin :]
            return self.renderer.code_html(
                code, self._fence_lang, self._fence_id, header=self._fence_chunks == 0, footer=True
            )
        tail = self.text[self._stable :]
        if not tail.strip():
            return ""
        codes = list(self.codes)
        out = self.renderer.markdown(tail, codes)
        self._tail_codes = codes[len(self.codes) :]
        return out

    @property
    def source(self) -> str:
        """The Markdown as given (``finish`` may add a closing newline to ``text``)."""
        return self.text[: self._source_len] if self._source_len is not None else self.text

    def code(self, index: int) -> str | None:
        all_codes = self.codes + self._tail_codes
        return all_codes[index] if 0 <= index < len(all_codes) else None

    # --- internals ----------------------------------------------------------------------------
    def _markdown_block(self, end: int) -> Block:
        source = self.text[self._stable : end]
        self._stable = end
        return Block(self.renderer.markdown(source, self.codes))

    def _fence_chunk(self, end: int) -> Block:
        code = self.text[self._fence_body : end]
        html_ = self.renderer.code_html(
            code, self._fence_lang, self._fence_id, header=self._fence_chunks == 0, footer=False
        )
        self.codes[self._fence_id] = self.text[self._fence_code_origin : end]
        self._fence_chunks += 1
        self._fence_lines = 0
        self._fence_body = end
        self._stable = end
        return Block(html_)

    def _finish_fence(self, close_start: int, end: int, *, closed: bool) -> Block:
        code = self.text[self._fence_body : close_start]
        self.codes[self._fence_id] = self.text[self._fence_code_origin : close_start].removesuffix(
            "\n"
        )
        html_ = self.renderer.code_html(
            code, self._fence_lang, self._fence_id, header=self._fence_chunks == 0, footer=True
        )
        self._fence = None
        self._stable = end
        return Block(html_)


def render_markdown(text: str, palette: Palette = LIGHT) -> tuple[str, list[str]]:
    """The whole of a finished Markdown text as HTML, plus its code blocks (for copy links)."""
    stream = StreamingMarkdown(Renderer(palette))
    blocks = stream.feed(text) + stream.finish()
    return "".join(b.html for b in blocks), stream.codes
