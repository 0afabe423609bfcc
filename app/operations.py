"""Background work as typed operations, after Anki's ``QueryOp``: ``op`` runs on the thread pool, its
result reaches ``success`` on the GUI thread, and a failure nobody handles still reaches the user (the
window's banner), never only a log line.

    Operation(self, lambda ctx: search_database(db, query), show_hits, label="Searching the chats")
        .failure(on_failed)            # optional: replaces the default (the banner)
        .with_progress(on_progress)    # optional: ``ctx.progress(done, total)`` from ``op``
        .run_in_background()

``op`` gets an ``OpContext``: ``ctx.progress(done, total)`` reports, ``ctx.cancelled()`` tells it to stop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, runtime_checkable

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)

T = TypeVar("T")


@runtime_checkable
class ShowsErrors(Protocol):
    """What the default failure handler looks for up the parent chain (the main window)."""

    def show_error(self, message: str) -> None: ...


def default_failure(parent: QObject | None, label: str, error: Exception) -> None:
    """Show the failure on the nearest ``ShowsErrors`` parent: an engine or store error is already one
    sentence for the user; anything else is named with what failed."""
    from engine_mlx.errors import EngineError

    from .store import StoreError

    message = (
        str(error) if isinstance(error, (EngineError, StoreError)) else f"{label} failed: {error}"
    )
    log.warning(
        "%s", message, exc_info=None if isinstance(error, (EngineError, StoreError)) else error
    )
    target = parent
    while target is not None and shiboken6.isValid(target) and not isinstance(target, ShowsErrors):
        target = target.parent()
    if target is not None and shiboken6.isValid(
        target
    ):  # (a window closed meanwhile: the log has it)
        target.show_error(message)


class OpContext:
    """What ``op`` gets on its pool thread: a progress report and a cancel check."""

    def __init__(self, operation: Operation) -> None:
        self._operation = operation

    def progress(self, done: int, total: int) -> None:
        self._operation._progressed.emit(int(done), int(total))

    def cancelled(self) -> bool:
        return self._operation.is_cancelled


class _Runnable(QRunnable):
    def __init__(self, operation: Operation) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._operation = operation

    def run(self) -> None:
        self._operation._run()


class Operation(QObject, Generic[T]):
    """One background job: ``op(ctx) -> T`` on the pool, then ``success(T)`` or the failure handler on
    the GUI thread. Keep the Operation to ``cancel`` it; it keeps itself alive until it reports."""

    _ended = Signal()  # the outcome is in _result/_error; delivered queued on the GUI thread
    _progressed = Signal(int, int)  # done, total
    _running: set[Operation] = set()

    def __init__(
        self,
        parent: QObject | None,
        op: Callable[[OpContext], T],
        success: Callable[[T], None],
        *,
        label: str = "A background task",
    ) -> None:
        super().__init__()  # not a Qt child: a pool thread may outlive a closed widget's parent
        self._parent = parent
        self._op = op
        self._success = success
        self._label = label
        self._failure: Callable[[Exception], None] = lambda error: default_failure(
            self._parent, label, error
        )
        self._cancel = threading.Event()
        self._result: T | None = None
        self._error: Exception | None = None
        self._ended.connect(self._report)

    def failure(self, handler: Callable[[Exception], None]) -> Operation[T]:
        """Handle a failure here instead of showing it on the banner."""
        self._failure = handler
        return self

    def with_progress(self, handler: Callable[[int, int], None]) -> Operation[T]:
        self._progressed.connect(handler)
        return self

    def run_in_background(self, pool: QThreadPool | None = None) -> Operation[T]:
        Operation._running.add(self)
        (pool or QThreadPool.globalInstance()).start(_Runnable(self))
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    @classmethod
    def stop_all(cls, pool: QThreadPool | None = None) -> None:
        """At exit: ask every running operation to stop and wait for the pool, so no thread outlives the app."""
        for operation in list(cls._running):
            operation.cancel()
        (pool or QThreadPool.globalInstance()).waitForDone()

    def _run(self) -> None:  # on the pool thread
        try:
            self._result = self._op(OpContext(self))
        except Exception as error:  # reported on the GUI thread, to the failure handler
            self._error = error
        self._ended.emit()

    def _report(self) -> None:  # on the GUI thread
        Operation._running.discard(self)
        if self._error is not None:
            self._failure(self._error)
        else:
            self._success(self._result)  # type: ignore[arg-type]  # set when op returned
