"""The chat flow without widgets: conversations, sending, streaming into the store, stop/regenerate/edit."""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from engine_mlx.conversation import (
    Conversation,
    ImageAttachment,
    Message,
    PdfAttachment,
    Role,
    TextAttachment,
    VideoAttachment,
)
from engine_mlx.events import FinishReason, Stats
from engine_mlx.settings import GenerationSettings
from engine_mlx.tools.loop import StepWritten, ToolCallFinished, ToolCallProposed

from ..operations import Operation
from ..sent_ranges import sent_range
from ..store import (
    AttachmentKind,
    ChatSettings,
    MessageState,
    SearchHit,
    Store,
    StoredAttachment,
    StoredMessage,
    StoredStats,
    StoreError,
    ThinkingMode,
    search_database,
)
from .attachments import earlier_media_refusal, text_only_refusal
from .tools import ToolsController, ToolTurn, answer_markdown, final_part, tool_steps

log = logging.getLogger(__name__)

LAST_CHAT_PREF = "last_chat"  # the chat on screen, reopened at the next start
SAVE_INTERVAL_MS = 500  # a streaming answer reaches the disk at least this often
# Longer messages are refused before anything is stored or rendered: 1 MB of text would freeze the
# window for seconds and still not fit the context. About 64k tokens at ~4 characters a token.
MAX_MESSAGE_CHARS = 256_000
NO_MODEL = "Load a model first: open the model picker (the button at the top)."
NO_SERVER = (
    "QwenDesk is not connected to its server: check the address and key in Settings ▸ Engine "
    "and press OK there to connect again."
)


def to_engine_attachment(att: StoredAttachment):
    if att.kind is AttachmentKind.IMAGE:
        return ImageAttachment(att.path)
    if att.kind is AttachmentKind.PDF:
        return PdfAttachment(att.path, att.first_page, att.last_page)
    if att.kind is AttachmentKind.TEXT:
        return TextAttachment(att.path, att.name)
    return VideoAttachment(att.path, att.fps, att.start_s, att.end_s)


def generation_settings(chat: ChatSettings) -> GenerationSettings:
    return replace(
        chat.generation,
        thinking=chat.thinking is not ThinkingMode.OFF,
        thinking_budget=chat.thinking_budget if chat.thinking is ThinkingMode.BUDGET else None,
    )


def build_conversation(
    cid: str, settings: ChatSettings, messages: list[StoredMessage], *, vision: bool = True
) -> Conversation:
    """The engine's view of a stored chat: system prompt first, failed/empty answers left out; the images
    tools returned go to a ``vision`` model again (a text-only one is told of them)."""
    out: list[Message] = []
    if settings.system_prompt.strip():
        out.append(Message(Role.SYSTEM, settings.system_prompt.strip()))
    for m in messages:
        if m.role == "assistant":
            if not m.text.strip() or m.state is MessageState.ERROR:
                continue
            # the steps in which it called tools before answering, as it wrote them
            out.extend(tool_steps(m, vision=vision))
            text, thinking = final_part(m)
            if text or thinking or not m.tool_calls:  # (stopped during a call: nothing after it)
                out.append(Message(Role.ASSISTANT, text, thinking=thinking))
        else:
            out.append(
                Message(Role.USER, m.text, tuple(to_engine_attachment(a) for a in m.attachments))
            )
    return Conversation(tuple(out), cid)


