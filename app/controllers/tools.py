"""The app's tools (issue 17): the MCP host for the app's life, its settings, consent, and chat turns with tools.

The ToolHost runs its servers on its own thread; starting and reconfiguring them runs on the thread
pool, and a turn with tools runs through ``ToolLoop`` on the engine's job thread, so the GUI never
waits on a server. The consent card's answer reaches the waiting loop through ``ConsentGate``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from engine_mlx.cancel import CancelToken
from engine_mlx.conversation import Conversation, Message, Tool, ToolCall
from engine_mlx.data_dir import MCP_CONFIG, MCP_CONSENT
from engine_mlx.settings import GenerationSettings
from engine_mlx.tool_calls import START
from engine_mlx.tools.config import (
    BUILTIN_FILES,
    ServerConfig,
    ToolConfigError,
    load_config,
    save_config,
)
from engine_mlx.tools.consent import ConsentTable, load_consent, save_consent
from engine_mlx.tools.host import ServerStatus, ToolHost
from engine_mlx.tools.loop import (
    DEFAULT_MAX_STEPS,
    Approval,
    ConsentAnswer,
    LoopEvent,
    Outcome,
    StepWritten,
    ToolCallFinished,
    ToolCallProposed,
    ToolLoop,
    image_suffix,
    step_message,
    tool_message,
)

from ..operations import OpContext, Operation
from ..store import Store, StoredMessage, StoredToolCall, StoredToolStep, StoreError

if TYPE_CHECKING:
    from engine_mlx.engine import Engine

log = logging.getLogger(__name__)

TOOLS_PREF = "tools"  # ToolPrefs as JSON
STOPPED_TEXT = "Stopped by the user before it ran."


@dataclass(frozen=True)
class ToolPrefs:
    """What Settings ▸ Tools keeps besides ``mcp.json``: the Files tool's folders and the step limit."""

    files_roots: tuple[str, ...] = ()
    max_steps: int = DEFAULT_MAX_STEPS

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> ToolPrefs:
        try:
            data = json.loads(text or "{}")
            steps = int(data.get("max_steps", DEFAULT_MAX_STEPS))
            return cls(tuple(str(p) for p in data.get("files_roots", ())), max(1, min(steps, 100)))
        except (ValueError, TypeError, AttributeError):
            return cls()


class ConsentGate:
    """The loop's ``approve``: blocks the engine's job thread until the consent card is answered (or Stop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[ConsentAnswer]]] = {}
        # calls whose card Stop ended (the loop reads that as a denial)
        self._stopped: set[str] = set()

    def approve(self, proposed: ToolCallProposed, cancel: CancelToken | None) -> ConsentAnswer:
        done, box = threading.Event(), []
        with self._lock:
            self._waiting[proposed.call_id] = (done, box)
        unregister = cancel.on_cancel(done.set) if cancel is not None else (lambda: None)
        try:
            done.wait()  # the card's answer, or Stop
            if not box:
                with self._lock:
                    self._stopped.add(proposed.call_id)
                return ConsentAnswer(Approval.DENY)
            return box[0]
        finally:
            unregister()
            with self._lock:
                self._waiting.pop(proposed.call_id, None)

    def answer(self, call_id: str, answer: ConsentAnswer) -> bool:
        """From the GUI thread; False if that call no longer waits (stopped meanwhile)."""
        with self._lock:
            waiting = self._waiting.get(call_id)
        if waiting is None:
            return False
        waiting[1].append(answer)
        waiting[0].set()
        return True

    def stopped(self, call_id: str) -> bool:
        """Whether Stop, not the user's Deny, ended this call's card (asked once, when it is saved)."""
        with self._lock:
            if call_id in self._stopped:
                self._stopped.discard(call_id)
                return True
            return False


class CallTextFilter:
    """Hides the model's call markup (``<tool_call>`` to the end of its step) from the answer shown; the
    tool call blocks show the calls instead. Markup that ran no call (cut by the token limit, malformed)
    is given back at the end (``unrun``), so nothing the model wrote is lost."""

    def __init__(self) -> None:
        self.held = ""  # a tail that may be the start of the marker
        self.hidden: list[str] = []  # this step's markup, from the marker on
        self.unrun = ""  # the last step's markup, until a call event shows it was a call

    def feed(self, text: str) -> str:
        if self.hidden:
            self.hidden.append(text)
            return ""
        text, self.held = self.held + text, ""
        at = text.find(START)
        if at >= 0:
            self.hidden.append(text[at:])
            return text[:at]
        for n in range(min(len(START) - 1, len(text)), 0, -1):
            if START.startswith(text[-n:]):
                self.held = text[-n:]
                return text[:-n]
        return text

    def end_step(self) -> str:
        """The step's text still held back (a tail that was not the marker after all)."""
        out, self.unrun = self.held, "".join(self.hidden)
        self.held, self.hidden = "", []
        return out


