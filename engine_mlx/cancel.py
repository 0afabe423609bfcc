"""A cancel flag shared between the thread that asks and the thread that generates."""

from __future__ import annotations

import threading


class CancelToken:
    """Set from any thread; the generation loop checks it once per prefill chunk and per token."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds pass; True when cancelled."""
        return self._event.wait(timeout)
