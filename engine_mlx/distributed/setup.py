"""``cluster check`` and ``cluster launch``: is every host of a hostfile ready, and start the group.

``check`` runs ``cluster probe`` on every host of an ``mlx.launch`` hostfile the way ``mlx.launch``
starts a rank (locally for 127.0.0.1, otherwise over ssh, in this folder when the host has it, with
this Python's path) and compares what each reports: the QwenDesk version and code, the model
folder's safetensors header hashes, and whether this rank's share of the model fits its memory.
``launch`` runs ``serve --parallel`` on every rank through ``mlx.launch``, prints the base URL rank
0 serves at, and starts the group again when a rank dies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from engine_mlx.distributed.launch import Group
from engine_mlx.errors import EngineError

LOCAL_HOSTS = ("127.0.0.1",)  # as mlx.launch: any other name, "localhost" too, is reached over ssh
PROBE_TIMEOUT_S = 120
SSH_CONNECT_TIMEOUT_S = 10
SSH_FAILED = 255  # ssh's own exit code: it could not connect or log in
COMMAND_NOT_FOUND = 127  # the remote shell's: no such program (the Python path differs there)
RESTART_PAUSE_S = 2.0
_RANK_EXIT = re.compile(r"Node with rank (\d+) exited with code (-?\d+)")  # mlx.launch's warning
DEFAULT_RESTARTS = 0  # cluster launch ends when the group does, unless asked to start it again
EXIT_STOPPED = 2  # the group ended without a Ctrl-C (a rank died, or it could not start)


@dataclass(frozen=True)
class Probe:
    """What one host reports about itself and the model folder."""

    version: str
    code: str  # code_hash() there
    model_found: bool
    error: str  # why the folder is refused ("" when it is a usable checkpoint)
    header_hashes: dict[str, str]  # safetensors file name -> sha256 of its header
    fit_verdict: str  # memory.FitVerdict's value for this host's share
    fit_summary: str


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("qwendesk")
    except metadata.PackageNotFoundError:
        return "unknown"


def code_hash() -> str:
    """A short hash of the engine's source files: two hosts reporting the same version can still run
    different code (an edited checkout, another copy first on the Python path), and every rank must
    run the same protocol."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def probe(model_dir: Path, ranks: int, context_tokens: int, rank: int = 0) -> Probe:
    """This host's report as rank ``rank`` (``cluster probe``): run on every host by ``check``."""
    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.memory import estimate_fit
    from engine_mlx.safetensors_header import header_length

    if not model_dir.is_dir():
        return Probe(version(), code_hash(), False, f"{model_dir}: no such folder", {}, "", "")
    hashes = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as f:
            prefix = f.read(8)
            hashes[path.name] = hashlib.sha256(prefix + f.read(header_length(prefix))).hexdigest()
    try:
        info = inspect_checkpoint(model_dir)
    except EngineError as exc:
        return Probe(version(), code_hash(), True, str(exc), hashes, "", "")
    fit = estimate_fit(info, context_tokens, ranks=ranks, rank=rank)
    return Probe(version(), code_hash(), True, "", hashes, fit.verdict.value, fit.summary())


def hosts_of(hostfile: Path) -> list[str]:
    """The ssh names of the hostfile's ranks, in rank order (mlx.launch's own parser)."""
    from mlx._distributed_utils.common import Hostfile

    try:
        return [h.ssh_hostname for h in Hostfile.from_file(str(hostfile)).hosts]
    except ValueError as exc:
        raise EngineError(f"{hostfile}: not an mlx.launch hostfile ({exc})") from None


def check(
    hostfile: Path, model_dir: Path, context_tokens: int, *, python: str = sys.executable
) -> list[str]:
    """One line per host and a verdict; the problems found (none: the cluster is ready)."""
    from engine_mlx.memory import FitVerdict

    hosts = hosts_of(hostfile)
    here = version(), code_hash()
    problems: list[str] = []
    reports: list[Probe | None] = []
    for rank, host in enumerate(hosts):
        report, failure = _probe_host(host, python, model_dir, len(hosts), rank, context_tokens)
        reports.append(report)
        where = f"rank {rank} ({host})"
        if report is None:
            problems.append(f"{where}: {failure}")
            continue
        if (report.version, report.code) != here:
            problems.append(
                f"{where}: QwenDesk {report.version} (code {report.code}), this machine runs "
                f"{here[0]} (code {here[1]}): install the same one"
            )
        if not report.model_found or report.error:
            problems.append(f"{where}: {report.error or f'{model_dir}: no such folder'}")
            continue
        first = next((r for r in reports if r is not None and r.model_found and not r.error), None)
        if first is not None and report.header_hashes != first.header_hashes:
            problems.append(
                f"{where}: the model's weight files differ from the first host's: copy the same folder"
            )
        if report.fit_verdict == FitVerdict.DOES_NOT_FIT.value:
            problems.append(f"{where}: its share {report.fit_summary}")
        print(
            f"{where}: QwenDesk {report.version} (code {report.code}), "
            f"{len(report.header_hashes)} weight files (headers {_digest(report.header_hashes)}); "
            f"{report.fit_summary}"
        )
    return problems


def _digest(header_hashes: dict[str, str]) -> str:
    """One short hash of every weight file's header hash, to compare hosts at a glance."""
    return hashlib.sha256(json.dumps(header_hashes, sort_keys=True).encode()).hexdigest()[:12]


