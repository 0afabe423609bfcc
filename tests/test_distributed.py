"""One model over two ranks on 127.0.0.1 (MLX's ring backend, started by mlx.launch): greedy tokens
equal a single process, with pipeline and with tensor parallelism, and with images (rank 0's vision
tower, MRoPE positions on every rank), and follow-ups resume from snapshots on every rank. Each
group is launched once for the module. ``cluster check`` and ``cluster launch`` also reach this
machine over ssh as another Mac, through a private sshd (tests/ssh_host.py)."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from media_files import write_image

from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role
from engine_mlx.events import AnswerDelta, Finished, Stats, TokenLogprob
from engine_mlx.settings import GenerationSettings

START_TIMEOUT_S = 180
RANK_TIMEOUT_S = 10
MAX_TOKENS = 10
SLACK = 16  # prefilled tokens allowed beyond the new ones, as on one Mac
USERS = (
    "Hello there, what is MLX?",
    "Tell me more about the fox and the dog.",
    "And the cat on the mat?",
    "Summarize the video.",
)


@pytest.fixture(scope="module")
def even_model_dir(tmp_path_factory):
    """The tiny text model unquantized with an even vocabulary: tensor parallelism splits every size by 2."""
    from engine_mlx.tiny import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-even"), vision=False, bits=None, vocab_multiple=2
    )


def _hostfile(folder, hosts: tuple[str, ...] = ("127.0.0.1", "127.0.0.1")) -> str:
    """An mlx.launch hostfile of a rank per ssh name in ``hosts`` (each at 127.0.0.1 for the ring
    backend): 127.0.0.1 runs locally, any other name over ssh."""
    path = folder / "hosts.json"
    ranks = [{"ssh": host, "ips": ["127.0.0.1"]} for host in hosts]
    path.write_text(json.dumps({"backend": "ring", "hosts": ranks}))
    return str(path)


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory):
    """This machine over ssh as another Mac (tests/ssh_host.py); skips where sshd is not installed."""
    from ssh_host import private_sshd

    with private_sshd(tmp_path_factory.mktemp("sshd")) as host:
        yield host


def _serve_group(
    model_dir,
    parallel: str,
    *,
    hostfile: str | None = None,
    extra: tuple[str, ...] = (),
    launch_options: tuple[str, ...] = (),
):
    """Serve ``model_dir`` from two ranks: through ``cluster launch`` with ``hostfile``, else mlx.launch."""
    from engine_mlx.distributed.launch import Group, free_port_run, launch_command

    port = free_port_run(2)
    if hostfile is not None:
        command = [
            sys.executable,
            "-m",
            "engine_mlx",
            "cluster",
            "launch",
            "--hostfile",
            hostfile,
            "--model",
            str(model_dir),
            "--parallel",
            parallel,
            "--starting-port",
            str(port),
            *launch_options,
            "--",
            "--port",
            "0",
            *extra,
        ]
    else:
        command = launch_command(
            [
                "-m",
                "engine_mlx",
                "serve",
                "--model",
                str(model_dir),
                "--port",
                "0",
                "--parallel",
                parallel,
                *extra,
            ],
            ranks=2,
            starting_port=port,
        )
    group = Group.start(command)
    try:
        url = group.wait_for_url(START_TIMEOUT_S)
    except BaseException:
        group.stop()
        raise
    return group, url


@pytest.fixture(scope="module")
def pipeline_group(tiny_text_model_dir, tmp_path_factory):
    """The pipeline group, started by ``cluster launch`` (which may start it again once). Its last
    test kills rank 1."""
    group, url = _serve_group(
        tiny_text_model_dir,
        "pipeline",
        hostfile=_hostfile(tmp_path_factory.mktemp("hosts")),
        launch_options=("--restarts", "1"),
    )
    yield group, url
    group.stop()


@pytest.fixture(scope="module")
def vision_group(tiny_model_dir):
    """The tiny vision checkpoint over a pipeline of two ranks, started by mlx.launch."""
    group, url = _serve_group(tiny_model_dir, "pipeline")
    yield group, url
    group.stop()


@pytest.fixture(scope="module")
def tensor_group(even_model_dir):
    """The tensor group, started by mlx.launch, its watchdog at 10 s. Its last test freezes rank 1."""
    group, url = _serve_group(
        even_model_dir, "tensor", extra=("--rank-timeout", str(RANK_TIMEOUT_S))
    )
    yield group, url
    group.stop()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def _ask(url: str, messages: list[dict]) -> tuple[str, list[bytes], dict]:
    """The cluster's greedy answer: text, its tokens' bytes, usage."""
    with urllib.request.urlopen(url + "/models", timeout=30) as response:
        model = json.load(response)["data"][0]["id"]
    reply = _post(
        url,
        {
            "model": model,
            "messages": messages,
            "max_tokens": MAX_TOKENS,
            "temperature": 0.0,
            "presence_penalty": 0.0,
            "enable_thinking": False,
            "logprobs": True,
        },
    )
    choice = reply["choices"][0]
    tokens = [bytes(t["bytes"]) for t in choice["logprobs"]["content"]]
    return choice["message"]["content"], tokens, reply["usage"]


def _one_process(engine, messages: list[dict]) -> tuple[str, list[bytes], Stats]:
    """The same conversation's greedy answer from one process, with no snapshot to resume from
    (each image of a message as the file the server writes from its data: URI)."""
    settings = GenerationSettings(
        thinking=False, max_tokens=MAX_TOKENS, temperature=0.0, presence_penalty=0.0, logprobs=0
    )
    with tempfile.TemporaryDirectory() as folder:
        convo = Conversation(tuple(_message(m, Path(folder)) for m in messages), id="")
        events = list(engine.generate(convo, settings))
    assert isinstance(events[-1], Finished) and events[-1].error is None, events[-1]
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    tokens = [bytes(e.bytes) for e in events if isinstance(e, TokenLogprob)]
    return answer, tokens, next(e for e in events if isinstance(e, Stats))


def _message(message: dict, folder: Path) -> Message:
    """An API message (text, or a list of text and image_url parts) as the engine's Message."""
    role = {"user": Role.USER, "assistant": Role.ASSISTANT}[message["role"]]
    content = message["content"]
    if isinstance(content, str):
        return Message(role, content)
    images = []
    for part in content:
        if part["type"] == "image_url":
            path = folder / f"{len(list(folder.iterdir()))}.png"
            path.write_bytes(base64.b64decode(part["image_url"]["url"].split(",", 1)[1]))
            images.append(ImageAttachment(path))
    text = "\n".join(part["text"] for part in content if part["type"] == "text")
    return Message(role, text, tuple(images))


