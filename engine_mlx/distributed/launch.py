"""Starting the ranks of a group with ``mlx.launch`` and stopping them all, leaving no process behind.

Used by ``cluster launch``, the tests and ``bench/cluster.py``. The launcher runs in a session of its
own, so stopping the group signals the launcher and every rank it started at once.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_SERVING = re.compile(r"Serving .* at (\S+) ")


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports that are free now on ``host`` (the ring backend
    listens on one port per rank, counting up)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return first
    raise OSError(f"no {count} consecutive free ports on {host}")


def launch_command(
    command: Sequence[str],
    *,
    hostfile: Path | None = None,
    ranks: int = 2,
    backend: str | None = None,
    starting_port: int | None = None,
    env: Sequence[str] = (),
) -> list[str]:
    """The ``mlx.launch`` command line running ``command`` (arguments after ``python``) on every rank:
    on the hosts of ``hostfile`` (with the backend it names, ring by default), else ``ranks`` times
    on 127.0.0.1 over the ring backend."""
    args = [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()"]
    if backend is not None or hostfile is None:
        args += ["--backend", backend or "ring"]
    args += (
        ["--hostfile", str(hostfile)]
        if hostfile is not None
        else ["--hosts", "127.0.0.1", "-n", str(ranks)]
    )
    if starting_port is not None:
        args += ["--starting-port", str(starting_port)]
    args += ["--python", sys.executable]
    for item in env:
        args += ["--env", item]
    return [*args, "--", *command]


@dataclass
class Group:
    """A running ``mlx.launch``: its process (leading a session of its own) and its output."""

    process: subprocess.Popen[str]
    stderr_lines: list[str] = field(default_factory=list)
    stdout_lines: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls, launch: Sequence[str], *, cwd: Path | None = None, own_session: bool = True
    ) -> Group:
        """Start ``launch``; without ``own_session`` it stays in this process's group, so a Ctrl-C
        in the terminal reaches every rank (``stop`` is then not for it)."""
        process = subprocess.Popen(
            list(launch),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=own_session,
            cwd=cwd,
        )
        group = cls(process)
        for stream, lines in (
            (process.stdout, group.stdout_lines),
            (process.stderr, group.stderr_lines),
        ):
            threading.Thread(target=_collect, args=(stream, lines), daemon=True).start()
        return group

    def wait_for_url(self, timeout_s: float) -> str:
        """The base URL rank 0 serves at, once it says so; RuntimeError if the group ends first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.stderr_lines):
                found = _SERVING.search(line)
                if found:
                    return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(
            "the cluster did not start serving:\n" + "".join(self.stderr_lines[-30:])
        )

    def stop(self, grace_s: float = 10.0) -> int:
        """Interrupt rank 0 and the launcher (Ctrl-C), then end whatever is left of the session."""
        if self.process.poll() is None:
            _signal_session(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_session(self.process.pid, signal.SIGKILL)  # any rank the launcher left behind
        return self.process.wait()


def _signal_session(leader: int, sig: signal.Signals) -> None:
    try:
        os.killpg(leader, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _collect(stream: object, lines: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)
