"""One thread that runs all of an engine's MLX work, one job at a time, in arrival order.

The app's chats and the local API's requests share the loaded model through this queue: a job runs
to its end (or its cancel) before the next starts, so two generations never interleave and every
load, generation and snapshot happens on the same thread (MLX's generation stream is per thread).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum
from typing import Any, NoReturn, TypeVar

from engine_mlx.cancel import CancelToken

log = logging.getLogger(__name__)

T = TypeVar("T")


class JobKind(str, Enum):
    LOAD = "load"
    GENERATE = "generate"
    OTHER = "other"


class StreamEnd:
    """What a stream's sink receives last: ``error`` is the exception the job raised, if any."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


@dataclass
class _Job:
    number: int
    kind: JobKind
    run: Callable[[], None]
    cancel: CancelToken | None = None
    on_skip: Callable[[], None] | None = None


class EngineThread:
    """A FIFO of jobs run by one daemon thread. Thread-safe; ``close`` ends the thread."""

    def __init__(self, name: str = "engine") -> None:
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, JobKind] = {}
        self._running: JobKind | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ state

    @property
    def loading(self) -> bool:
        """A model load is running or waiting to run."""
        with self._lock:
            return self._running is JobKind.LOAD or JobKind.LOAD in self._waiting.values()

    @property
    def waiting(self) -> int:
        """Jobs queued behind the running one."""
        with self._lock:
            return len(self._waiting)

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    # ------------------------------------------------------------------ jobs

    def submit(self, fn: Callable[[], T], kind: JobKind = JobKind.OTHER) -> Future[T]:
        """Queue ``fn``; its result (or exception) arrives in the returned future."""
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                future.set_exception(exc)

        self._put(_Job(next(self._numbers), kind, run))
        return future

    def call(self, fn: Callable[[], T], kind: JobKind = JobKind.OTHER) -> T:
        """Run ``fn`` on the engine thread and wait for its result (inline if already there)."""
        if self.on_thread():
            return fn()
        return self.submit(fn, kind).result()

    def submit_stream(
        self,
        events: Callable[[], Iterable[Any]],
        sink: Callable[[Any], None],
        cancel: CancelToken,
    ) -> None:
        """Queue a generation: every item ``events()`` yields goes to ``sink`` (on the engine
        thread), then a ``StreamEnd``. A job cancelled while it waits never runs."""

        def run() -> None:
            error = None
            try:
                for item in events():
                    sink(item)
            except Exception as exc:  # noqa: BLE001 - an EngineError before the first event, for the caller
                error = exc
            sink(StreamEnd(error))

        self._put(
            _Job(
                next(self._numbers),
                JobKind.GENERATE,
                run,
                cancel,
                on_skip=lambda: sink(StreamEnd()),
            )
        )

    def stream(self, events: Callable[[], Iterable[Any]], cancel: CancelToken) -> Iterator[Any]:
        """``submit_stream`` for a blocking consumer: yields the items on the calling thread and
        re-raises the job's exception. Closing the iterator early cancels the job."""
        if self.on_thread():
            yield from events()
            return
        items: queue.Queue[Any] = queue.Queue()
        self.submit_stream(events, items.put, cancel)
        try:
            while True:
                item = items.get()
                if isinstance(item, StreamEnd):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            cancel.cancel()  # a no-op once the job ended; stops it if the consumer left early

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the queued jobs (waiting up to ``timeout``), then take no more.

        The thread is parked, not ended: a thread that ran MLX work can abort the process when it
        exits (MLX 0.32 tears down its thread-local stream with a joinable std::thread), so it
        stays until the process ends (it is a daemon thread)."""
        self._queue.put(None)
        if not self.on_thread():
            self._closed.wait(timeout)

    # ------------------------------------------------------------------ thread

    def _put(self, job: _Job) -> None:
        with self._lock:
            self._waiting[job.number] = job.kind
        self._queue.put(job)

    def _park(self) -> NoReturn:
        """Stop taking jobs and wait for good: see close()."""
        self._closed.set()
        while True:
            threading.Event().wait()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self._park()
            with self._lock:
                self._waiting.pop(job.number, None)
                self._running = job.kind
            try:
                if job.cancel is not None and job.cancel.cancelled:
                    if job.on_skip is not None:
                        job.on_skip()
                else:
                    job.run()
            except Exception:
                log.exception("engine job failed")
            finally:
                with self._lock:
                    self._running = None