def _image_part(path: Path) -> dict:
    data = base64.b64encode(path.read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def _local_engine(model_dir):
    from engine_mlx.engine import Engine

    engine = Engine()
    engine.load(model_dir)
    return engine


def _turns(url: str, model_dir, users=USERS) -> list[tuple[int, int, int]]:
    """A turn per user message against the cluster, each answer equal to one process's; (prompt,
    cached, new) per turn."""
    engine = _local_engine(model_dir)
    messages: list[dict] = []
    previous_prompt = 0
    figures = []
    for turn, user in enumerate(users, 1):
        messages.append({"role": "user", "content": user})
        answer, tokens, usage = _ask(url, messages)
        expected, expected_tokens, stats = _one_process(engine, messages)
        # The API leaves out the log-probabilities of the answer's last tokens when they have no
        # text (a special token such as <|box_start|>): the count says they were generated.
        assert (answer, tokens) == (expected, expected_tokens[: len(tokens)]), turn
        assert usage["completion_tokens"] == stats.generated_tokens == len(expected_tokens), turn
        assert tokens  # an answer to compare
        prompt, cached = usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]
        assert prompt == stats.prompt_tokens
        if turn == 1:
            assert cached == 0
        else:
            new = prompt - previous_prompt  # the last answer and the new message
            assert cached > 0 and prompt - cached <= new + SLACK, (turn, usage, new)
        figures.append((prompt, cached, prompt - previous_prompt))
        previous_prompt = prompt
        messages.append({"role": "assistant", "content": answer})
    return figures


def test_pipeline_four_turns_equal_one_process_and_resume_on_every_rank(
    pipeline_group, tiny_text_model_dir
):
    group, url = pipeline_group
    assert url + "\n" in group.stdout_lines  # cluster launch prints the base URL alone on stdout
    figures = _turns(url, tiny_text_model_dir)
    assert [cached > 0 for _, cached, _ in figures] == [False, True, True, True]


