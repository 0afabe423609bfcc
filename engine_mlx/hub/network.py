"""The one door to the network: the Hub endpoint, offline mode lifted for one action, clear errors.

The engine package sets ``HF_HUB_OFFLINE=1`` before huggingface_hub is imported, and huggingface_hub
reads that into ``constants.HF_HUB_OFFLINE`` once, at import; every request it makes then checks
``constants.is_offline_mode()``. :func:`online` turns that flag off while a user's download or graft
runs (nested and concurrent actions share it) and back on when the last one ends.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from engine_mlx.errors import EngineError

DEFAULT_ENDPOINT = "https://huggingface.co"


class HubError(EngineError):
    """A download or graft failed; the message names the repo or file and what went wrong."""


class Cancelled(EngineError):
    """The user paused or cancelled the action; nothing half-done was kept in the model folder."""


class Paused(Cancelled):
    """The user paused a download: its partial files stay, and it resumes where it stopped."""


class _OfflineSwitch:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = True

    @contextlib.contextmanager
    def online(self) -> Iterator[None]:
        from huggingface_hub import constants

        with self._lock:
            if self._users == 0:
                self._saved = constants.HF_HUB_OFFLINE
                constants.HF_HUB_OFFLINE = False
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    constants.HF_HUB_OFFLINE = self._saved


_SWITCH = _OfflineSwitch()


def online():
    """Context manager: huggingface_hub may reach the network inside, and only inside, this block."""
    return _SWITCH.online()


def endpoint() -> str:
    """The Hub to talk to: ``HF_ENDPOINT`` as it is now (a mirror, or a test server), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub and HTTP failures into one :class:`HubError` line about ``what``."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except (HubError, Cancelled):
        raise
    except errors.RepositoryNotFoundError:
        raise HubError(f"{what}: no such repository on {endpoint()} (or it is private)") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{what}: no such revision on {endpoint()}") from None
    except errors.EntryNotFoundError:
        raise HubError(f"{what}: the file is not in the repository (404)") from None
    except errors.OfflineModeIsEnabled:
        raise HubError(f"{what}: offline mode is on") from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise HubError(f"{what}: the server answered HTTP {status}") from None
    except httpx2.RemoteProtocolError:
        raise HubError(f"{what}: the connection broke off before the whole file arrived") from None
    except httpx2.TransportError as exc:
        raise HubError(f"{what}: cannot reach {endpoint()} ({exc or type(exc).__name__})") from None