def continued_stats(before: StoredStats, after: StoredStats) -> StoredStats:
    """The whole answer's figures after a Continue: tokens and time summed over both runs, the rate over
    both, the prompt (and its prefill) and first-token time of the first; ``run_tokens`` stays the last
    run's (the limit's)."""
    generated = before.generated_tokens + after.generated_tokens
    decode_s = sum(s.generated_tokens / s.decode_tps for s in (before, after) if s.decode_tps)
    return StoredStats(
        prompt_tokens=before.prompt_tokens,
        reused_tokens=before.reused_tokens,
        prefilled_tokens=before.prefilled_tokens,
        prefill_tps=before.prefill_tps,
        generated_tokens=generated,
        thinking_tokens=before.thinking_tokens + after.thinking_tokens,
        answer_tokens=before.answer_tokens + after.answer_tokens,
        decode_tps=generated / decode_s if decode_s else 0.0,
        ttft_s=before.ttft_s,
        total_s=before.total_s + after.total_s,
        peak_memory_bytes=max(before.peak_memory_bytes, after.peak_memory_bytes),
        drafted_tokens=before.drafted_tokens + after.drafted_tokens,
        accepted_tokens=before.accepted_tokens + after.accepted_tokens,
        run_tokens=after.run_tokens,
    )


FINISHED_STATE = {
    FinishReason.STOP: MessageState.COMPLETE,
    FinishReason.LENGTH: MessageState.COMPLETE,
    FinishReason.CANCELLED: MessageState.STOPPED,
    FinishReason.ERROR: MessageState.ERROR,
}


def title_from(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line)
    return (line[:48] + "…") if len(line) > 48 else (line or "New chat")


class RefusalKind(Enum):
    NOT_NOW = "not now"  # busy, an attachment still preparing, no model loaded: a moment or a step fixes it
    MEDIA = "media"  # images, PDFs or video for a text-only model: the window offers Add vision
    TOO_LONG = "too long"


@dataclass(frozen=True)
class Refusal:
    """Why a message cannot be sent now: its kind, and one sentence for the user."""

    kind: RefusalKind
    message: str


@dataclass
class _Stream:
    request_id: int
    conversation_id: str
    message_id: int
    started: float = field(default_factory=time.monotonic)
    thinking: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    thinking_started: float | None = None
    thinking_s: float | None = None
    dirty: bool = False
    save_failed: bool = False
    final: dict = field(default_factory=dict)  # state and error, once finished
    stats: StoredStats | None = None
    before: StoredStats | None = None  # a continued answer's figures so far
    tool_turn: ToolTurn | None = None  # a turn through the tool loop

    @property
    def thinking_text(self) -> str:
        return "".join(self.thinking)

    @property
    def answer_text(self) -> str:
        return "".join(self.answer)