def test_tensor_four_turns_equal_one_process_and_resume_on_every_rank(tensor_group, even_model_dir):
    figures = _turns(tensor_group[1], even_model_dir)
    assert [cached > 0 for _, cached, _ in figures] == [False, True, True, True]


def test_images_over_a_pipeline_equal_one_process_and_follow_ups_prefill_only_what_is_new(
    vision_group, tiny_model_dir, tmp_path
):
    """Rank 0 encodes each image; every rank places its tokens at one process's MRoPE positions (and
    the text after it ``rope_delta`` on): the greedy tokens equal one process's, turn after turn,
    and a follow-up after an image, or bringing another, prefills at most its new tokens + 16."""
    first = write_image(tmp_path / "first.png", size=(128, 96))
    second = write_image(tmp_path / "second.png", size=(64, 96), color=(30, 160, 40))
    users = (
        [_image_part(first), {"type": "text", "text": "What is in this picture?"}],
        "And what colors does it have?",
        [{"type": "text", "text": "Compare it with this one."}, _image_part(second)],
    )
    figures = _turns(vision_group[1], tiny_model_dir, users)
    assert [cached > 0 for _, cached, _ in figures] == [False, True, True]
    assert figures[0][0] > 40  # the image's tokens are in the prompt


def test_a_lost_rank_refuses_later_requests_with_503():
    """Once a rank is lost rank 0's engine raises ClusterError before any event: the API's 503."""
    from engine_mlx.errors import ClusterError
    from engine_mlx.server.errors import from_engine_error

    err = from_engine_error(ClusterError("The cluster lost a rank (rank 1 at 10.0.0.2: gone)."))
    assert (err.status, err.code) == (
        503,
        "cluster_rank_lost",
    ) and "rank 1 at 10.0.0.2" in err.message


