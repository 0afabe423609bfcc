"""One QwenDesk per data folder: a lock file decides who runs, a local socket carries a second launch's files.

The first launch holds ``QLockFile`` on the data folder (a lock left by a crashed process is detected by
its process id and taken over) and listens on a ``QLocalServer`` named after the folder. A second launch
fails to take the lock, sends its files (absolute paths, one JSON line) to that server and exits; the
running window attaches them and comes to the front. Only the lock holder runs start-up cleanup, so
nothing a running window still uses is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_MS = (
    10_000  # the first window may still be starting: it listens only once the lock is held
)


class InstanceError(Exception):
    """The data folder is in use by a QwenDesk that does not answer, or the lock cannot be written."""


def server_name(data_dir: Path) -> str:
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
    return f"qwendesk-{digest}"


class SingleInstance(QObject):
    """``acquire()`` is True for the first launch on a data folder; then ``filesReceived`` brings later
    launches' files. For any other launch, ``hand_over(files)`` passes them on."""

    filesReceived = Signal(list)  # list[Path]

    def __init__(self, data_dir: Path, parent: QObject | None = None):
        super().__init__(parent)
        self.data_dir = Path(data_dir)
        self.name = server_name(self.data_dir)
        self._lock = QLockFile(str(self.data_dir / "qwendesk.lock"))
        self._lock.setStaleLockTime(0)  # stale only when its process is gone, never by age
        self._server: QLocalServer | None = None

    def acquire(self) -> bool:
        if not self._lock.tryLock(0):
            if self._lock.error() == QLockFile.LockError.LockFailedError:
                return False
            raise InstanceError(f"Could not write the lock file in {self.data_dir}.")
        # We hold the lock, so a socket left under our name is a crashed instance's: remove it.
        QLocalServer.removeServer(self.name)
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not self._server.listen(self.name):
            log.warning("single-instance server did not start: %s", self._server.errorString())
        self._server.newConnection.connect(self._accept)
        return True

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._lock.unlock()

    def owner_pid(self) -> int | None:
        ok, pid, _host, _app = self._lock.getLockInfo()
        return int(pid) if ok else None

    def hand_over(self, files: list[Path], timeout_ms: int = CONNECT_TIMEOUT_MS) -> None:
        """Send ``files`` to the running instance (which also comes to the front); raises ``InstanceError``
        when it does not answer."""
        import time

        payload = json.dumps({"files": [str(Path(f).resolve()) for f in files]}).encode() + b"\n"
        deadline = time.monotonic() + timeout_ms / 1000
        socket = QLocalSocket()
        while True:
            socket.connectToServer(self.name)
            if socket.waitForConnected(500):
                break
            if time.monotonic() > deadline:
                raise InstanceError(
                    f"Another QwenDesk (process {self.owner_pid() or '?'}) is using the data folder "
                    f"{self.data_dir} but does not answer."
                )
            time.sleep(0.1)
        socket.write(payload)
        socket.waitForBytesWritten(2000)
        # The answer says the files arrived; wait for it so none is lost when this process exits.
        if not socket.waitForReadyRead(timeout_ms) or not bytes(socket.readAll().data()).startswith(
            b"ok"
        ):
            raise InstanceError("The running QwenDesk did not confirm it received the files.")
        socket.disconnectFromServer()

    def _accept(self) -> None:
        while self._server is not None and self._server.hasPendingConnections():
            socket = self._server.nextPendingConnection()
            socket.setParent(self)
            buffer = bytearray()

            def read(socket=socket, buffer=buffer) -> None:
                buffer.extend(bytes(socket.readAll().data()))
                if not buffer.endswith(b"\n"):
                    return
                try:
                    files = [Path(p) for p in json.loads(bytes(buffer))["files"]]
                except (ValueError, KeyError, TypeError):
                    log.warning("ignored a malformed message from another launch")
                    socket.disconnectFromServer()
                    return
                socket.write(b"ok\n")
                socket.flush()
                log.info("another launch handed over %d files", len(files))
                self.filesReceived.emit(files)

            socket.readyRead.connect(read)
            socket.disconnected.connect(socket.deleteLater)