class ChatController(QObject):
    conversationsChanged = Signal()
    conversationOpened = Signal(str, list)  # id ("" = none), list[StoredMessage]
    messageAppended = Signal(StoredMessage)
    messagesRemoved = Signal(int)  # messages from this position on are gone
    # from this position on, these messages (another version) are shown
    versionShown = Signal(int, list)
    progress = Signal(int, int, int)  # message id, done, total
    thinkingDelta = Signal(int, str)
    answerStarted = Signal(int, float)  # message id, thinking seconds
    answerDelta = Signal(int, str)
    statsReady = Signal(int, StoredStats)  # message id, stats
    streamFinished = Signal(int, MessageState, str)  # message id, state, error
    busyChanged = Signal(bool)
    errorOccurred = Signal(str)
    # images, PDFs or video for a text-only model (the window offers Add vision)
    mediaRefused = Signal(str)
    deleted = Signal(str, str)  # id, title (for the undo bar)
    deletedMany = Signal(list)  # ids of chats deleted together (for one undo)
    searchFinished = Signal(str, list)  # query, list[SearchHit]

    def __init__(self, store: Store, engine, parent: QObject | None = None):
        super().__init__(parent)
        self.store = store
        self.engine = engine  # an EngineClient (generate/cancel/persist and its event signals)
        self.current_id: str | None = None
        self.model_loaded = False
        self.no_model_message = NO_MODEL  # why a message cannot go yet (the presenter words it)
        self.model_is_vision: bool | None = None  # None: no model loaded
        self.tools: ToolsController | None = (
            None  # turns of chats with tools run through it (tools_wiring)
        )
        self._stream: _Stream | None = None
        self._search_serial = 0
        self._unsaved: list[_Stream] = []  # finished answers the disk refused; retried until saved
        self._save_timer = QTimer(self)
        self._save_timer.setInterval(SAVE_INTERVAL_MS)
        self._save_timer.timeout.connect(self.flush)
        engine.progress.connect(self._on_progress)
        engine.thinkingDelta.connect(self._on_thinking)
        engine.answerDelta.connect(self._on_answer)
        engine.stats.connect(self._on_stats)
        engine.finished.connect(self._on_finished)
        engine.toolCallProposed.connect(self._on_tool_proposed)
        engine.toolCallFinished.connect(self._on_tool_finished)
        engine.toolStepWritten.connect(self._on_tool_step)
        engine.stepLimitReached.connect(self._on_step_limit)
        interrupted = store.mark_interrupted()
        if interrupted:
            log.info("%d answers were interrupted by the last exit", interrupted)

    # --- state --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._stream is not None

    def settings(self) -> ChatSettings:
        return self.store.settings(self.current_id) if self.current_id else self._draft_settings()

    def _draft_settings(self) -> ChatSettings:
        text = self.store.get_pref("default_chat_settings")
        return ChatSettings.from_json(text) if text else ChatSettings()

    def set_settings(self, settings: ChatSettings) -> None:
        try:
            if self.current_id:
                self.store.set_settings(self.current_id, settings)
            else:
                self.store.set_pref("default_chat_settings", settings.to_json())
        except StoreError as error:
            self.errorOccurred.emit(str(error))

    # --- conversations ------------------------------------------------------------------------
    def conversations(self):
        return self.store.conversations()

    def new_conversation(self) -> None:
        """An empty draft: it becomes a stored conversation when the first message is sent."""
        self.current_id = None
        self._remember_shown()
        self.conversationOpened.emit("", [])

    def reopen_last(self) -> None:
        """At start-up: the chat that was on screen at the last quit (a new draft if there was none)."""
        cid = self.store.get_pref(LAST_CHAT_PREF)
        if cid and self.store.conversation(cid) is not None:
            self.open(cid)
        else:
            self.new_conversation()

    def _remember_shown(self) -> None:
        try:
            self.store.set_pref(LAST_CHAT_PREF, self.current_id)
        except (
            StoreError
        ) as error:  # not worth more than a log line: only the next start-up misses it
            log.warning("could not remember the open chat: %s", error)

    def open(self, cid: str) -> None:
        if self.store.conversation(cid) is None:
            self.errorOccurred.emit("That conversation no longer exists.")
            return
        if self._stream is not None and self._stream.conversation_id == cid and self._stream.dirty:
            self._save(self._stream)  # its answer so far is shown from the database
        self.current_id = cid
        self._remember_shown()
        self.conversationOpened.emit(cid, self.store.messages(cid))

    def rename(self, cid: str, title: str) -> None:
        title = title.strip()
        if not title:
            return
        try:
            self.store.rename(cid, title)
        except StoreError as error:
            self.errorOccurred.emit(str(error))
        self.conversationsChanged.emit()

    def delete(self, cid: str) -> None:
        summary = self.store.conversation(cid)
        if summary is None:
            return
        if self._stream and self._stream.conversation_id == cid:
            self.stop()
        try:
            self.store.delete(cid)
        except StoreError as error:
            self.errorOccurred.emit(str(error))
            return
        if self.current_id == cid:
            self.new_conversation()
        self.conversationsChanged.emit()
        self.deleted.emit(cid, summary.title)

    def delete_many(self, cids: list[str]) -> None:
        """Hide several chats at once: one ``deletedMany`` (one undo brings them all back)."""
        summaries = [s for s in (self.store.conversation(cid) for cid in cids) if s is not None]
        if not summaries:
            return
        if self._stream and self._stream.conversation_id in {s.id for s in summaries}:
            self.stop()
        deleted: list[str] = []
        try:
            for summary in summaries:
                self.store.delete(summary.id)
                deleted.append(summary.id)
        except StoreError as error:
            self.errorOccurred.emit(str(error))
        if self.current_id in deleted:
            self.new_conversation()
        self.conversationsChanged.emit()
        if deleted:
            self.deletedMany.emit(deleted)

    def undo_delete_many(self, cids: list[str]) -> None:
        try:
            for cid in cids:
                self.store.undelete(cid)
        except StoreError as error:
            self.errorOccurred.emit(str(error))
        self.conversationsChanged.emit()

    def undo_delete(self, cid: str) -> None:
        try:
            self.store.undelete(cid)
        except StoreError as error:
            self.errorOccurred.emit(str(error))
            return
        self.conversationsChanged.emit()
        self.open(cid)

    def search(self, query: str) -> None:
        """Search all chats on a pool thread (a one-letter query over 100k messages takes half a second);
        ``searchFinished`` brings the hits of the newest query only."""
        query = query.strip()
        self._search_serial += 1
        serial, database = self._search_serial, self.store.database
        if not query:
            self.searchFinished.emit(query, [])
            return

        def done(hits: list[SearchHit]) -> None:
            if serial == self._search_serial:
                self.searchFinished.emit(query, hits)

        def failed(error: Exception) -> None:
            log.warning("search for %r failed: %s", query, error)
            if serial == self._search_serial:
                self.searchFinished.emit(query, [])

        Operation(
            self, lambda _ctx: search_database(database, query), done, label="Searching the chats"
        ).failure(failed).run_in_background()

    def sent_messages(self, cid: str) -> list[StoredMessage]:
        """The chat's messages the model is sent: the oldest turns dropped from its prompt are left out."""
        first = self.store.context_from(cid)
        return [m for m in self.store.messages(cid) if m.id >= first]

    # --- sending ------------------------------------------------------------------------------
    def refusal(
        self,
        text: str,
        attachments: tuple[StoredAttachment, ...] = (),
        *,
        preparing: bool = False,
        model_is_vision: bool | None = None,
    ) -> Refusal | None:
        """Why this message cannot be sent now; None when it can. Cheap: it never reads or tokenizes
        anything, so a huge paste is refused at once."""
        if self.busy:
            return Refusal(
                RefusalKind.NOT_NOW,
                "Wait for the current answer to finish, or press Esc to stop it.",
            )
        if preparing:
            return Refusal(
                RefusalKind.NOT_NOW, "Wait a moment: an attachment is still being prepared."
            )
        if not self.model_loaded:
            return Refusal(RefusalKind.NOT_NOW, self.no_model_message)
        if model_is_vision is False and any(a.kind is not AttachmentKind.TEXT for a in attachments):
            return Refusal(RefusalKind.MEDIA, text_only_refusal())
        if model_is_vision is False and self.current_id and self.store.has_media(self.current_id):
            # (as _refused_for_earlier_media, for Regenerate and Edit)
            return Refusal(RefusalKind.MEDIA, earlier_media_refusal())
        if len(text) > MAX_MESSAGE_CHARS:
            return Refusal(
                RefusalKind.TOO_LONG,
                f"This message is {len(text):,} characters long; one message can hold at most "
                f"{MAX_MESSAGE_CHARS:,} (about {MAX_MESSAGE_CHARS // 4:,} tokens). Shorten it or split "
                "it across several messages; your text stays in the box.",
            )
        return None

    def send(
        self,
        text: str,
        attachments: tuple[StoredAttachment, ...] = (),
        *,
        preparing: bool = False,
        model_is_vision: bool | None = None,
    ) -> bool:
        """Store the user's message and start the answer; False (and ``errorOccurred``) when refused."""
        text = text.strip()
        if not text and not attachments:
            return False
        refusal = self.refusal(
            text, attachments, preparing=preparing, model_is_vision=model_is_vision
        )
        if refusal is not None:
            # media for a text-only model: the window offers to add vision to it
            (self.mediaRefused if refusal.kind is RefusalKind.MEDIA else self.errorOccurred).emit(
                refusal.message
            )
            return False
        try:
            if self.current_id is None:
                settings = self._draft_settings()
                self.current_id = self.store.create_conversation(
                    title_from(text or attachments[0].name), settings
                )
                self._remember_shown()
                self.conversationOpened.emit(self.current_id, [])
            message = self.store.add_message(self.current_id, "user", text, attachments=attachments)
        except StoreError as error:
            self.errorOccurred.emit(str(error))
            return False
        self.conversationsChanged.emit()
        self.messageAppended.emit(message)
        self._start_generation()
        return True

    def regenerate(self) -> None:
        """Answer the last message again; the earlier answer stays as a version (``< 1/2 >``)."""
        if self.busy or not self.current_id:
            return
        messages = self.store.messages(self.current_id)
        if not messages:
            return
        if self._refused_for_earlier_media():
            return
        last = messages[-1]
        self._start_generation(replacing=last if last.role == "assistant" else None)

    def continue_answer(self, message_id: int | None = None) -> None:
        """Carry on an answer from where the token limit (or Stop) cut it: the same message grows, its
        thinking included; the model's state before that answer is reused. ``message_id`` is the answer
        the user chose (None: the last one); only the last answer of its chat can be carried on, since
        the turns after an earlier one were written without it."""
        if self.busy or not self.current_id:
            return
        cid = self.current_id
        messages = self.sent_messages(cid)
        if not messages or messages[-1].role != "assistant":
            return
        last = messages[-1]
        if message_id is not None and message_id != last.id:
            self.errorOccurred.emit(
                "Only the last answer of a chat can be continued: the messages after "
                "this one were written without the rest of it. Regenerate the last "
                "answer instead, or copy this one into a new message."
            )
            return
        if last.state not in (
            MessageState.COMPLETE,
            MessageState.STOPPED,
            MessageState.INTERRUPTED,
        ):
            return
        if not (last.text or last.thinking):
            self.regenerate()
            return
        try:
            self.store.update_message(last.id, state=MessageState.STREAMING, error="")
        except StoreError as error:
            self.errorOccurred.emit(str(error))
            return
        settings = self.store.settings(cid)
        # (the answer's tool steps, if it called tools, come before its final step, as in build_conversation)
        vision = self.model_is_vision is not False
        earlier = build_conversation(cid, settings, messages[:-1], vision=vision)
        final_text, final_thinking = final_part(last)
        conversation = replace(
            replace(
                earlier, messages=earlier.messages + tuple(tool_steps(last, vision=vision))
            ).with_message(Message(Role.ASSISTANT, final_text, thinking=final_thinking)),
            continue_last=True,
        )
        # A chat with tools carries the turn on through the tool loop, as it was written: the same tools
        # in the prompt (so it resumes), and a call the continuation writes asks, runs and goes on.
        steps = max((c.step for c in last.tool_calls), default=-1) + 1
        turn = (
            self.tools.turn_for(cid, conversation, generation_settings(settings), first_step=steps)
            if self.tools
            else None
        )
        request = (
            self.engine.run_turn(turn)
            if turn is not None
            else self.engine.generate(conversation, generation_settings(settings))
        )
        shown = last.text
        tool_turn = None
        if turn is not None:
            tool_turn = ToolTurn(self.tools, last.id)
            # markup it had begun (cut by the limit) is held back until the continuation shows what it is
            shown = last.text[: len(last.text) - len(final_text)] + tool_turn.resume(final_text)
        stream = _Stream(
            request,
            cid,
            last.id,
            thinking=[last.thinking] if last.thinking else [],
            answer=[shown] if shown else [],
            thinking_s=last.thinking_s if last.text else None,
            before=last.stats,
            tool_turn=tool_turn,
        )
        if (
            last.thinking and not last.text
        ):  # still thinking: its clock runs on from where it stopped
            stream.thinking_started = time.monotonic() - (last.thinking_s or 0.0)
        self.messagesRemoved.emit(last.position)
        self._begin(
            stream, replace(last, text=shown, state=MessageState.STREAMING, error="", stats=None)
        )

    def edit_and_resend(self, message_id: int, new_text: str) -> None:
        """Send a user message again with new text, as a new version: the original, and the answer and
        follow-ups it had, stay reachable with ``show_version``."""
        if self.busy or not self.current_id:
            return
        original = self.store.message(message_id)
        if original is None or original.role != "user":
            return
        new_text = new_text.strip()
        if not new_text and not original.attachments:
            return
        if self._refused_for_earlier_media():
            return
        try:
            message = self.store.add_version(
                original.id, new_text, attachments=original.attachments
            )
        except StoreError as error:
            self.errorOccurred.emit(str(error))
            return
        self.messagesRemoved.emit(original.position)
        self.messageAppended.emit(message)
        self._start_generation()

    def _refused_for_earlier_media(self) -> bool:
        """A text-only model cannot answer a chat holding images, PDFs or video: say so (the window offers
        Add vision) instead of sending it to fail."""
        if self.model_is_vision is False and self.store.has_media(self.current_id):
            self.mediaRefused.emit(earlier_media_refusal())
            return True
        return False

    def show_version(self, message_id: int, step: int) -> None:
        """Show the version ``step`` away (-1 older, +1 newer) of a message, with what followed it."""
        if self.busy or not self.current_id:
            return
        versions = self.store.versions(message_id)
        if message_id not in versions:
            return
        index = versions.index(message_id) + step
        if not 0 <= index < len(versions):
            return
        try:
            position = self.store.choose_version(versions[index])
        except StoreError as error:
            self.errorOccurred.emit(str(error))
            return
        shown = [m for m in self.store.messages(self.current_id) if m.position >= position]
        self.versionShown.emit(position, shown)

    def stop(self) -> None:
        if self._stream is not None:
            self.engine.cancel()

    def _start_generation(self, replacing: StoredMessage | None = None) -> None:
        """Answer the chat's last message; a new version of the answer ``replacing`` when given."""
        cid = self.current_id
        settings = self.store.settings(cid)
        history = self.sent_messages(cid)
        try:
            if replacing is not None and not (replacing.text.strip() or replacing.thinking.strip()):
                # an empty answer (a failure) is not worth keeping as a version
                self.store.delete_messages_from(cid, replacing.position)
                self.messagesRemoved.emit(replacing.position)
                history = [m for m in history if m.position < replacing.position]
                replacing = None
            if replacing is None:
                placeholder = self.store.add_message(
                    cid, "assistant", "", state=MessageState.STREAMING
                )
            else:
                history = [m for m in history if m.position < replacing.position]
                placeholder = self.store.add_version(replacing.id, "", state=MessageState.STREAMING)
                self.messagesRemoved.emit(replacing.position)
        except StoreError as error:
            self.errorOccurred.emit(str(error))
            return
        if (
            not history
        ):  # every turn dropped from the prompt: the question being answered is still sent
            history = [m for m in self.store.messages(cid) if m.position < placeholder.position][
                -1:
            ]
        conversation = build_conversation(
            cid, settings, history, vision=self.model_is_vision is not False
        )
        turn = (
            self.tools.turn_for(cid, conversation, generation_settings(settings))
            if self.tools
            else None
        )
        if turn is not None:
            stream = _Stream(self.engine.run_turn(turn), cid, placeholder.id)
            stream.tool_turn = ToolTurn(self.tools, placeholder.id)
        else:
            stream = _Stream(
                self.engine.generate(conversation, generation_settings(settings)),
                cid,
                placeholder.id,
            )
        self._begin(stream, placeholder)

    def _begin(self, stream: _Stream, message: StoredMessage) -> None:
        """``stream`` answers into ``message`` (shown streaming): saved on the timer until it finishes."""
        self._stream = stream
        self.messageAppended.emit(message)
        self._save_timer.start()
        self.busyChanged.emit(True)

    # --- engine events ------------------------------------------------------------------------
    def _current(self, request_id: int) -> _Stream | None:
        """The streaming answer, if ``request_id`` is its request (events of an older one are ignored)."""
        stream = self._stream
        return stream if stream is not None and request_id == stream.request_id else None

    def _on_progress(self, request_id: int, done: int, total: int) -> None:
        if (stream := self._current(request_id)) is not None:
            self.progress.emit(stream.message_id, done, total)

    def _on_thinking(self, request_id: int, text: str) -> None:
        if (stream := self._current(request_id)) is None:
            return
        if stream.thinking_started is None:
            stream.thinking_started = time.monotonic()
        stream.thinking.append(text)
        stream.dirty = True
        self.thinkingDelta.emit(stream.message_id, text)

    def _on_answer(self, request_id: int, text: str) -> None:
        if (stream := self._current(request_id)) is None:
            return
        if stream.tool_turn is None:
            self._append_answer(stream, text)
        elif shown := stream.tool_turn.answer(
            text
        ):  # the call markup is hidden: its blocks show the calls
            self._append_answer(stream, shown)

    def _append_answer(self, stream: _Stream, text: str) -> None:
        if not stream.answer:
            if stream.thinking_started is not None:
                stream.thinking_s = time.monotonic() - stream.thinking_started
            self.answerStarted.emit(stream.message_id, stream.thinking_s or 0.0)
        stream.answer.append(text)
        stream.dirty = True
        self.answerDelta.emit(stream.message_id, text)

    def _on_stats(self, request_id: int, event: Stats) -> None:
        if (stream := self._current(request_id)) is None:
            return
        if stream.tool_turn is not None and (
            rest := stream.tool_turn.step_ended()
        ):  # each step ends with Stats
            self._append_answer(stream, rest)
        stats = StoredStats.of(event)
        if stream.before is not None:
            stats = continued_stats(stream.before, stats)
        stream.stats = stats
        self._save(stream)
        self.statsReady.emit(stream.message_id, stats)

    def _on_finished(self, request_id: int, reason: FinishReason, error: str) -> None:
        if (stream := self._current(request_id)) is None:
            return
        if stream.tool_turn is not None and (
            unrun := stream.tool_turn.unrun()
        ):  # markup that ran no call stays
            self._append_answer(stream, unrun)
        self._finish(FINISHED_STATE[reason], error)

    # A turn through the tool loop (``ToolsController.turn_for``): its calls go to its ToolTurn.
    def _on_tool_proposed(self, request_id: int, proposed: ToolCallProposed) -> None:
        if (stream := self._current(request_id)) is not None and stream.tool_turn is not None:
            stream.tool_turn.proposed(proposed)

    def _on_tool_finished(self, request_id: int, done: ToolCallFinished) -> None:
        if (stream := self._current(request_id)) is not None and stream.tool_turn is not None:
            stream.tool_turn.call_finished(done)

    def _on_tool_step(self, request_id: int, written: StepWritten) -> None:
        if (stream := self._current(request_id)) is not None and stream.tool_turn is not None:
            stream.tool_turn.step_written(written)

    def _on_step_limit(self, request_id: int, steps: int) -> None:
        if (stream := self._current(request_id)) is not None and stream.tool_turn is not None:
            stream.tool_turn.step_limit(steps)

    def _finish(self, state: MessageState, error: str) -> None:
        stream = self._stream
        if stream.thinking_started is not None and stream.thinking_s is None:
            stream.thinking_s = time.monotonic() - stream.thinking_started
        stream.final = {"state": state, "error": error}
        self._save(stream)
        self._stream = None
        if stream.dirty:
            self._unsaved.append(stream)  # the disk refused: keep retrying on the timer and at quit
        else:
            self._save_timer.stop()
        self.streamFinished.emit(stream.message_id, state, error)
        self.busyChanged.emit(False)
        self.conversationsChanged.emit()
        if state is not MessageState.ERROR:
            self.engine.persist(stream.conversation_id)
        if error:
            self.errorOccurred.emit(error)

    @property
    def unsaved(self) -> bool:
        """Some answer text or final state is only in memory (the last save failed, e.g. a full disk)."""
        return bool(self._unsaved) or (self._stream is not None and self._stream.dirty)

    def flush(self) -> bool:
        """Write the streaming answer so far, and retry finished answers whose save failed (runs on a
        timer; a crash loses at most one interval). Returns True when everything is on disk."""
        if self._stream is not None and self._stream.dirty:
            self._save(self._stream)
        for stream in list(self._unsaved):
            self._save(stream)
            if not stream.dirty:
                self._unsaved.remove(stream)
                log.info("saved answer %d after an earlier failure", stream.message_id)
        if not self._unsaved and self._stream is None:
            self._save_timer.stop()
        return not self.unsaved

    def _save(self, stream: _Stream) -> None:
        stream.dirty = True
        try:
            self.store.update_message(
                stream.message_id,
                text=stream.answer_text,
                thinking=stream.thinking_text,
                thinking_s=stream.thinking_s,
                stats=stream.stats,
                **stream.final,
            )
            if stream.final:
                self.store.touch(stream.conversation_id)
        except StoreError as error:
            # Keep everything in memory and retry on the next tick; say so once.
            if not stream.save_failed:
                self.errorOccurred.emit(f"{error} The answer is kept in the window meanwhile.")
            stream.save_failed = True
            return
        stream.dirty = False
        stream.save_failed = False

    # --- export -------------------------------------------------------------------------------
    def export_markdown(self, cid: str, destination: Path, include_thinking: bool = False) -> Path:
        """Write the chat as Markdown; attachments are copied into ``<name>_files/`` beside it."""
        summary = self.store.conversation(cid)
        if summary is None:
            raise StoreError("That conversation no longer exists.")
        destination = Path(destination)
        files_dir = destination.with_name(destination.stem + "_files")
        settings = self.store.settings(cid)
        lines = [f"# {summary.title}", ""]
        if settings.system_prompt.strip():
            lines += [
                "> **System prompt:** " + settings.system_prompt.strip().replace("\n", "\n> "),
                "",
            ]
        try:
            for m in self.store.messages(cid):
                lines += [f"## {'You' if m.role == 'user' else 'Qwen'}", ""]
                for att in m.attachments:
                    files_dir.mkdir(parents=True, exist_ok=True)
                    target = files_dir / _unique_name(files_dir, att.name)
                    if att.path.exists():
                        shutil.copyfile(att.path, target)
                    rel = f"{files_dir.name}/{target.name}"
                    # the pages or the time range that was sent, not the whole file
                    part = sent_range(att)
                    lines.append(
                        f"![{att.name}]({rel})"
                        if att.kind is AttachmentKind.IMAGE
                        else f"[{att.name}]({rel})" + (f" ({part})" if part else "")
                    )
                    lines.append("")
                # its thinking (when asked) and text, with the tool steps' in order
                lines += answer_markdown(m, files_dir, include_thinking)
                if m.state in (MessageState.INTERRUPTED, MessageState.STOPPED):
                    lines += [f"*({m.state.value})*", ""]
            destination.write_text("\n".join(lines), encoding="utf-8")
        except OSError as error:
            why = "the disk is full" if error.errno == 28 else (error.strerror or str(error))
            raise StoreError(f"Could not export to {destination}: {why}.") from error
        return destination


def _unique_name(folder: Path, name: str) -> str:
    candidate, stem, suffix, n = name, Path(name).stem, Path(name).suffix, 1
    while (folder / candidate).exists():
        n += 1
        candidate = f"{stem}-{n}{suffix}"
    return candidate