@dataclass
class ToolTurn:
    """One answer written through the tool loop, on the GUI thread: hides its call markup from the answer
    shown (the call blocks show the calls), and hands its tool events to the ToolsController."""

    tools: ToolsController
    message_id: int
    text: CallTextFilter = field(default_factory=CallTextFilter)

    def answer(self, text: str) -> str:
        """The part of an answer delta to show ("" while it may be call markup)."""
        return self.text.feed(text)

    def resume(self, written: str) -> str:
        """Continue: the final step's text so far, of which the part to show (markup the model had begun,
        or a tail that may begin it, is held back until the continuation shows whether it is a call)."""
        return self.text.feed(written)

    def step_written(self, event: StepWritten) -> None:
        self.tools.record_step(self.message_id, event)

    def step_ended(self) -> str:
        """A step's Stats arrived: the text held back that was not markup after all."""
        return self.text.end_step()

    def unrun(self) -> str:
        """At the end: the markup that ran no call (malformed, cut by the limit), given back to the answer."""
        out, self.text.unrun = self.text.unrun, ""
        return out

    def proposed(self, event: ToolCallProposed) -> None:
        self.text.unrun = ""  # the markup was calls: their blocks show them
        self.tools.consentRequested.emit(self.message_id, event)

    def call_finished(self, event: ToolCallFinished) -> None:
        self.text.unrun = ""
        self.tools.record(self.message_id, event)

    def step_limit(self, steps: int) -> None:
        self.text.unrun = ""
        self.tools.stepLimitReached.emit(self.message_id, steps)


def _steps(message: StoredMessage) -> list[tuple[StoredToolStep, list[StoredToolCall]]]:
    """An answer's steps that ended in calls, in order: what the model wrote in each, and its calls (a step
    saved before its text was kept, by schema 4, reads as empty)."""
    written = {s.step: s for s in message.tool_steps}
    return [
        (written.get(step, StoredToolStep(step)), [c for c in message.tool_calls if c.step == step])
        for step in sorted({c.step for c in message.tool_calls})
    ]


def final_part(message: StoredMessage) -> tuple[str, str]:
    """The text and reasoning of an answer's final step: the answer shows its tool steps' first, then
    these. Without stored steps (no tools, or schema 4) that is the whole answer."""
    return (
        _after(message.text, "".join(s.text for s in message.tool_steps)),
        _after(message.thinking, "".join(s.thinking for s in message.tool_steps)),
    )


def _after(whole: str, before: str) -> str:
    if whole.startswith(before):
        return whole[len(before) :]
    # saved mid-step: nothing of the final step yet
    return "" if before.startswith(whole) else whole


def tool_steps(message: StoredMessage, *, vision: bool = True) -> list[Message]:
    """An answer's tool steps as the messages the model saw: per step, what it wrote and its calls, then
    their results, with the images a tool returned (kept in the data folder) as the step gave them."""
    out: list[Message] = []
    for written, calls in _steps(message):
        out.append(
            step_message(
                written.text,
                written.thinking,
                tuple(ToolCall(c.tool, c.arguments, c.call_id) for c in calls),
            )
        )
        out.extend(
            tool_message(c.result, [p for p in c.images if p.is_file()], vision=vision)
            for c in calls
        )
    return out


def answer_markdown(message: StoredMessage, files_dir: Path, include_thinking: bool) -> list[str]:
    """A message for the Markdown export: each tool step's reasoning (when asked), text and calls, in
    the order they were written, then the final step's."""
    lines: list[str] = []
    for written, calls in _steps(message):
        lines += thinking_markdown(written.thinking if include_thinking else "")
        if written.text.strip():
            lines += [written.text.strip(), ""]
        lines += calls_markdown(tuple(calls), files_dir)
    text, thinking = final_part(message)
    lines += thinking_markdown(thinking if include_thinking else "")
    return lines + [text.strip(), ""]


def thinking_markdown(thinking: str) -> list[str]:
    if not thinking.strip():
        return []
    return ["<details><summary>Thinking</summary>", "", thinking.strip(), "", "</details>", ""]


