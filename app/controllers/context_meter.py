"""The context meter's logic: tokens the next send would use of the loaded context, and the two ways out.

The figure is a cheap estimate on the GUI thread (``app.context_estimate``) while the user types and
attaches; a moment after the last change the engine counts the real prompt on its own thread
(``EngineClient.count_tokens``) and that count replaces the estimate (text typed since is added at the
estimate's ratio until the next count). When the next send would not leave room for an answer, the meter
warns and offers a new chat carrying a summary (a plain extract, ``app.chat_summary``) or dropping the
oldest turns from the prompt (they stay in the history).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from PySide6.QtCore import QObject, QTimer, Signal

from engine_mlx.conversation import Message, Role

from .. import context_estimate as estimate
from ..chat_summary import MAX_SUMMARY_CHARS, extract_summary, turns
from ..store import StoredMessage, StoreError
from .chat import build_conversation, generation_settings, to_engine_attachment

log = logging.getLogger(__name__)

COUNT_DELAY_MS = 350  # the engine counts once typing pauses this long
ANSWER_ROOM_FRACTION = (
    10  # a send should leave at least 1/10 of the context (or max tokens) for the answer
)


@dataclass(frozen=True)
class MeterReading:
    used: int  # tokens of the prompt the next send makes (history and the message being written)
    limit: int  # the loaded context; 0 = no model loaded
    exact: bool  # the engine's count (False: an estimate)
    answer_room: int  # tokens a send should leave free for the answer
    droppable: bool  # the prompt holds earlier turns that could be dropped or summarized
    trimmed: bool = (
        False  # the chat's oldest turns were dropped from the prompt (they stay in its history)
    )

    @property
    def fraction(self) -> float:
        return self.used / self.limit if self.limit else 0.0

    @property
    def overflow(self) -> bool:
        """The next send would not leave ``answer_room`` tokens of the context for the answer."""
        return bool(self.limit) and self.used + self.answer_room > self.limit


@dataclass(frozen=True)
class _Exact:
    version: int
    text: str
    tokens: int


class ContextMeterController(QObject):
    readingChanged = Signal(MeterReading)
    turnsDropped = Signal(int)  # how many turns left the prompt
    errorOccurred = Signal(str)

    def __init__(self, chat, attachments, engine, parent: QObject | None = None):
        super().__init__(parent)
        self.chat = chat
        self.attachments = attachments  # an AttachmentsController: its ``items`` are the draft's
        self.engine = engine
        self.limit = 0
        self.text = ""
        self.reading = MeterReading(0, 0, False, 0, False)
        self._history: list[StoredMessage] = []
        self._trimmed = False
        self._history_tokens = 0
        self._version = 0  # bumped whenever the history or the attachments change
        self._exact: _Exact | None = None
        self._request: tuple[int, int, str] | None = None  # request id, version, text
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(COUNT_DELAY_MS)
        self._timer.timeout.connect(self._count)
        engine.tokensCounted.connect(self._on_counted)

    # --- inputs ---------------------------------------------------------------------------------
    def set_limit(self, tokens: int) -> None:
        """The context the model was loaded with (0: none loaded)."""
        self.limit = max(0, int(tokens))
        self._changed(version=True)

    def set_draft(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self._changed()

    def attachments_changed(self, *_args) -> None:
        self._changed(version=True)

    def history_changed(self, *_args) -> None:
        """The chat was opened, an answer finished, turns were dropped: read the sent history again."""
        cid = self.chat.current_id
        self._history = self.chat.sent_messages(cid) if cid else []
        self._trimmed = bool(cid) and self.chat.store.context_from(cid) > 0
        settings = self.chat.settings()
        self._history_tokens = estimate.text_tokens(settings.system_prompt) + sum(
            estimate.message_tokens(m) for m in self._history
        )
        self._changed(version=True)

    # --- the figure -------------------------------------------------------------------------------
    def _draft(self) -> list[estimate.Sized]:
        return [
            estimate.Sized(p.stored, p.width, p.height, p.lines) for p in self.attachments.items
        ]

    def _changed(self, *, version: bool = False) -> None:
        if version:
            self._version += 1
        self._update()
        if self.limit:
            self._timer.start()

    def _estimated_total(self) -> int:
        return self._history_tokens + estimate.draft_tokens(self.text, self._draft())

    def _update(self) -> None:
        exact = self._exact
        if exact is not None and exact.version == self._version:
            used = exact.tokens + estimate.text_tokens(self.text) - estimate.text_tokens(exact.text)
            is_exact = self.text == exact.text
        else:
            used, is_exact = self._estimated_total(), False
        room = min(self.chat.settings().generation.max_tokens, self.limit // ANSWER_ROOM_FRACTION)
        self.reading = MeterReading(
            max(0, used), self.limit, is_exact, room, bool(self._history), self._trimmed
        )
        self.readingChanged.emit(self.reading)

    def _count(self) -> None:
        """Ask the engine for the real prompt size of history plus draft (answered on its thread)."""
        if not self.limit or self.chat.busy or not self.engine.running:
            return  # counted again when the answer finishes (history_changed); never after quitting
        cid = self.chat.current_id or ""
        settings = self.chat.settings()
        draft = Message(
            Role.USER,
            self.text.strip(),
            tuple(to_engine_attachment(p.stored) for p in self.attachments.items),
        )
        conversation = build_conversation(
            cid, settings, self._history, vision=self.chat.model_is_vision is not False
        ).with_message(draft)
        if self.chat.tools is not None:  # the chat's tools are part of its prompt
            conversation = replace(
                conversation, tools=self.chat.tools.offered_tools(self.chat.current_id)
            )
        request = self.engine.count_tokens(conversation, generation_settings(settings))
        self._request = (request, self._version, self.text)

    def _on_counted(self, request_id: int, tokens: int) -> None:
        if self._request is None or request_id != self._request[0]:
            return
        _, version, text = self._request
        self._request = None
        if version != self._version:
            return
        self._exact = _Exact(version, text, tokens)
        self._update()

    # --- the ways out -----------------------------------------------------------------------------
    def drop_oldest_turns(self) -> int:
        """Leave the oldest turns out of the prompt until the next send leaves room for an answer
        (they stay in the chat's history); returns how many turns were dropped."""
        cid = self.chat.current_id
        if self.chat.busy:
            self.errorOccurred.emit("Wait for the answer to finish, then drop the oldest turns.")
            return 0
        history_turns = turns(self._history)
        if not cid or not history_turns:
            self.errorOccurred.emit(
                "There are no earlier turns to drop: shorten this message or remove "
                "attachments to fit the context."
            )
            return 0
        reading = self.reading
        need = reading.used + reading.answer_room - reading.limit
        # Scale the per-turn estimates to the engine's count when there is one.
        scale = reading.used / max(1, self._estimated_total()) if reading.exact else 1.0
        dropped, freed = 0, 0
        while dropped < len(history_turns) and freed < need:
            freed += round(scale * sum(estimate.message_tokens(m) for m in history_turns[dropped]))
            dropped += 1
        dropped = max(dropped, 1)
        kept = [m for turn in history_turns[dropped:] for m in turn]
        first_kept = kept[0].id if kept else self._history[-1].id + 1
        try:
            self.chat.store.set_context_from(cid, first_kept)
        except StoreError as error:
            self.errorOccurred.emit(str(error))
            return 0
        self.history_changed()
        self.turnsDropped.emit(dropped)
        return dropped

    def new_chat_with_summary(self) -> str | None:
        """Start a new chat (opened, the draft kept) whose system prompt carries a summary of this one;
        returns its id."""
        cid = self.chat.current_id
        summary = self.chat.store.conversation(cid) if cid else None
        if summary is None:
            self.errorOccurred.emit("This chat has nothing to summarize yet.")
            return None
        settings = self.chat.store.settings(cid)
        # At most a quarter of the context, so the new chat starts with room to talk.
        room = int(self.limit * estimate.CHARS_PER_TOKEN / 4) if self.limit else MAX_SUMMARY_CHARS
        extract = extract_summary(
            summary.title, self.chat.store.messages(cid), min(MAX_SUMMARY_CHARS, room)
        )
        prompt = "\n\n".join(p for p in (settings.system_prompt.strip(), extract) if p)
        try:
            new_id = self.chat.store.create_conversation(
                f"{summary.title} (continued)", replace(settings, system_prompt=prompt)
            )
        except StoreError as error:
            self.errorOccurred.emit(str(error))
            return None
        self.chat.open(new_id)
        return new_id
