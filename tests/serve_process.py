"""A real ``python -m engine_mlx serve`` in a subprocess on 127.0.0.1, with its access log (stderr) kept
line by line, for the tests of the app as a client of a QwenDesk server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key-5f2c"


class ServeProcess:
    def __init__(self, model: Path, *args: str):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine_mlx",
                "serve",
                "--model",
                str(model),
                "--port",
                "0",
                "--api-key",
                KEY,
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.base_url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(180) or not self.base_url:
            self.stop()
            raise RuntimeError("serve did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("Serving ") and " at " in line:
                self.base_url = line.split(" at ", 1)[1].split()[0].rstrip(";")
                self._ready.set()
        self._ready.set()

    @property
    def address(self) -> str:
        """host:port, as a user types it."""
        return self.base_url.removeprefix("http://").removesuffix("/v1")

    def requests(self, path: str = "/v1/chat/completions") -> list[str]:
        """The access log's lines for ``path``, in order."""
        return [line for line in self.lines if f" {path} " in line]

    def wait_for_requests(self, count: int, path: str = "/v1/chat/completions") -> list[str]:
        """Until ``count`` requests to ``path`` are logged (each is logged once its generation ended)."""
        deadline = time.monotonic() + 120
        while len(self.requests(path)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.requests(path)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
