"""Background work: the engine on its own QThread, and small one-shot tasks on the thread pool.

The GUI thread never calls MLX. ``EngineClient`` (GUI thread) sends requests to ``EngineWorker`` (engine
thread) through queued signals and gets engine events back as signals. Cancel is a thread-safe flag.
The worker runs every engine call through the engine's job queue (``engine_mlx.jobs``), which the
local API shares, so the app's chats and API requests take turns on one model.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from engine_mlx.checkpoint import ModelInfo
from engine_mlx.conversation import Conversation
from engine_mlx.settings import GenerationSettings

log = logging.getLogger(__name__)


class EngineWorker(QObject):
    """Owns the Engine; lives on the engine thread. Every slot runs there and may block."""

    loadProgress = Signal(str, float)
    loaded = Signal(ModelInfo)
    loadFailed = Signal(str, str)  # message, kind: "checkpoint" | "memory" | "error"
    unloaded = Signal()
    # request id, an engine event: one of engine_mlx.events' union (ThinkingDelta, AnswerDelta, Progress,
    # Stats, Finished), so its Qt type can only be "a Python object"
    event = Signal(int, object)
    generationFailed = Signal(int, str)  # request id, one sentence (bad input raised before any event)
    tokensCounted = Signal(int, object)  # request id, prompt tokens (a Python int) or None (no model, bad input)

    def __init__(self, state_dir: Path | None = None):
        super().__init__()
        self._state_dir = state_dir
        self._engine = None
        self._jobs = None
        self._token_lock = threading.Lock()
        self._token = None
        self.latest_count = 0  # the newest token-count request (set from the GUI thread: one int store)

    def _get_engine(self):
        if self._engine is None:
            from engine_mlx.engine import Engine

            self._engine = Engine(state_dir=self._state_dir)
        return self._engine

    def shared(self):
        """(engine, job queue) for the local API; thread-safe enough to call from the GUI thread."""
        with self._token_lock:
            if self._jobs is None:
                from engine_mlx.jobs import EngineThread

                self._jobs = EngineThread(name="engine-jobs")
            return self._get_engine(), self._jobs

    def _call(self, fn, load: bool = False):
        from engine_mlx.jobs import JobKind

        return self.shared()[1].call(fn, JobKind.LOAD if load else JobKind.OTHER)

    @Slot(str, object, bool)  # context tokens as a Python int: Qt's int is 32-bit
    def load(self, path: str, context_tokens: int, force: bool) -> None:
        from engine_mlx.errors import CheckpointError, EngineError, MemoryFitError

        def progress(update) -> None:
            stage = getattr(update, "stage", str(update))
            fraction = float(getattr(update, "fraction", 0.0))
            self.loadProgress.emit(stage, fraction)

        # Loading imports mlx-vlm/transformers and creates a million Python objects: a full GC pass in
        # the middle holds the GIL for half a second and freezes the window. Collect nothing while
        # loading, then freeze what was created (it lives as long as the process anyway).
        gc.disable()
        try:
            engine = self._get_engine()
            info = self._call(lambda: engine.load(Path(path), context_tokens=context_tokens, force=force,
                                                  progress=progress), load=True)
        except MemoryFitError as error:
            self.loadFailed.emit(str(error), "memory")
        except CheckpointError as error:
            self.loadFailed.emit(str(error), "checkpoint")
        except EngineError as error:
            self.loadFailed.emit(str(error), "error")
        except Exception as error:  # an MLX failure: keep the app alive, log the traceback
            log.exception("loading %s failed", path)
            self.loadFailed.emit(f"Loading {Path(path).name} failed: {error}", "error")
        else:
            self.loaded.emit(info)
        finally:
            gc.freeze()
            gc.enable()

    @Slot()
    def unload(self) -> None:
        if self._engine is not None:
            try:
                self._call(self._engine.unload)
            except Exception:
                log.exception("unload failed")
        self.unloaded.emit()

    @Slot(int, Conversation, GenerationSettings)
    def generate(self, request_id: int, conversation: Conversation, settings: GenerationSettings) -> None:
        self.run_turn(request_id, lambda engine, token: engine.generate(conversation, settings, cancel=token))

    @Slot(int, object)
    def run_turn(self, request_id: int, turn: Callable[[Any, Any], Any]) -> None:
        """Stream ``turn(engine, cancel)``'s events on the job thread (a plain turn, or a turn with tools
        through the tool loop, whose tool events arrive as ``event``s too)."""
        from engine_mlx.cancel import CancelToken
        from engine_mlx.errors import EngineError
        from engine_mlx.events import Finished, FinishReason

        token = CancelToken()
        with self._token_lock:
            self._token = token
        try:
            engine, jobs = self.shared()
            for event in jobs.stream(lambda: turn(engine, token), token):
                self.event.emit(request_id, event)
        except EngineError as error:
            self.generationFailed.emit(request_id, str(error))
        except Exception as error:
            log.exception("generation failed")
            self.event.emit(request_id, Finished(FinishReason.ERROR, f"Generation failed: {error}"))
        finally:
            with self._token_lock:
                self._token = None

    @Slot(int, Conversation, GenerationSettings)
    def count_tokens(self, request_id: int, conversation: Conversation, settings: GenerationSettings) -> None:
        """The prompt tokens of ``conversation`` (the context meter's exact figure). Requests that a newer
        one replaced while they waited (e.g. behind a generation) are skipped."""
        if request_id != self.latest_count or self._engine is None or self._engine.model_info is None:
            return
        engine = self._engine
        try:
            tokens = self._call(lambda: engine.count_tokens(conversation, settings))
        except Exception as error:  # bad input is refused, with its reason, when it is sent
            log.debug("counting tokens failed: %s", error)
            tokens = None
        self.tokensCounted.emit(request_id, tokens)

    def cancel(self) -> None:
        """Thread-safe: called directly from the GUI thread while ``generate`` runs."""
        with self._token_lock:
            if self._token is not None:
                self._token.cancel()

    @Slot(str)
    def persist(self, conversation_id: str) -> None:
        engine = self._engine
        if engine is not None:
            try:
                self._call(lambda: engine.persist(conversation_id))
            except Exception:
                log.exception("persist failed")

    @Slot(str)
    def forget(self, conversation_id: str) -> None:
        """A deleted chat: drop its saved model state (the engine is created if needed, so it works at start)."""
        try:
            engine = self._get_engine()
            self._call(lambda: engine.forget(conversation_id))
        except Exception:
            log.exception("forget failed")


class EngineClient(QObject):
    """The GUI thread's handle on the engine thread."""

    _requestLoad = Signal(str, object, bool)  # path, context tokens (a Python int), force
    _requestUnload = Signal()
    _requestGenerate = Signal(int, Conversation, GenerationSettings)
    _requestTurn = Signal(int, object)  # request id, turn(engine, cancel) -> events
    _requestPersist = Signal(str)
    _requestForget = Signal(str)
    _requestCount = Signal(int, Conversation, GenerationSettings)

    def __init__(self, state_dir: Path | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("engine")
        self.worker = EngineWorker(state_dir)
        self.worker.moveToThread(self.thread)
        self._requestLoad.connect(self.worker.load)
        self._requestUnload.connect(self.worker.unload)
        self._requestGenerate.connect(self.worker.generate)
        self._requestTurn.connect(self.worker.run_turn)
        self._requestPersist.connect(self.worker.persist)
        self._requestForget.connect(self.worker.forget)
        self._requestCount.connect(self.worker.count_tokens)
        self.thread.start()
        self._next_request = 0

    def load(self, path: Path | str, context_tokens: int, force: bool = False) -> None:
        self._requestLoad.emit(str(path), int(context_tokens), bool(force))

    def unload(self) -> None:
        self._requestUnload.emit()

    def generate(self, conversation: Conversation, settings: GenerationSettings) -> int:
        self._next_request += 1
        self._requestGenerate.emit(self._next_request, conversation, settings)
        return self._next_request

    def run_turn(self, turn: Callable[[Any, Any], Any]) -> int:
        """Like ``generate``, for a turn the caller composes (the tool loop): ``turn(engine, cancel)``."""
        self._next_request += 1
        self._requestTurn.emit(self._next_request, turn)
        return self._next_request

    def cancel(self) -> None:
        self.worker.cancel()

    def count_tokens(self, conversation: Conversation, settings: GenerationSettings) -> int:
        """Ask for the prompt tokens of ``conversation`` on the engine thread; the answer arrives in
        ``worker.tokensCounted`` with the returned request id (only the newest request is answered)."""
        self._next_request += 1
        self.worker.latest_count = self._next_request
        self._requestCount.emit(self._next_request, conversation, settings)
        return self._next_request

    def persist(self, conversation_id: str) -> None:
        self._requestPersist.emit(conversation_id)

    def forget(self, conversation_id: str) -> None:
        self._requestForget.emit(conversation_id)

    def shutdown(self) -> None:
        """Stop the engine thread and join it. Never gives up: a thread destroyed while running aborts the
        process ("QThread: Destroyed while thread is still running"). A generation stops at the next token;
        a model load cannot be interrupted, so quitting waits for it."""
        if not self.thread.isRunning():
            return
        self.worker.cancel()
        self.thread.quit()
        while not self.thread.wait(2000):
            log.info("waiting for the engine thread to finish its current step before quitting")
            self.worker.cancel()
        if self.worker._jobs is not None:
            self.worker._jobs.close()


class _TaskSignals(QObject):
    done = Signal(object)  # whatever the task's function returned
    failed = Signal(Exception)
    progress = Signal(int, int)


class _Runnable(QRunnable):
    def __init__(self, task: Task):
        super().__init__()
        self.setAutoDelete(True)
        self._task = task

    def run(self) -> None:
        self._task._run()


class Task(QObject):
    """A function run on the thread pool, reporting back on the GUI thread.

    ``fn(progress, cancelled)`` gets a ``progress(done, total)`` callback and a ``cancelled()`` check.
    Keep a reference to the Task (``Task.start`` keeps one until it reports) and call ``cancel`` to stop it.
    """

    _running: set[Task] = set()

    def __init__(self, fn: Callable[[Callable[[int, int], None], Callable[[], bool]], Any],
                 parent: QObject | None = None):
        super().__init__(parent)
        self.signals = _TaskSignals()
        self.done = self.signals.done
        self.failed = self.signals.failed
        self.progress = self.signals.progress
        self._fn = fn
        self._cancel = threading.Event()

    def start(self, pool: QThreadPool | None = None) -> Task:
        Task._running.add(self)
        self.done.connect(self._forget)
        self.failed.connect(self._forget)
        (pool or QThreadPool.globalInstance()).start(_Runnable(self))
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _forget(self, *_: object) -> None:
        Task._running.discard(self)

    @classmethod
    def stop_all(cls, pool: QThreadPool | None = None) -> None:
        """At exit: ask every running task to stop and wait for the pool, so no thread outlives the app."""
        for task in list(cls._running):
            task.cancel()
        (pool or QThreadPool.globalInstance()).waitForDone()

    def _run(self) -> None:
        try:
            result = self._fn(lambda d, t: self.signals.progress.emit(int(d), int(t)), self._cancel.is_set)
        except BaseException as error:  # reported to the GUI thread, which decides what to show
            if not isinstance(error, Exception):
                raise
            log.debug("background task failed", exc_info=True)
            self.signals.failed.emit(error)
        else:
            self.signals.done.emit(result)


def run_task(fn: Callable[..., Any], on_done: Callable[[Any], None] | None = None,
             on_failed: Callable[[Exception], None] | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> Task:
    task = Task(fn)
    if on_done:
        task.done.connect(on_done)
    if on_failed:
        task.failed.connect(on_failed)
    if on_progress:
        task.progress.connect(on_progress)
    return task.start()