def calls_markdown(calls: tuple[StoredToolCall, ...], files_dir: Path) -> list[str]:
    """An answer's tool calls for the Markdown export: a collapsible block each, its images copied beside."""
    import shutil

    lines: list[str] = []
    for call in calls:
        head = f"Tool: {call.server} ▸ {call.tool} ({outcome_text(call)})"
        fence = _fence(call.result)
        lines += [
            f"<details><summary>{head}</summary>",
            "",
            "Arguments:",
            "",
            "```json",
            pretty_json(call.arguments),
            "```",
            "",
            "Result:",
            "",
            fence,
            call.result,
            fence,
            "",
        ]
        for image in call.images:
            if image.is_file():
                files_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image, files_dir / image.name)
                lines += [f"![{image.name}]({files_dir.name}/{image.name})", ""]
        lines += ["</details>", ""]
    return lines


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``, so the text is kept as it is."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def pretty_json(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


def outcome_text(call: StoredToolCall) -> str:
    """One phrase for how a call ended: the block's header and the export."""
    return {
        "ran": f"{call.duration_s:.2f} s" + (", result truncated" if call.truncated else ""),
        "failed": "failed",
        "denied": "denied by you",
        "blocked": "blocked by your settings",
        "cancelled": "stopped",
    }.get(call.outcome, call.outcome)