def test_parallel_outside_a_launched_group_says_how_to_start_it(
    tiny_text_model_dir, monkeypatch, capsys
):
    from engine_mlx.cli import main

    monkeypatch.delenv("MLX_HOSTFILE", raising=False)
    monkeypatch.delenv("MLX_JACCL_COORDINATOR", raising=False)
    assert main(["chat", "--model", str(tiny_text_model_dir), "--parallel", "pipeline", "hi"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --parallel pipeline runs one process per rank: start it with "
        "'python -m engine_mlx cluster launch' or mlx.launch"
    )


def test_the_memory_estimate_of_one_rank_holds_its_share(tiny_text_model_dir):
    """``cluster check``, ``cluster probe`` and rank 0's load judge each Mac by its share: weights,
    KV cache and linear-attention state divided over the ranks, the fixed overhead on each."""
    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.memory import OVERHEAD_FIXED_BYTES, estimate_fit

    info = inspect_checkpoint(tiny_text_model_dir)
    whole, share = estimate_fit(info, 32768), estimate_fit(info, 32768, ranks=2)
    assert share.weights_bytes == whole.weights_bytes // 2
    assert (
        share.kv_bytes == whole.kv_bytes // 2
        and share.linear_state_bytes == whole.linear_state_bytes // 2
    )
    assert share.overhead_bytes >= OVERHEAD_FIXED_BYTES and share.total_bytes < whole.total_bytes


def _cluster_check(
    hostfile: str, model_dir, env: dict[str, str] | None = None, cwd=None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "engine_mlx",
            "cluster",
            "check",
            "--hostfile",
            hostfile,
            "--model",
            str(model_dir),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def test_cluster_check_on_a_loopback_hostfile(tiny_text_model_dir, tmp_path):
    """Every rank of the hostfile reports the same QwenDesk and model files, and its share fits; a
    folder missing on the hosts is named per rank; a file that is no hostfile says so."""
    hostfile = _hostfile(tmp_path)
    ready = _cluster_check(hostfile, tiny_text_model_dir)
    assert ready.returncode == 0, ready.stderr
    assert "The cluster is ready." in ready.stdout
    assert ready.stdout.count(" 1 weight files (headers ") == 2
    missing = _cluster_check(hostfile, tmp_path / "absent")
    assert missing.returncode == 2
    assert [line for line in missing.stderr.splitlines() if "no such folder" in line] == [
        f"error: rank {r} (127.0.0.1): {tmp_path / 'absent'}: no such folder" for r in (0, 1)
    ]
    (tmp_path / "bad.json").write_text("[1, 2]")
    bad = _cluster_check(str(tmp_path / "bad.json"), tiny_text_model_dir)
    assert bad.returncode == 2 and "not an mlx.launch hostfile" in bad.stderr


def _rank_lines(stdout: str) -> dict[str, str]:
    """``cluster check``'s line per rank, by host."""
    return {
        line.split("(", 1)[1].split(")", 1)[0]: line
        for line in stdout.splitlines()
        if line.startswith("rank ")
    }


def test_cluster_check_over_ssh_reports_each_rank_with_the_vision_tower_on_rank_0(
    ssh_host, tiny_model_dir, tmp_path
):
    """A rank on another host is probed over ssh (the sshd sees the login), in a model folder whose
    path the remote shell must get quoted; each rank reports the same version, code and headers, and
    its own share of memory: rank 0 with the vision tower, rank 1 without."""
    import shutil

    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.distributed.setup import code_hash, version
    from engine_mlx.memory import estimate_fit
    from engine_mlx.settings import DEFAULT_CONTEXT_TOKENS

    model = tmp_path / "Qwen 3.5 (tiny) it's $HOME"
    shutil.copytree(tiny_model_dir, model)
    logins = ssh_host.logins()
    ready = _cluster_check(_hostfile(tmp_path, ("127.0.0.1", "studio")), model, env=ssh_host.env())
    assert ready.returncode == 0, ready.stderr
    assert ssh_host.logins() == logins + 1
    lines = _rank_lines(ready.stdout)
    assert list(lines) == ["127.0.0.1", "studio"]
    headers = {line.split("(headers ")[1].split(")")[0] for line in lines.values()}
    assert len(headers) == 1
    info = inspect_checkpoint(model)
    for rank, line in enumerate(lines.values()):
        assert (
            line.startswith(f"rank {rank} (")
            and f"QwenDesk {version()} (code {code_hash()})" in line
        )
        share = estimate_fit(info, DEFAULT_CONTEXT_TOKENS, ranks=2, rank=rank)
        assert line.endswith(f"; {share.summary()}"), line
    assert "The cluster is ready." in ready.stdout


def test_the_vision_tower_counts_on_rank_0_only(tiny_model_dir, tiny_text_model_dir):
    """Rank 0 of a vision checkpoint holds the whole vision tower (distributed.vision) beside its
    part of the language model: the fit estimate of rank 0 counts it, the other ranks' do not."""
    import mlx.core as mx

    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.memory import estimate_fit, machine_memory, vision_weight_bytes

    tower = 0
    for path in tiny_model_dir.glob("*.safetensors"):
        weights = mx.load(str(path))
        tower += sum(w.nbytes for name, w in weights.items() if name.startswith("vision_tower."))
    info = inspect_checkpoint(tiny_model_dir)
    assert tower > 0 and info.vision_weight_bytes == tower
    machine = machine_memory()
    whole, first, second = (
        estimate_fit(info, 1024, machine, ranks=ranks, rank=rank)
        for ranks, rank in ((1, 0), (2, 0), (2, 1))
    )
    vision = vision_weight_bytes(info, machine)  # the tower (float32 on MLX's CPU backend)
    assert vision >= tower
    language = whole.weights_bytes - vision
    assert (first.weights_bytes, second.weights_bytes) == (language // 2 + vision, language // 2)
    text = inspect_checkpoint(tiny_text_model_dir)
    assert text.vision_weight_bytes == 0
    assert estimate_fit(text, 1024, ranks=2, rank=0) == estimate_fit(text, 1024, ranks=2, rank=1)


def test_cluster_check_over_ssh_leaves_its_input_to_the_next_command(
    ssh_host, tiny_text_model_dir, tmp_path
):
    """ssh reads its input unless told otherwise: a check inside a script must not eat the rest."""
    import shlex

    check = [sys.executable, "-m", "engine_mlx", "cluster", "check", "--model"]
    check += [str(tiny_text_model_dir), "--hostfile", _hostfile(tmp_path, ("studio",))]
    result = subprocess.run(
        ["/bin/sh", "-c", f"{shlex.join(check)}; cat"],
        input="the rest\n",
        capture_output=True,
        text=True,
        env=ssh_host.env(),
        timeout=300,
    )
    assert result.stdout.endswith("The cluster is ready.\nthe rest\n"), result


def test_cluster_check_over_ssh_names_a_host_whose_model_differs(
    ssh_host, tiny_text_model_dir, tmp_path
):
    """``other-mac`` has its own copy of the model folder, one shard's header changed (metadata
    only): the check names that rank and says what to do."""
    import shutil

    import mlx.core as mx

    model, copy = tmp_path / "model", tmp_path / "copy"
    shutil.copytree(tiny_text_model_dir, model)
    shutil.copytree(tiny_text_model_dir, copy)
    shard = next(copy.glob("*.safetensors"))
    mx.save_safetensors(str(shard), mx.load(str(shard)), metadata={"format": "mlx", "copy": "1"})
    ssh_host.copy_folder(model, copy)
    result = _cluster_check(
        _hostfile(tmp_path, ("127.0.0.1", "other-mac")), model, env=ssh_host.env()
    )
    assert result.returncode == 2, result.stdout
    assert result.stderr.splitlines() == [
        "error: rank 1 (other-mac): the model's weight files differ from the first host's: "
        "copy the same folder"
    ]


def test_cluster_check_says_in_one_line_when_a_host_cannot_be_reached(
    ssh_host, tiny_text_model_dir, tmp_path
):
    """A closed port: one line naming the rank, ssh's reason and what to do, at once (the connect
    timeout bounds a silent host; the subprocess's timeout stands for "no hang" here). "localhost"
    goes over ssh too, as mlx.launch does."""
    result = _cluster_check(
        _hostfile(tmp_path, ("studio-down",)), tiny_text_model_dir, env=ssh_host.env(), timeout=60
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "error: rank 0 (studio-down): could not log in over ssh (ssh: connect to"
    )
    assert "Connection refused): turn on Remote Login there" in line, line
    logins = ssh_host.logins()
    local = _cluster_check(
        _hostfile(tmp_path, ("127.0.0.1", "localhost")), tiny_text_model_dir, env=ssh_host.env()
    )
    assert local.returncode == 0, local.stderr
    assert ssh_host.logins() == logins + 1


def test_cluster_check_over_ssh_with_another_python_path_says_to_install_it_there(
    ssh_host, tiny_text_model_dir, tmp_path, monkeypatch
):
    from engine_mlx.distributed.setup import check

    monkeypatch.setenv("PATH", ssh_host.path)
    missing = str(tmp_path / "venv" / "bin" / "python")
    [problem] = check(
        Path(_hostfile(tmp_path, ("studio",))), tiny_text_model_dir, 1024, python=missing
    )
    assert problem.startswith(f"rank 0 (studio): {missing} is not there (")
    assert problem.endswith("): install QwenDesk at the same path on every host")


def test_cluster_check_over_ssh_runs_the_code_of_this_folder_and_names_other_code(
    ssh_host, tiny_text_model_dir, tmp_path
):
    """The remote probe starts in this folder, as mlx.launch starts a rank: run from a folder with
    its own (edited) engine_mlx, both ranks run that code. Given to this process only (PYTHONPATH
    from another folder), the remote rank runs other code, and the check names it."""
    import shutil

    import engine_mlx

    checkout = tmp_path / "checkout"
    shutil.copytree(
        Path(engine_mlx.__file__).parent,
        checkout / "engine_mlx",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    with (checkout / "engine_mlx" / "cli.py").open("a") as f:
        f.write("# an edit\n")
    hostfile = _hostfile(tmp_path, ("127.0.0.1", "studio"))
    env = {k: v for k, v in ssh_host.env().items() if k != "PYTHONPATH"}
    same = _cluster_check(hostfile, tiny_text_model_dir, env=env, cwd=checkout)
    assert same.returncode == 0, same.stderr
    elsewhere = _cluster_check(
        hostfile, tiny_text_model_dir, env={**env, "PYTHONPATH": str(checkout)}, cwd=tmp_path
    )
    assert elsewhere.returncode == 2
    [line] = elsewhere.stderr.splitlines()
    assert line.startswith("error: rank 1 (studio): QwenDesk ") and line.endswith(
        "): install the same one"
    ), line


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the remote rank's process in /proc"
)
def test_cluster_launch_with_a_rank_over_ssh_answers_as_one_process(
    ssh_host, tiny_text_model_dir, tmp_path, monkeypatch
):
    """``cluster launch`` of two ranks, rank 1's host an ssh alias: mlx.launch starts it over ssh
    (the ring backend between them on 127.0.0.1), and the greedy answers equal one process's, the
    follow-up resuming on both ranks."""
    monkeypatch.setenv("PATH", ssh_host.path)  # cluster launch, then mlx.launch, run ssh from PATH
    logins = ssh_host.logins()
    group, url = _serve_group(
        tiny_text_model_dir, "pipeline", hostfile=_hostfile(tmp_path, ("127.0.0.1", "studio"))
    )
    try:
        assert ssh_host.logins() == logins + 1  # rank 1 runs in an ssh session
        [remote_rank] = [
            pid for pid in ssh_host.session_processes() if b"engine_mlx" in _cmdline(pid)
        ]
        figures = _turns(url, tiny_text_model_dir, USERS[:2])
        assert [cached > 0 for _, cached, _ in figures] == [False, True]
    finally:
        group.stop()
    _wait_gone(remote_rank, 30)  # stopping the group ends the rank over ssh too


def test_cluster_launch_names_a_rank_ssh_cannot_reach_and_how_to_see_why(
    ssh_host, tiny_text_model_dir, tmp_path
):
    """mlx.launch runs ssh quietly: a rank it cannot reach only ends with ssh's exit code. cluster
    launch names the rank and its host, and the check that says why."""
    hostfile = _hostfile(tmp_path, ("127.0.0.1", "studio-down"))
    launch = [sys.executable, "-m", "engine_mlx", "cluster", "launch", "--hostfile", hostfile]
    launch += ["--model", str(tiny_text_model_dir), "--", "--port", "0"]
    result = subprocess.run(
        launch, capture_output=True, text=True, env=ssh_host.env(), timeout=START_TIMEOUT_S
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-2:] == [
        "Rank 1 (studio-down) could not be reached over ssh: run 'python -m engine_mlx cluster "
        f"check --hostfile {hostfile} --model {tiny_text_model_dir}' to see why.",
        "The cluster stopped.",
    ]


def test_an_older_qwendesk_report_is_named_as_another_version(tiny_text_model_dir):
    """A host running a QwenDesk from before ``code`` was reported: its report still reads, and the
    check says to install the same QwenDesk rather than that the answer is unexpected."""
    import dataclasses

    from engine_mlx.distributed.setup import probe, read_probe

    today = dataclasses.asdict(probe(tiny_text_model_dir, 2, 1024))
    assert read_probe(json.dumps(today)) == probe(tiny_text_model_dir, 2, 1024)
    older = {k: v for k, v in today.items() if k != "code"}
    assert read_probe(json.dumps({**older, "retired": 1})).code == "unknown"


def _rank_pid(group, rank: int) -> int:
    """The process of ``rank`` in the group's session (Linux /proc)."""
    import os
    from pathlib import Path

    session = os.getsid(group.process.pid)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != session:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
            args = (proc / "cmdline").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        if f"MLX_RANK={rank}".encode() in environ and b"engine_mlx" in args:
            return int(proc.name)
    raise AssertionError(f"no process for rank {rank}")


def _cmdline(pid: int) -> bytes:
    """The command line of ``pid`` (Linux /proc); empty once it has gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _wait_gone(pid: int, timeout_s: float) -> None:
    """Until ``pid`` has exited (gone, or a zombie its parent has not reaped yet)."""
    import time
    from pathlib import Path

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.2)
    raise AssertionError(f"process {pid} still runs after {timeout_s} s")


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the ranks' processes in /proc"
)
def test_killing_rank_1_mid_answer_ends_the_stream_with_an_error_naming_it(pipeline_group):
    """Rank 1 dies while rank 0 streams: the stream ends within seconds with an error naming rank 1
    and its host (the ring backend reports the lost peer; rank 0 turns it into the API's error); the
    launcher then ends the whole group, and ``cluster launch --restarts 1`` serves again."""
    import os
    import signal
    import time

    group, url = pipeline_group  # the module's group: it ends here
    with urllib.request.urlopen(url + "/models", timeout=30) as response:
        model = json.load(response)["data"][0]["id"]
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 4000,
        "temperature": 1.0,
        "seed": 1,
        "messages": [{"role": "user", "content": "Think step by step about the quick brown fox."}],
    }
    request = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    events: list[dict] = []
    with urllib.request.urlopen(request, timeout=10) as stream:  # every read within 10 s
        killed_at = None
        for raw in stream:
            line = raw.decode().strip()
            if not line.startswith("data: {"):
                continue
            events.append(json.loads(line[6:]))
            if killed_at is None and len(events) >= 3:
                os.kill(_rank_pid(group, 1), signal.SIGKILL)
                killed_at = time.monotonic()
    assert killed_at is not None, events
    error = events[-1].get("error")
    assert error is not None, events[-3:]
    assert "rank 1 at 127.0.0.1" in error["message"], error
    # mlx.launch stops rank 0 too (nothing waits forever), and cluster launch starts the group again.
    deadline = time.monotonic() + START_TIMEOUT_S
    while (
        sum("Serving " in line for line in group.stderr_lines) < 2 and time.monotonic() < deadline
    ):
        assert group.process.poll() is None, "".join(group.stderr_lines[-20:])
        time.sleep(0.2)
    assert any("starting it again (1 of 1)" in line for line in group.stderr_lines)
    again = (
        [line for line in group.stderr_lines if "Serving " in line][-1].split(" at ")[1].split()[0]
    )
    answer, tokens, _ = _ask(again, [{"role": "user", "content": "Hello again."}])
    assert tokens and group.stdout_lines.count(again + "\n") == 1


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the ranks' processes in /proc"
)
def test_a_frozen_rank_1_ends_the_group_within_the_rank_timeout(tensor_group):
    """Rank 1 stops (SIGSTOP: its connection stays open, so no error ever arrives): rank 0's watchdog
    names it and ends rank 0 once a model call has waited --rank-timeout; the stream ends rather than
    hanging, and mlx.launch ends the group."""
    import os
    import signal

    group, url = tensor_group
    with urllib.request.urlopen(url + "/models", timeout=30) as response:
        model = json.load(response)["data"][0]["id"]
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 4000,
        "temperature": 1.0,
        "seed": 1,
        "messages": [{"role": "user", "content": "Think step by step about the quick brown fox."}],
    }
    request = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    leader = _rank_pid(group, 0)
    frozen = None
    events = 0
    try:
        with urllib.request.urlopen(request, timeout=RANK_TIMEOUT_S + 20) as stream:
            for raw in stream:
                events += raw.startswith(b"data: {")
                if frozen is None and events >= 3:
                    frozen = _rank_pid(group, 1)
                    os.kill(frozen, signal.SIGSTOP)
    except (OSError, http.client.HTTPException):
        pass  # rank 0 ended mid-stream: the connection drops
    finally:
        if frozen is not None:
            # the watchdog ended rank 0; mlx.launch ends the group
            _wait_gone(leader, RANK_TIMEOUT_S + 30)
            os.kill(frozen, signal.SIGCONT)  # once rank 1 can take the SIGTERM it was sent
            group.process.wait(timeout=30)
    assert frozen is not None
    assert any(
        "no reply from rank 1 at 127.0.0.1 within 10 s" in line for line in group.stderr_lines
    ), "".join(group.stderr_lines[-20:])


def test_a_split_model_decodes_plainly_even_with_an_mtp_head(tiny_mtp_model_dir):
    """The other ranks replay rank 0's calls one at a time and know nothing of drafts: a speculative
    round on rank 0 would leave them waiting, so the split model never takes the head."""
    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.distributed.sharded import ShardedModel
    from engine_mlx.mtp_head import MtpMode

    head = inspect_checkpoint(tiny_mtp_model_dir).mtp
    assert head is not None
    split = ShardedModel.__new__(ShardedModel)  # the method alone: no group to build one here
    for mode in MtpMode:
        split.speculation = object()
        split.use_head(head, mode)
        assert split.speculation is None