def _probe_host(
    host: str, python: str, model_dir: Path, ranks: int, rank: int, context_tokens: int
) -> tuple[Probe | None, str]:
    """The host's report, or why there is none (one sentence saying what to do)."""
    command = [python, "-m", "engine_mlx", "cluster", "probe", "--model", str(model_dir)]
    command += ["--ranks", str(ranks), "--rank", str(rank), "--context", str(context_tokens)]
    remote = host not in LOCAL_HOSTS
    if remote:
        # As mlx.launch runs a rank: in this folder if the host has it (a checkout at the same
        # path imports the same code), through the login shell, which gets one quoted string.
        script = f"cd {shlex.quote(os.getcwd())} 2>/dev/null; exec {shlex.join(command)}"
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}"]
        command = ["ssh", *options, host, script]
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,  # ssh would read this terminal's input
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except FileNotFoundError:
        if remote:
            return None, "ssh is not installed on this machine: install OpenSSH's client"
        return None, f"{python} is missing: run cluster check with the Python QwenDesk runs on"
    except subprocess.TimeoutExpired:
        return None, f"no report within {PROBE_TIMEOUT_S} s: check that the host is up and idle"
    last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    if remote and result.returncode == SSH_FAILED:
        return None, (
            f"could not log in over ssh ({last}): turn on Remote Login there and check that "
            f"'ssh {host}' logs in with a key, without a password or a question"
        )
    if result.returncode == COMMAND_NOT_FOUND:
        return (
            None,
            f"{python} is not there ({last}): install QwenDesk at the same path on every host",
        )
    if result.returncode != 0:
        return None, f"could not run QwenDesk ({last}): install the same QwenDesk on every host"
    try:
        return read_probe(result.stdout), ""
    except (ValueError, TypeError, AttributeError) as exc:
        return None, f"an unexpected report ({exc}): install the same QwenDesk on every host"


def read_probe(text: str) -> Probe:
    """``cluster probe``'s JSON, its last line (a shell profile may print before it over ssh); an
    older QwenDesk's may lack a field, and then its version and code (``unknown``) tell the user
    what to do."""
    answer = json.loads((text.strip().splitlines() or [""])[-1])
    known = {f.name for f in fields(Probe)}
    return Probe(**{"code": "unknown", **{k: v for k, v in answer.items() if k in known}})


def probe_json(model_dir: Path, ranks: int, context_tokens: int, rank: int = 0) -> str:
    return json.dumps(asdict(probe(model_dir, ranks, context_tokens, rank)))


def launch(
    hostfile: Path,
    model_dir: Path,
    parallel: str,
    serve_args: list[str],
    restarts: int,
    starting_port: int | None = None,
) -> int:
    """Run the group until a Ctrl-C (0) or until it has ended on its own ``restarts`` + 1 times."""
    from engine_mlx.distributed.launch import launch_command

    command = [
        "-m",
        "engine_mlx",
        "serve",
        "--model",
        str(model_dir),
        "--parallel",
        parallel,
        *serve_args,
    ]
    launch = launch_command(
        command,
        hostfile=hostfile,
        starting_port=starting_port,
        env=[f"{k}={v}" for k, v in _offline_env().items()],
    )
    attempt = 0
    while True:
        group = Group.start(launch, own_session=False)  # a Ctrl-C here reaches every rank too
        try:
            _relay(group)
        except KeyboardInterrupt:
            try:
                group.process.wait(10)
            except subprocess.TimeoutExpired:
                group.process.kill()
            return 0
        # Only a Ctrl-C (above) ends the group on purpose; mlx.launch exits 0 even when it stopped
        # the group because a rank died, so any other end is a failure.
        group.process.wait()
        for rank in _lost_over_ssh(group):
            host = hosts_of(hostfile)[rank]
            if host in LOCAL_HOSTS:
                continue
            print(
                f"Rank {rank} ({host}) could not be reached over ssh: run 'python -m engine_mlx "
                f"cluster check --hostfile {shlex.quote(str(hostfile))} --model "
                f"{shlex.quote(str(model_dir))}' to see why.",
                file=sys.stderr,
                flush=True,
            )
        if attempt >= restarts:
            print("The cluster stopped.", file=sys.stderr, flush=True)
            return EXIT_STOPPED
        attempt += 1
        print(
            f"The cluster stopped; starting it again ({attempt} of {restarts}).",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(RESTART_PAUSE_S)


def _relay(group: Group) -> None:
    """Pass the ranks' output on until the group ends; the base URL alone on stdout once it serves."""
    shown = 0
    url_shown = False
    while group.process.poll() is None or shown < len(group.stderr_lines):
        for line in group.stderr_lines[shown:]:
            sys.stderr.write(line)
            if not url_shown and "Serving " in line:
                print(group.wait_for_url(1), flush=True)
                url_shown = True
        shown = len(group.stderr_lines)
        for line in group.stdout_lines[:]:
            sys.stdout.write(line)
        group.stdout_lines.clear()
        time.sleep(0.1)


def _lost_over_ssh(group: Group) -> list[int]:
    """The ranks mlx.launch saw end with ssh's own exit code (its ssh runs quiet, so it says no more)."""
    ended = (_RANK_EXIT.search(line) for line in group.stderr_lines)
    return sorted({int(m.group(1)) for m in ended if m and int(m.group(2)) == SSH_FAILED})


def _offline_env() -> dict[str, str]:
    from engine_mlx import OFFLINE_ENV

    return dict(OFFLINE_ENV)
