"""The GUI thread's bridge to the engine's one thread (``engine_mlx.jobs.EngineThread``).

The GUI thread never calls MLX. ``EngineClient`` submits every engine call as a job to the engine's job
queue (the local API shares it, so the app's chats and API requests take turns on one model) and returns
at once. Each job reports back through one typed signal per kind of result, emitted on the engine thread
and delivered queued on the GUI thread, where the client lives. Stop is a thread-safe cancel token.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from engine_mlx.checkpoint import ModelInfo
from engine_mlx.conversation import Conversation
from engine_mlx.events import AnswerDelta, Finished, FinishReason, Progress, Stats, ThinkingDelta
from engine_mlx.mtp_head import MtpMode
from engine_mlx.remote.engine import RemoteModel
from engine_mlx.settings import GenerationSettings
from engine_mlx.tools.loop import (
    LoopEvent,
    StepLimitReached,
    StepWritten,
    ToolCallFinished,
    ToolCallProposed,
)

if TYPE_CHECKING:
    from engine_mlx.cancel import CancelToken
    from engine_mlx.engine import Engine
    from engine_mlx.jobs import EngineThread
    from engine_mlx.remote.connection import ServerConnection
    from engine_mlx.remote.engine import RemoteEngine

log = logging.getLogger(__name__)


class LoadFailure(Enum):
    """Why a model did not load: the window words its message by kind."""

    CHECKPOINT = "checkpoint"  # the folder cannot be used (missing, not Qwen3.5, damaged)
    MEMORY = "memory"  # it does not fit in memory at this context length
    SERVER = "server"  # the QwenDesk server (Settings ▸ Engine) cannot be reached or refused
    ERROR = "error"  # anything else (an MLX failure)


class EngineClient(QObject):
    """Submits the app's engine work to the engine thread; results arrive as the signals below."""

    loadProgress = Signal(str, float)  # stage, fraction
    loaded = Signal(ModelInfo)
    loadFailed = Signal(str, LoadFailure)  # message
    unloaded = Signal()
    mtpFailed = Signal(str)  # the MTP mode could not be applied to the loaded model (why)
    connected = Signal(RemoteModel)  # server mode (Settings ▸ Engine): the model the server serves
    # A generation's events, by request id (the id ``generate`` returned).
    progress = Signal(int, int, int)  # request id, prompt tokens done, total
    thinkingDelta = Signal(int, str)
    answerDelta = Signal(int, str)
    stats = Signal(int, Stats)
    # request id, reason, error ("" when none); always last
    finished = Signal(int, FinishReason, str)
    # A turn through the tool loop (``run_turn``) also reports its calls.
    # the user is asked (the loop waits for the answer)
    toolCallProposed = Signal(int, ToolCallProposed)
    toolCallFinished = Signal(int, ToolCallFinished)
    toolStepWritten = Signal(int, StepWritten)  # a step ended in calls: its text and reasoning
    stepLimitReached = Signal(int, int)  # request id, steps
    # request id, prompt tokens (only the newest request is answered)
    tokensCounted = Signal(int, int)

    def __init__(self, state_dir: Path | None = None, parent: QObject | None = None):
        super().__init__(parent)
        from engine_mlx.jobs import EngineThread

        self._state_dir = state_dir
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._jobs: EngineThread = EngineThread(name="engine")
        self._token: CancelToken | None = None
        self._next_request = 0
        self._latest_count = (
            0  # the newest token-count request (read on the engine thread: one int)
        )
        self._closed = False

    # --- state --------------------------------------------------------------------------------------
    def _get_engine(self) -> Engine | RemoteEngine:
        with self._engine_lock:
            if self._engine is None:
                from engine_mlx.engine import Engine

                self._engine = Engine(state_dir=self._state_dir)
            return self._engine

    def shared(self) -> tuple[Engine | RemoteEngine, EngineThread]:
        """(engine, job queue) for the local API, which submits to the same thread."""
        return self._get_engine(), self._jobs

    @property
    def running(self) -> bool:
        """False once ``shutdown`` ran: nothing more is submitted."""
        return not self._closed

    def _submit(self, job, load: bool = False) -> None:
        from engine_mlx.jobs import JobKind

        if not self._closed:
            self._jobs.submit(job, JobKind.LOAD if load else JobKind.OTHER)

    # --- loading ------------------------------------------------------------------------------------
    def load(
        self,
        path: Path | str,
        context_tokens: int,
        force: bool = False,
        mtp: MtpMode = MtpMode.AUTO,
    ) -> None:
        self._submit(
            lambda: self._load(Path(path), int(context_tokens), bool(force), MtpMode(mtp)),
            load=True,
        )

    def use_mtp(self, mode: MtpMode) -> None:
        """Decode the loaded model's next answers with its MTP head as ``mode`` says (queued after
        any running answer; nothing when no model is loaded)."""
        mode = MtpMode(mode)

        def job() -> None:
            engine = self._engine
            if engine is None or engine.model_info is None:
                return
            try:
                engine.use_mtp(mode)
            except Exception as error:  # a damaged head: the model decodes plainly
                log.exception("MTP mode %s not applied", mode.value)
                self.mtpFailed.emit(f"The MTP head cannot be used ({error}); decoding plainly.")

        self._submit(job)

    def _load(self, path: Path, context_tokens: int, force: bool, mtp: MtpMode) -> None:
        """On the engine thread."""
        from engine_mlx.errors import CheckpointError, EngineError, MemoryFitError

        def progress(update) -> None:
            self.loadProgress.emit(update.stage, float(update.fraction))

        # Loading imports mlx-vlm/transformers and creates a million Python objects: a full GC pass in
        # the middle holds the GIL for half a second and freezes the window. Collect nothing while
        # loading, then freeze what was created (it lives as long as the process anyway).
        gc.disable()
        try:
            info = self._get_engine().load(
                path, context_tokens=context_tokens, force=force, progress=progress, mtp=mtp
            )
        except MemoryFitError as error:
            self.loadFailed.emit(str(error), LoadFailure.MEMORY)
        except CheckpointError as error:
            self.loadFailed.emit(str(error), LoadFailure.CHECKPOINT)
        except EngineError as error:
            self.loadFailed.emit(str(error), LoadFailure.ERROR)
        except Exception as error:  # an MLX failure: keep the app alive, log the traceback
            log.exception("loading %s failed", path)
            self.loadFailed.emit(f"Loading {path.name} failed: {error}", LoadFailure.ERROR)
        else:
            self.loaded.emit(info)
        finally:
            gc.freeze()
            gc.enable()

    # --- server mode (Settings ▸ Engine) ------------------------------------------------------------
    def use_server(self, connection: ServerConnection) -> None:
        """Answer with the QwenDesk server at ``connection`` from now on: any local model is unloaded
        (``unloaded``), then the server's model list is asked for: ``connected`` or ``loadFailed``."""
        self._submit(lambda: self._use_server(connection), load=True)

    def _use_server(self, connection: ServerConnection) -> None:
        """On the engine thread."""
        from engine_mlx.errors import EngineError
        from engine_mlx.remote.engine import RemoteEngine

        remote = RemoteEngine(connection)
        with self._engine_lock:
            previous, self._engine = self._engine, remote
        if previous is not None and previous.model_info is not None:
            try:
                previous.unload()
            except Exception:
                log.exception("unload failed")
            self.unloaded.emit()
        try:
            model = remote.connect()
        except EngineError as error:
            self.loadFailed.emit(str(error), LoadFailure.SERVER)
        except Exception as error:  # keep the app alive, log the traceback
            log.exception("connecting to %s failed", connection.host)
            self.loadFailed.emit(
                f"Connecting to {connection.host} failed: {error}", LoadFailure.SERVER
            )
        else:
            self.connected.emit(model)

    def use_local(self) -> None:
        """Answer with this Mac's engine again (no model loaded until one is chosen). The server's
        engine is let go at once, so what asks for the engine from now on (``shared``: the local
        API) gets this Mac's; an answer still streaming keeps the one it started with."""
        from engine_mlx.remote.engine import RemoteEngine

        def let_go() -> RemoteEngine | None:
            with self._engine_lock:
                previous = self._engine
                if isinstance(previous, RemoteEngine):
                    self._engine = None
                    return previous
            return None

        now = let_go()

        def job() -> None:  # also a server connection queued before this call is let go
            gone = [e for e in (now, let_go()) if e is not None]
            for previous in gone:
                previous.unload()
            if gone:
                self.unloaded.emit()

        self._submit(job)

    def unload(self) -> None:
        def job() -> None:
            if self._engine is not None:
                try:
                    self._engine.unload()
                except Exception:
                    log.exception("unload failed")
            self.unloaded.emit()

        self._submit(job)

    # --- generating ---------------------------------------------------------------------------------
    def generate(self, conversation: Conversation, settings: GenerationSettings) -> int:
        """Queue an answer; returns its request id, which every event signal of it carries."""
        return self.run_turn(
            lambda engine, cancel: engine.generate(conversation, settings, cancel=cancel)
        )

    def run_turn(self, turn: Callable[[Engine, CancelToken], Iterable[LoopEvent]]) -> int:
        """Queue ``turn(engine, cancel)`` (a plain answer, or a turn through the tool loop) and relay its
        events; returns its request id."""
        from engine_mlx.cancel import CancelToken

        self._next_request += 1
        request = self._next_request
        token = self._token = CancelToken()
        if self._closed:  # after shutdown: it ends at once, but after the caller has taken its id
            QTimer.singleShot(
                0, self, lambda: self.finished.emit(request, FinishReason.CANCELLED, "")
            )
            return request
        engine = self._get_engine()
        self._jobs.submit_stream(lambda: turn(engine, token), _Relay(self, request).send, token)
        return request

    def cancel(self) -> None:
        """Stop the current answer at its next token (or before it starts, if it is still queued)."""
        if self._token is not None:
            self._token.cancel()

    def count_tokens(self, conversation: Conversation, settings: GenerationSettings) -> int:
        """Ask for the prompt tokens of ``conversation``; the answer arrives in ``tokensCounted`` with the
        returned request id. Requests a newer one replaced while they waited (e.g. behind a generation)
        are skipped, and so is a count that fails (bad input is refused, with its reason, when sent)."""
        self._next_request += 1
        request = self._latest_count = self._next_request

        def job() -> None:
            engine = self._engine
            if request != self._latest_count or engine is None or engine.model_info is None:
                return
            try:
                tokens = engine.count_tokens(conversation, settings)
            except Exception as error:
                log.debug("counting tokens failed: %s", error)
                return
            self.tokensCounted.emit(request, int(tokens))

        self._submit(job)
        return request

    # --- saved model state --------------------------------------------------------------------------
    def persist(self, conversation_id: str) -> None:
        def job() -> None:
            if self._engine is not None:
                try:
                    self._engine.persist(conversation_id)
                except Exception:
                    log.exception("persist failed")

        self._submit(job)

    def forget(self, conversation_id: str) -> None:
        """A deleted chat: drop its saved model state (the engine is created if needed, so it works at start)."""

        def job() -> None:
            try:
                self._get_engine().forget(conversation_id)
            except Exception:
                log.exception("forget failed")

        self._submit(job)

    def shutdown(self) -> None:
        """Finish the engine's queued work and take no more. Never gives up: a generation stops at its next
        token, but a model load cannot be interrupted, so quitting waits for it."""
        if self._closed:
            return
        self.cancel()
        done = self._jobs.submit(lambda: None)
        self._closed = True
        while True:
            try:
                done.result(timeout=2)
                break
            except FutureTimeout:
                log.info("waiting for the engine thread to finish its current step before quitting")
                self.cancel()
        self._jobs.close()