class ToolsController(QObject):
    """Owns the ToolHost (closed at quit), ``mcp.json``, the consent table and the tool preferences."""

    statusChanged = Signal()  # the servers were (re)configured: read ``status()``
    # answer message id, the call waiting for the user
    consentRequested = Signal(int, ToolCallProposed)
    callFinished = Signal(int, StoredToolCall)  # answer message id, the call (already saved)
    stepLimitReached = Signal(int, int)  # answer message id, steps
    consentChanged = Signal()  # the table changed (Settings ▸ Tools, or a card's Always allow)
    errorOccurred = Signal(str)

    def __init__(self, store: Store, data_dir: Path, log_dir: Path, parent: QObject | None = None):
        super().__init__(parent)
        self.store = store
        self.config_path = Path(data_dir) / MCP_CONFIG
        self.consent_path = Path(data_dir) / MCP_CONSENT
        self.image_dir = Path(data_dir) / "tool-images"  # the images shown and kept in the history
        self.model_image_dir = self.image_dir / "sent"  # the loop's copies, read by a vision model
        self.prefs = ToolPrefs.from_json(store.get_pref(TOOLS_PREF))
        self.config_error = ""
        try:
            self.servers: tuple[ServerConfig, ...] = load_config(self.config_path)
        except ToolConfigError as error:
            self.servers, self.config_error = (), str(error)
        self.consent: ConsentTable = load_consent(self.consent_path)
        self.gate = ConsentGate()
        # Test hook: each loop step's settings (a forced reply); the real engine runs every step.
        self.step_settings: Callable[[int], GenerationSettings] | None = None
        self.host = ToolHost(log_dir, files_roots=[Path(p) for p in self.prefs.files_roots])
        self._closed = False
        self._apply_lock = threading.Lock()
        self._draft: set[str] | None = None  # the servers chosen for a new chat before it is stored
        self.apply()

    # --- servers ------------------------------------------------------------------------------
    def apply(self, restart_files: bool = False) -> None:
        """Run the enabled servers (and the Files tool if a folder is shared), on the thread pool."""
        if self._closed:
            return
        host = self.host

        def configure(_ctx: OpContext) -> None:
            # One at a time, each with the newest settings: two quick changes cannot end in the older one.
            with self._apply_lock:
                servers, roots = self.servers, tuple(Path(p) for p in self.prefs.files_roots)
                if restart_files:
                    host.configure(servers, builtin_files=False)
                host.files_roots = roots
                # starts them; states show in status()
                host.configure(servers, builtin_files=bool(roots))

        def done(_result: None = None) -> None:
            self.statusChanged.emit()

        def failed(error: Exception) -> None:
            done()
            self.errorOccurred.emit(f"The tool servers could not be started: {error}")

        Operation(self, configure, done, label="Starting the tool servers").failure(
            failed
        ).run_in_background()

    def status(self) -> list[ServerStatus]:
        return self.host.status()

    def save_servers(self, servers: tuple[ServerConfig, ...]) -> None:
        save_config(self.config_path, servers)
        self.servers, self.config_error = servers, ""
        self.apply()
        self.statusChanged.emit()  # the servers a chat may use changed now; their states follow

    def set_prefs(self, prefs: ToolPrefs) -> None:
        roots_changed = prefs.files_roots != self.prefs.files_roots
        self.prefs = prefs
        self.store.set_pref(TOOLS_PREF, prefs.to_json())
        if roots_changed:
            self.apply(restart_files=True)
            self.statusChanged.emit()

    def set_consent(self, table: ConsentTable) -> None:
        """The user's own choice (Settings ▸ Tools, a card's Always allow); never a tool's result."""
        self.consent = table
        save_consent(self.consent_path, table)
        self.consentChanged.emit()  # (from the engine's job thread for a card: queued to the GUI thread)

    def available(self) -> list[str]:
        """The servers a chat may use: the enabled ones, and Files when a folder is shared."""
        names = [s.name for s in self.servers if s.enabled]
        return ([BUILTIN_FILES] if self.prefs.files_roots else []) + names

    def chat_servers(self, cid: str | None) -> set[str]:
        """The servers chat ``cid`` uses (a new chat not yet sent: the choice made for it so far)."""
        chosen = self.store.tool_servers(cid) if cid else None
        if chosen is None and self._draft is not None:
            chosen = tuple(self._draft)
        available = set(self.available())
        return available if chosen is None else available & set(chosen)

    def set_chat_servers(self, cid: str | None, servers: set[str]) -> None:
        if cid is None:
            self._draft = set(servers)  # saved with the chat when its first message is sent
        else:
            self.store.set_tool_servers(cid, servers)

    # --- a turn -------------------------------------------------------------------------------
    def turn_for(
        self,
        cid: str,
        conversation: Conversation,
        settings: GenerationSettings,
        first_step: int = 0,
    ) -> Callable[[Engine, CancelToken], Iterator[LoopEvent]] | None:
        """The engine thread's work for a turn with the chat's tools; None when the chat uses none.
        Continue passes the turn's cut message (``continue_last``) and the steps it already took."""
        if self._draft is not None and self.store.tool_servers(cid) is None:
            self.store.set_tool_servers(cid, self._draft)
        self._draft = None
        servers = self.chat_servers(cid)
        if not servers:
            return None
        step_settings = self.step_settings

        def run(engine: Engine, cancel: CancelToken) -> Iterator[LoopEvent]:
            loop = ToolLoop(
                engine,
                self.host,
                consent=self.consent,
                approve=self.gate.approve,
                on_consent=self.set_consent,
                max_steps=self.prefs.max_steps,
                servers=servers,
                image_dir=self.model_image_dir,
            )
            return loop.run(
                conversation, settings, cancel, step_settings=step_settings, first_step=first_step
            )

        return run

    def offered_tools(self, cid: str | None) -> tuple[Tool, ...]:
        """The tools a turn of chat ``cid`` would put in the prompt (the context meter counts them)."""
        servers = self.chat_servers(cid)
        return ToolLoop(None, self.host, servers=servers).offered() if servers else ()

    def answer(self, call_id: str, answer: ConsentAnswer) -> bool:
        return self.gate.answer(call_id, answer)

    def record_step(self, message_id: int, event: StepWritten) -> None:
        """Save what the model wrote in a step before its calls (its message is rebuilt from it)."""
        try:
            self.store.set_tool_step(
                message_id, StoredToolStep(event.step, event.text, event.thinking)
            )
        except StoreError as error:  # shown; the text stays in the answer on screen
            self.errorOccurred.emit(str(error))

    def record(self, message_id: int, done: ToolCallFinished) -> StoredToolCall:
        """Save a finished call (and its images) under its answer, then show it."""
        if done.outcome is Outcome.DENIED and self.gate.stopped(done.call_id):
            done = replace(done, outcome=Outcome.CANCELLED, result=STOPPED_TEXT)
        images = []
        for index, image in enumerate(done.images):
            path = self.image_dir / f"{done.call_id}-{index}{image_suffix(image.mime_type)}"
            try:
                self.image_dir.mkdir(parents=True, exist_ok=True)
                path.write_bytes(image.data)
                images.append(path)
            except OSError as error:
                log.warning("could not keep a tool's image: %s", error)
        call = StoredToolCall(
            done.step,
            done.call_id,
            done.server,
            done.tool,
            json.dumps(done.arguments, ensure_ascii=False),
            done.outcome.value,
            done.result,
            done.duration_s,
            done.truncated,
            tuple(images),
        )
        try:
            self.store.add_tool_call(message_id, call)
        except Exception as error:  # StoreError: shown, the call stays on screen
            self.errorOccurred.emit(str(error))
        self.callFinished.emit(message_id, call)
        return call

    def close(self) -> None:
        """At quit: stop every server (no process outlives the app)."""
        if not self._closed:
            self._closed = True
            self.host.close()
