"""MCP tool servers through the real SDK: a test server over stdio and Streamable HTTP, a published
server (mcp-server-time), the built-in Files tool, and the faults a host must survive."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine_mlx.cancel import CancelToken
from engine_mlx.tools.config import (
    BUILTIN_FILES,
    ServerConfig,
    ToolConfigError,
    load_config,
    merge_imported,
    parse_config,
    save_config,
)
from engine_mlx.tools.consent import Consent, ConsentTable, load_consent, save_consent
from engine_mlx.tools.host import ServerState, ToolCancelled, ToolError, ToolHost, ToolTimeout

ROOT = Path(__file__).resolve().parent.parent
TEST_SERVER = ServerConfig(
    "test",
    command=sys.executable,
    args=(str(ROOT / "tests" / "mcp_server.py"),),
    env={"PYTHONPATH": str(ROOT), "GIVEN_BY_CONFIG": "yes"},
    timeout_s=20,
)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    host = ToolHost(tmp_path_factory.mktemp("mcp-logs"), max_result_chars=5000)
    os.environ["QWENDESK_TEST_SECRET"] = "do-not-leak"
    try:
        host.configure([TEST_SERVER])
        host.wait_ready(60)
    finally:
        del os.environ["QWENDESK_TEST_SECRET"]
    assert host.status()[0].state is ServerState.READY, host.status()
    yield host
    host.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_lists_tools_and_passes_exact_arguments(host):
    names = {t.name for t in host.tools()}
    assert {"echo", "slow", "big", "picture", "env", "pid", "crash"} <= names
    echo = next(t for t in host.tools() if t.name == "echo")
    assert echo.server == "test" and "text" in echo.input_schema["properties"]
    args = {"text": 'héllo <tag> "quoted"', "count": 3, "options": {"nested": [1, {"deep": None}]}}
    result = host.call("test", "echo", args)
    assert not result.is_error and json.loads(result.text) == args


def test_resources_are_listed_and_read_with_the_result_cap(host):
    listed = {r.uri: r for r in host.list_resources("test")}
    assert set(listed) == {"note://quokka", "note://big", "note://slow", "image://red"}
    note = listed["note://quokka"]
    assert (note.server, note.name, note.description, note.mime_type) == (
        "test",
        "quokka-note",
        "A note on quokkas.",
        "text/markdown",
    )
    (text,) = host.read_resource("test", "note://quokka")
    assert text.text == "The quokka lives on Rottnest Island.\nIt smiles.\n" and text.data is None
    (big,) = host.read_resource("test", "note://big")  # 300,000 characters, the host keeps 5,000
    assert (
        big.truncated and big.text.startswith("y" * 5000) and "the first 5,000 are kept" in big.text
    )
    (image,) = host.read_resource("test", "image://red")
    assert image.is_image and image.data.startswith(b"\x89PNG") and image.text is None
    with pytest.raises(ToolError, match="could not read note://nope: .*Unknown resource"):
        host.read_resource("test", "note://nope")
    with pytest.raises(ToolError, match="no running tool server named 'other'"):
        host.list_resources("other")


def test_a_read_past_the_timeout_or_the_size_cap_is_a_clear_error(host, monkeypatch):
    import engine_mlx.tools.context as context

    monkeypatch.setattr(context, "MAX_BLOB_BYTES", 16)
    with pytest.raises(ToolError, match="image://red is larger than"):
        host.read_resource("test", "image://red")
    with pytest.raises(ToolTimeout, match="did not read note://slow within 0.3 s"):
        host.read_resource("test", "note://slow", timeout=0.3)  # it takes 1.5 s
    deadline = time.monotonic() + 30
    while True:  # restarted, as after a call that timed out
        try:
            (note,) = host.read_resource("test", "note://quokka")
            break
        except ToolError:
            assert time.monotonic() < deadline, host.status()
            time.sleep(0.2)
    assert note.text.startswith("The quokka")


def test_prompts_are_listed_and_filled_in(host):
    prompts = {p.name: p for p in host.list_prompts("test")}
    assert set(prompts) == {"review", "greet"}
    review = prompts["review"]
    assert review.description == "Review a piece of code for one concern."
    assert [(a.name, a.required) for a in review.arguments] == [
        ("language", True),
        ("concern", False),
    ]
    filled = host.get_prompt("test", "review", {"language": "Python", "concern": "races"})
    assert filled.text == "Please review this Python code, looking for races." and not filled.parts
    assert host.get_prompt("test", "greet").text == "Hello there.\n\nHi! How can I help?"
    with pytest.raises(ToolError, match="could not give the prompt 'review'"):
        host.get_prompt("test", "review", {})  # its required argument is missing


def test_a_stdio_server_gets_the_allow_listed_environment_plus_its_own(host):
    assert host.call("test", "env", {"name": "GIVEN_BY_CONFIG"}).text == "yes"
    assert host.call("test", "env", {"name": "QWENDESK_TEST_SECRET"}).text == ""
    assert host.call("test", "env", {"name": "PATH"}).text == os.environ["PATH"]


def test_images_come_back_as_bytes(host):
    result = host.call("test", "picture", {})
    assert [i.mime_type for i in result.images] == ["image/png"]
    assert result.images[0].data.startswith(b"\x89PNG")


def test_a_huge_result_is_cut_and_says_so(host):
    result = host.call("test", "big", {"n": 50_000})
    assert result.truncated and result.text.startswith("x" * 5000)
    assert (
        "truncated by QwenDesk: the result was 50,000 characters; the first 5,000 are kept"
        in result.text
    )
    assert not host.call("test", "big", {"n": 10}).truncated


def test_unknown_tool_and_unknown_server_are_clear_errors(host):
    with pytest.raises(ToolError, match="has no tool named 'nope'"):
        host.call("test", "nope", {})
    with pytest.raises(ToolError, match="no running tool server named 'other'"):
        host.call("other", "echo", {})


def test_a_tool_error_is_a_result_the_model_can_read(host):
    result = host.call("test", "echo", {"count": "not a number"})  # invalid arguments
    assert result.is_error and "text" in result.text


def test_timeout_then_the_server_is_restarted_and_works(host):
    before = host.call("test", "pid", {}).text
    with pytest.raises(ToolTimeout, match="did not answer within 0.5 s"):
        host.call("test", "slow", {"seconds": 30}, timeout=0.5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            after = host.call("test", "pid", {}).text
            break
        except ToolError:
            time.sleep(0.2)
    assert after != before and not _alive(int(before))


def test_stop_cancels_a_running_call_at_once(host):
    cancel = CancelToken()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()
    with pytest.raises(ToolCancelled):
        host.call("test", "slow", {"seconds": 30}, cancel=cancel)
    assert time.monotonic() - started < 5
    assert host.call("test", "echo", {"text": "still here"}).text.find("still here") > 0


def test_a_crash_mid_call_is_an_error_and_the_server_comes_back(host):
    before = int(host.call("test", "pid", {}).text)
    with pytest.raises(ToolError, match="stopped during the call"):
        host.call("test", "crash", {})
    deadline = time.monotonic() + 30
    while host.status()[0].state is not ServerState.READY or not host.tools():
        assert time.monotonic() < deadline, host.status()
        time.sleep(0.1)
    after = int(host.call("test", "pid", {}).text)
    assert after != before and not _alive(before)


def test_close_leaves_no_server_process(tmp_path):
    host = ToolHost(tmp_path)
    host.configure([TEST_SERVER])
    host.wait_ready(60)
    pid = int(host.call("test", "pid", {}).text)
    assert _alive(pid)
    host.close()
    assert not _alive(pid)


def test_a_server_that_cannot_start_is_reported_not_hung(tmp_path):
    host = ToolHost(tmp_path)
    try:
        host.configure([ServerConfig("broken", command=str(tmp_path / "no-such-program"))])
        host.wait_ready(30)
        (status,) = host.status()
        assert status.state is ServerState.FAILED and status.error
        with pytest.raises(ToolError, match="not running"):
            host.call("broken", "anything", {}, timeout=1)
    finally:
        host.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streamable_http_server_on_loopback(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "mcp_server.py"), "--http", str(port)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = ToolHost(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        host.configure(
            [ServerConfig("web", url=f"http://127.0.0.1:{port}/mcp", headers={"X-Test": "1"})]
        )
        host.wait_ready(30)
        assert host.status()[0].state is ServerState.READY, host.status()
        assert (
            json.loads(host.call("web", "echo", {"text": "over http"}).text)["text"] == "over http"
        )
        assert "note://quokka" in {r.uri for r in host.list_resources("web")}
        assert "Rottnest" in host.read_resource("web", "note://quokka")[0].text
        assert host.get_prompt("web", "review", {"language": "Go"}).text.startswith(
            "Please review this Go code"
        )
    finally:
        host.close()
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------------------------------- Files


@pytest.fixture
def shared(tmp_path):
    root = tmp_path / "shared"
    (root / "sub").mkdir(parents=True)
    (root / "notes.md").write_text("The quokka lives on Rottnest.\n", encoding="utf-8")
    (root / "sub" / "deep.txt").write_text("nothing here\nbut a wombat\n", encoding="utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("quokka password 1234", encoding="utf-8")
    (root / "link-out.txt").symlink_to(secret)
    (root / "dir-out").symlink_to(tmp_path)
    return root, secret


def test_files_tool_reads_only_inside_the_shared_folders(tmp_path, shared):
    root, secret = shared
    host = ToolHost(tmp_path / "logs", files_roots=[root])
    try:
        host.configure([], builtin_files=True)
        host.wait_ready(30)
        assert {t.name for t in host.tools()} == {"list_folder", "read_text", "search"}
        listing = host.call(BUILTIN_FILES, "list_folder", {"path": str(root)}).text
        assert "notes.md" in listing and "sub/" in listing
        assert "Rottnest" in host.call(BUILTIN_FILES, "read_text", {"path": "notes.md"}).text
        assert "wombat" in host.call(BUILTIN_FILES, "read_text", {"path": "sub/deep.txt"}).text
        hits = host.call(BUILTIN_FILES, "search", {"query": "QUOKKA"}).text
        assert "notes.md:1:" in hits and "secret" not in hits and "1234" not in hits
        for outside in (
            "../secret.txt",
            str(secret),
            "link-out.txt",
            "dir-out/secret.txt",
            "sub/../../secret.txt",
        ):
            result = host.call(BUILTIN_FILES, "read_text", {"path": outside})
            assert result.is_error and "outside the shared folders" in result.text, outside
            assert "1234" not in result.text
    finally:
        host.close()


def test_files_tool_with_no_folder_says_how_to_share_one(tmp_path):
    host = ToolHost(tmp_path)
    try:
        host.configure([], builtin_files=True)
        host.wait_ready(30)
        result = host.call(BUILTIN_FILES, "read_text", {"path": "/etc/hostname"})
        assert result.is_error and "Settings ▸ Tools" in result.text
    finally:
        host.close()


# ---------------------------------------------------------------------------------------- config


def test_config_round_trip_and_errors_name_the_field(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
                    "web": {
                        "url": "https://example.invalid/mcp",
                        "headers": {"Authorization": "Bearer k"},
                        "timeout": 5,
                    },
                    "off": {"command": "x", "disabled": True},
                }
            }
        ),
        encoding="utf-8",
    )
    servers = load_config(path)
    assert [s.name for s in servers] == ["time", "web", "off"]
    assert (
        servers[0].args == ("mcp-server-time",)
        and servers[1].timeout_s == 5
        and not servers[2].enabled
    )
    save_config(path, servers)
    assert load_config(path) == servers
    assert load_config(tmp_path / "missing.json") == ()
    for bad, field in [
        ({"mcpServers": []}, "mcpServers"),
        ({"mcpServers": {"a": {"args": []}}}, 'either "command"'),
        ({"mcpServers": {"a": {"command": "x", "url": "http://h"}}}, 'either "command"'),
        ({"mcpServers": {"a": {"command": "x", "args": "not a list"}}}, '"args"'),
        ({"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}, '"env"'),
        ({"mcpServers": {"a": {"url": "file:///etc/passwd"}}}, '"url"'),
        ({"mcpServers": {"a": {"command": "x", "timeout": -1}}}, '"timeout"'),
        ({"mcpServers": {"a/b": {"command": "x"}}}, "server name"),
    ]:
        with pytest.raises(ToolConfigError, match=field):
            parse_config(bad)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ToolConfigError, match="not valid JSON"):
        load_config(path)
    path.write_text(json.dumps({"mcpServers": {BUILTIN_FILES: {"command": "x"}}}), encoding="utf-8")
    with pytest.raises(ToolConfigError, match="built-in Files"):
        load_config(path)


def test_import_adds_new_servers_disabled_and_keeps_existing_ones():
    mine = (ServerConfig("time", command="mine"),)
    theirs = (ServerConfig("time", command="theirs"), ServerConfig("git", command="git-mcp"))
    merged = merge_imported(mine, theirs)
    assert [(s.name, s.command, s.enabled) for s in merged] == [
        ("time", "mine", True),
        ("git", "git-mcp", False),
    ]


def test_consent_per_server_and_per_tool_persists(tmp_path):
    table = ConsentTable()
    assert table.decide("files", "read_text") is Consent.ASK
    table = table.with_server("files", Consent.ALLOW).with_tool("files", "search", Consent.BLOCK)
    assert table.decide("files", "read_text") is Consent.ALLOW
    assert table.decide("files", "search") is Consent.BLOCK
    save_consent(tmp_path / "c.json", table)
    assert load_consent(tmp_path / "c.json") == table
    (tmp_path / "bad.json").write_text('{"servers": {"x": "always"}}', encoding="utf-8")
    # a bad value: everything asks again
    assert load_consent(tmp_path / "bad.json") == ConsentTable()


# ---------------------------------------------------------------------------------------- CLI


def _cli(*args: str, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QWENDESK_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "engine_mlx", "mcp", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=ROOT,
    )


def test_cli_lists_and_calls_a_published_server_and_the_test_server(tmp_path):
    config = tmp_path / "mcp.json"
    save_config(
        config,
        (
            ServerConfig(
                "time",
                command=sys.executable,
                args=("-m", "mcp_server_time", "--local-timezone", "UTC"),
            ),
            TEST_SERVER,
        ),
    )
    listed = _cli("list", "--config", str(config), "--json", data=tmp_path / "data")
    assert listed.returncode == 0, listed.stderr
    tools = {(t["server"], t["name"]) for t in json.loads(listed.stdout)}
    assert {("time", "get_current_time"), ("time", "convert_time"), ("test", "echo")} <= tools
    called = _cli(
        "call",
        "--config",
        str(config),
        "time",
        "get_current_time",
        "--args",
        '{"timezone": "UTC"}',
        "--json",
        data=tmp_path / "data",
    )
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)
    assert not result["is_error"] and json.loads(result["text"])["timezone"] == "UTC"
    bad = _cli(
        "call", "--config", str(config), "test", "echo", "--args", "[1]", data=tmp_path / "data"
    )
    assert bad.returncode == 2 and "must be a JSON object" in bad.stderr


def test_cli_lists_resources_and_prompts_and_reads_a_resource(tmp_path):
    config = tmp_path / "mcp.json"
    save_config(config, (TEST_SERVER,))
    data = tmp_path / "data"
    listed = _cli("resources", "--config", str(config), "--json", data=data)
    assert listed.returncode == 0, listed.stderr
    assert {(r["server"], r["uri"], r["mime_type"]) for r in json.loads(listed.stdout)} == {
        ("test", "note://quokka", "text/markdown"),
        ("test", "note://big", "text/plain"),
        ("test", "note://slow", "text/plain"),
        ("test", "image://red", "image/png"),
    }
    read = _cli("read", "--config", str(config), "test", "note://quokka", data=data)
    assert read.returncode == 0 and read.stdout.startswith("The quokka lives on Rottnest Island.")
    image = _cli("read", "--config", str(config), "test", "image://red", "--json", data=data)
    (part,) = json.loads(image.stdout)
    assert part["mime_type"] == "image/png" and part["text"] is None and part["data"]
    missing = _cli("read", "--config", str(config), "test", "note://nope", data=data)
    assert missing.returncode == 2 and "Unknown resource" in missing.stderr
    assert "Traceback" not in missing.stderr
    prompts = _cli("prompts", "--config", str(config), data=data)
    assert prompts.returncode == 0, prompts.stderr
    assert "/review language=… [concern=…]  (test)" in prompts.stdout
    assert "Review a piece of code for one concern." in prompts.stdout


def test_cli_uses_the_data_folders_config_by_default(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    save_config(data / "mcp.json", (TEST_SERVER,))
    done = _cli("call", "test", "echo", "--args", '{"text": "default config"}', data=data)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "default config"
    (data / "mcp.json").write_text("[]", encoding="utf-8")
    broken = _cli("list", data=data)
    assert (
        broken.returncode == 2 and "mcp.json" in broken.stderr and "Traceback" not in broken.stderr
    )


def test_a_server_that_dies_while_idle_is_noticed_and_restarted(tmp_path, monkeypatch):
    import engine_mlx.tools.host as host_module

    monkeypatch.setattr(host_module, "PING_INTERVAL_S", 0.5)
    host = ToolHost(tmp_path)
    try:
        host.configure([TEST_SERVER])
        host.wait_ready(60)
        pid = int(host.call("test", "pid", {}).text)
        os.kill(pid, 9)
        deadline = time.monotonic() + 30
        while True:
            try:
                if int(host.call("test", "pid", {}).text) != pid:
                    break
            except ToolError:
                pass
            assert time.monotonic() < deadline, host.status()
            time.sleep(0.2)
    finally:
        host.close()
