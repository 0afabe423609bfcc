"""A private sshd on 127.0.0.1 for the tests of the ssh path (``cluster check``, ``cluster launch``).

Everything lives in one temporary folder: sshd's config, host key, pid file and authorized keys, and
an ssh client config naming host aliases for it. An ``ssh`` first on ``PATH`` (``SshHost.env``) runs
the real client with that config, so QwenDesk and ``mlx.launch`` reach the aliases as they would
another Mac. The host key is in the client's known hosts: no question is ever asked.

Aliases: ``studio`` logs in to this machine; ``other-mac`` too, but sees its own copies of the
folders :meth:`SshHost.copy_folder` names (another Mac with a different model folder at the same
path), and its login prints a greeting first; ``studio-down`` is a closed port.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 30
ALIAS = "studio"
OTHER_MAC = "other-mac"
DOWN = "studio-down"

# Run as the forced command of the other-mac key: the session's command with each mapped path swapped
# for its copy (folders.map: "path<TAB>copy" a line), then run as sshd would run it, after a line on
# stdout as a chatty shell profile prints.
_OTHER_MAC_SHELL = """#!/bin/sh
echo "Welcome to other-mac"
command=$SSH_ORIGINAL_COMMAND
while IFS='\t' read -r path copy; do
    command=$(printf '%s' "$command" | sed "s|$path|$copy|g")
done < {map}
exec /bin/sh -c "$command"
"""


@dataclass(frozen=True)
class SshHost:
    folder: Path
    path: str  # PATH with the configured ssh first
    log: Path  # sshd's log (-e)
    pid: int  # sshd's

    def session_processes(self) -> list[int]:
        """Every process the sessions run (each session's sshd, shell and what it started)."""
        return _descendants(self.pid)

    def env(self) -> dict[str, str]:
        """This process's environment, with the ssh that knows the aliases first on PATH."""
        return {**os.environ, "PATH": self.path}

    def logins(self) -> int:
        """How many sessions sshd has accepted so far."""
        return self.log.read_text().count("Accepted publickey")

    def copy_folder(self, path: Path, copy: Path) -> None:
        """On ``other-mac``, ``path`` is ``copy``'s content."""
        with (self.folder / "folders.map").open("a") as f:
            f.write(f"{path}\t{copy}\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def _privilege_separation_dir(sshd: str, config: Path) -> None:
    """Running as root, sshd wants its (empty, root-owned) privilege separation folder, which the
    packaged service makes at boot: make it when ``sshd -t`` names it missing."""
    test = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True, text=True)
    missing = re.search(r"Missing privilege separation directory: (\S+)", test.stderr)
    if missing:
        os.makedirs(missing.group(1), mode=0o755, exist_ok=True)
    elif test.returncode != 0:
        raise RuntimeError(f"sshd refuses its test config: {test.stderr.strip()}")


def _parents() -> list[tuple[int, int]]:
    """(pid, parent pid) of every process: from /proc on Linux (no ps on a bare image), else ps."""
    proc = Path("/proc")
    if proc.is_dir():
        pairs = []
        for entry in proc.iterdir():
            try:
                stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            except OSError:
                continue
            if stat:
                pairs.append((int(entry.name), int(stat.rsplit(")", 1)[1].split()[1])))
        return pairs
    table = subprocess.run(
        ["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True
    )
    return [(int(a), int(b)) for a, b in (line.split() for line in table.stdout.splitlines())]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, parent in _parents():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@contextmanager
def private_sshd(folder: Path) -> Iterator[SshHost]:
    """Start the sshd (skipping the test where sshd is not installed); stop it and every session's
    process at the end."""
    sshd = shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None
    )
    ssh = shutil.which("ssh")
    if sshd is None or ssh is None or shutil.which("ssh-keygen") is None:
        pytest.skip("sshd is not installed (apt-get install openssh-server): the ssh path needs it")
    host_key = _keygen(folder / "host_key")
    user_key = _keygen(folder / "id")
    other_key = _keygen(folder / "id_other")
    (folder / "folders.map").write_text("")
    other_shell = folder / "other-mac.sh"
    other_shell.write_text(_OTHER_MAC_SHELL.format(map=shlex.quote(str(folder / "folders.map"))))
    other_shell.chmod(0o755)
    (folder / "authorized_keys").write_text(f'{user_key}\ncommand="{other_shell}" {other_key}\n')
    port, closed = _free_port(), _free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nAuthenticationMethods publickey\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n"
        f"AllowUsers {getpass.getuser()}\n"
    )
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    client = folder / "ssh_config"
    common = (
        f"  HostName 127.0.0.1\n  User {getpass.getuser()}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {folder / 'known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  LogLevel ERROR\n"
    )
    client.write_text(
        f"Host {ALIAS} localhost\n  Port {port}\n  IdentityFile {folder / 'id'}\n{common}"
        f"Host {OTHER_MAC}\n  Port {port}\n  IdentityFile {folder / 'id_other'}\n{common}"
        f"Host {DOWN}\n  Port {closed}\n  IdentityFile {folder / 'id'}\n{common}"
    )
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(ssh)} -F {shlex.quote(str(client))} "$@"\n')
    wrapper.chmod(0o755)
    _privilege_separation_dir(sshd, config)
    log = folder / "sshd.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Server listening" not in log.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                why = f"the test sshd did not start: {log.read_text().strip()}"
                if sys.platform == "darwin":  # a user's sshd: macOS may refuse it; CI runs Linux
                    pytest.skip(why)
                raise RuntimeError(why)
            time.sleep(0.1)
        yield SshHost(folder, f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", log, server.pid)
    finally:
        for pid in [*_descendants(server.pid), server.pid]:  # the sessions' processes too
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.wait()