class _Relay:
    """One generation's sink, on the engine thread: each engine event becomes its typed signal."""

    def __init__(self, client: EngineClient, request: int):
        self._client = client
        self._request = request
        self._finished = False

    def send(self, item: object) -> None:
        from engine_mlx.errors import EngineError
        from engine_mlx.jobs import StreamEnd

        client, request = self._client, self._request
        if isinstance(item, ThinkingDelta):
            client.thinkingDelta.emit(request, item.text)
        elif isinstance(item, AnswerDelta):
            client.answerDelta.emit(request, item.text)
        elif isinstance(item, Progress):
            client.progress.emit(request, item.done, item.total)
        elif isinstance(item, Stats):
            client.stats.emit(request, item)
        elif isinstance(item, ToolCallProposed):
            client.toolCallProposed.emit(request, item)
        elif isinstance(item, ToolCallFinished):
            client.toolCallFinished.emit(request, item)
        elif isinstance(item, StepWritten):
            client.toolStepWritten.emit(request, item)
        elif isinstance(item, StepLimitReached):
            client.stepLimitReached.emit(request, item.steps)
        elif isinstance(item, Finished):
            self._finished = True
            client.finished.emit(request, item.reason, item.error or "")
        elif isinstance(item, StreamEnd) and not self._finished:
            error = item.error
            if error is None:  # stopped while it waited for its turn: it never ran
                client.finished.emit(request, FinishReason.CANCELLED, "")
            elif isinstance(error, EngineError):  # bad input, refused before any event
                client.finished.emit(request, FinishReason.ERROR, str(error))
            else:
                log.error("generation failed", exc_info=error)
                client.finished.emit(request, FinishReason.ERROR, f"Generation failed: {error}")
