"""What part of an attachment went to the model, in words: a PDF's pages, a video's time range and rate
(for the export and the window that opens what was sent)."""

from __future__ import annotations

from .store import AttachmentKind, StoredAttachment


def sent_pages(att: StoredAttachment) -> tuple[int, int]:
    """The PDF pages that went to the model (first, last)."""
    return att.first_page, att.last_page or att.page_count or att.first_page


def sent_range(att: StoredAttachment) -> str:
    """ "pages 2–3 of 4", "0.0–3.0 s at 2 fps"; "" for an image or a text file (sent whole)."""
    if att.kind is AttachmentKind.PDF:
        first, last = sent_pages(att)
        pages = f"page {first}" if first == last else f"pages {first}–{last}"
        return pages + (f" of {att.page_count}" if att.page_count else "")
    if att.kind is AttachmentKind.VIDEO:
        end = att.end_s if att.end_s is not None else att.duration_s or 0.0
        return f"{att.start_s:.1f}–{end:.1f} s at {att.fps:g} fps"
    return ""
