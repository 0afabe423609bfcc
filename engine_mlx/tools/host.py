"""The MCP host: each enabled server runs as a task on one asyncio thread, off the caller's thread.

The caller (the app's worker, the CLI, the tool loop) uses blocking methods that are safe from any
thread: ``configure`` starts and stops servers, ``tools`` lists what they offer, ``call`` runs one tool
with the server's timeout, a size cap on the result and a CancelToken; ``list_resources``,
``read_resource``, ``list_prompts`` and ``get_prompt`` ask a server for context, with the same timeout
and caps. A server that crashes is
restarted with backoff; ``close`` stops them all, so no server process outlives the host. A server's
stderr goes to a log file the app can show.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any, TypeVar

from engine_mlx.cancel import CancelToken
from engine_mlx.errors import EngineError
from engine_mlx.tools.config import BUILTIN_FILES, ServerConfig
from engine_mlx.tools.context import (
    PromptSpec,
    PromptText,
    ResourcePart,
    ResourceSpec,
    cap_text,
    prompt_spec,
    prompt_text,
    resource_parts,
    resource_spec,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_RESULT_CHARS = 100_000  # a tool result the model reads; more is cut, and the cut is said
CANCEL_GRACE_S = 5.0  # a cancelled call still running after this restarts its server
PING_INTERVAL_S = 15.0  # an idle server is asked for its tools this often, so a crash is noticed
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
MAX_STDERR_BYTES = 1 << 20  # a server's stderr log is started afresh past this


class ToolError(EngineError):
    """A tool call did not run or did not finish: the message says why, for the user and the model."""


class ToolTimeout(ToolError):
    pass


class ToolCancelled(ToolError):
    pass


class ServerState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"  # will be retried after a backoff
    STOPPED = "stopped"


@dataclass(frozen=True)
class ToolSpec:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }

    def openai_tool(self) -> dict[str, Any]:
        """The tool as chat templates take it (OpenAI's function shape)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_schema,
            },
        }


@dataclass(frozen=True)
class ToolImage:
    mime_type: str
    data: bytes


@dataclass(frozen=True)
class ToolResult:
    text: str
    images: tuple[ToolImage, ...] = ()
    is_error: bool = False
    truncated: bool = False
    duration_s: float = 0.0


@dataclass(frozen=True)
class ServerStatus:
    name: str
    state: ServerState
    tool_count: int
    error: str
    stderr_log: Path | None


@dataclass
class _Connection:
    config: ServerConfig
    state: ServerState = ServerState.STARTING
    error: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    client: Any = None  # mcp.Client while READY
    task: asyncio.Task | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # stop or restart now
    stopping: bool = False
    ready: threading.Event = field(default_factory=threading.Event)  # first READY or FAILED
    errlog: Any = None  # the open stderr log of a stdio server's current process


class ToolHost:
    """Runs MCP servers; every public method may be called from any thread."""

    def __init__(
        self,
        log_dir: Path | None = None,
        *,
        max_result_chars: int = MAX_RESULT_CHARS,
        files_roots: Iterable[Path] = (),
    ):
        self.log_dir = log_dir
        self.max_result_chars = max_result_chars
        self.files_roots = tuple(Path(p) for p in files_roots)
        self._connections: dict[str, _Connection] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-host", daemon=True)
        self._thread.start()
        self._closed = False

    # ------------------------------------------------------------------------------ public, blocking

    def configure(self, servers: Iterable[ServerConfig], *, builtin_files: bool = False) -> None:
        """Run exactly the enabled ``servers`` (and the built-in Files tool if asked): start new ones,
        restart changed ones, stop the rest."""
        wanted = {s.name: s for s in servers if s.enabled}
        if builtin_files:
            wanted[BUILTIN_FILES] = ServerConfig(BUILTIN_FILES, command="(built-in)")
        self._run(self._configure(wanted), timeout=30)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every server has started or failed once (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        for conn in list(self._connections.values()):
            conn.ready.wait(max(0.0, deadline - time.monotonic()))

    def status(self) -> list[ServerStatus]:
        return [
            ServerStatus(c.config.name, c.state, len(c.tools), c.error, self._stderr_path(c.config))
            for c in self._connections.values()
        ]

    def tools(self) -> list[ToolSpec]:
        return [
            t for c in self._connections.values() if c.state is ServerState.READY for t in c.tools
        ]

    def call(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout: float | None = None,
        cancel: CancelToken | None = None,
    ) -> ToolResult:
        """Run ``tool`` on ``server``; ToolError (ToolTimeout, ToolCancelled) if it did not finish. A
        tool that ran and failed returns a result with ``is_error``."""
        conn = self._connections.get(server)
        if conn is None:
            raise ToolError(f"There is no running tool server named {server!r}.")
        limit = timeout if timeout is not None else conn.config.timeout_s
        started = time.monotonic()
        future: Future = asyncio.run_coroutine_threadsafe(
            self._call(conn, tool, arguments, limit), self._loop
        )
        woken = threading.Event()  # the call ended, or Stop
        future.add_done_callback(lambda _f: woken.set())
        unregister = cancel.on_cancel(woken.set) if cancel is not None else (lambda: None)
        try:
            woken.wait()
        finally:
            unregister()
        if not future.done():
            self._cancel_call(conn, future)
            raise ToolCancelled(f"Stopped: {server} ▸ {tool} was cancelled.")
        result = future.result()
        return ToolResult(
            result.text,
            result.images,
            result.is_error,
            result.truncated,
            time.monotonic() - started,
        )

    def list_resources(self, server: str, *, timeout: float | None = None) -> list[ResourceSpec]:
        """The resources ``server`` lists ([] if it offers none)."""

        async def listing(client: Any, limit: float) -> list[ResourceSpec]:
            if client.server_capabilities.resources is None:
                return []
            pages = await _all_pages(client.list_resources, lambda page: page.resources)
            return [resource_spec(server, r) for r in pages]

        return self._request(server, "list its resources", listing, timeout)

    def read_resource(
        self, server: str, uri: str, *, timeout: float | None = None
    ) -> tuple[ResourcePart, ...]:
        """Read one resource: text cut at the result cap (and said), images and other bytes as bytes."""

        async def read(client: Any, limit: float) -> tuple[ResourcePart, ...]:
            result = await client.read_resource(uri, cache_mode="bypass")
            return resource_parts(result.contents, self.max_result_chars)

        return self._request(server, f"read {uri}", read, timeout)

    def list_prompts(self, server: str, *, timeout: float | None = None) -> list[PromptSpec]:
        """The prompts ``server`` offers ([] if none)."""

        async def listing(client: Any, limit: float) -> list[PromptSpec]:
            if client.server_capabilities.prompts is None:
                return []
            pages = await _all_pages(client.list_prompts, lambda page: page.prompts)
            return [prompt_spec(server, p) for p in pages]

        return self._request(server, "list its prompts", listing, timeout)

    def get_prompt(
        self,
        server: str,
        name: str,
        arguments: dict[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> PromptText:
        """Fill in prompt ``name`` with ``arguments``: its text and the images and resources it embeds."""

        async def get(client: Any, limit: float) -> PromptText:
            result = await client.get_prompt(name, arguments or None)
            return prompt_text(result, self.max_result_chars)

        return self._request(server, f"give the prompt {name!r}", get, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop every server and the host's thread; no server process is left running."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._run(self._configure({}), timeout=timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    # ------------------------------------------------------------------------------ the host's thread

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        if self._closed and not self._thread.is_alive():
            raise ToolError("The tool host is closed.")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _configure(self, wanted: dict[str, ServerConfig]) -> None:
        for name, conn in list(self._connections.items()):
            if wanted.get(name) != conn.config:
                await self._stop(conn)
                del self._connections[name]
        for name, config in wanted.items():
            if name not in self._connections:
                conn = _Connection(config)
                self._connections[name] = conn
                conn.task = asyncio.create_task(self._serve(conn), name=f"mcp:{name}")

    async def _stop(self, conn: _Connection) -> None:
        conn.stopping = True
        conn.wake.set()
        if conn.task is not None:
            if conn.state is not ServerState.READY:
                # Still starting (a server that never answers the handshake does not see ``wake``), or
                # waiting out a backoff: cancel now, so its process is shut down before the host closes.
                conn.task.cancel()
            try:
                await asyncio.wait_for(conn.task, 15)
            except (TimeoutError, asyncio.CancelledError):
                conn.task.cancel()
                with contextlib.suppress(BaseException):
                    await conn.task
        conn.state = ServerState.STOPPED
        conn.ready.set()

    async def _serve(self, conn: _Connection) -> None:
        """Keep one server connected: connect, list its tools, ping while idle, reconnect after a crash."""
        failures = 0
        while not conn.stopping:
            conn.state, conn.wake = ServerState.STARTING, asyncio.Event()
            try:
                async with self._client(conn) as client:
                    conn.tools = await self._list_tools(conn.config, client)
                    conn.client, conn.state, conn.error, failures = client, ServerState.READY, "", 0
                    conn.ready.set()
                    while not conn.stopping and not conn.wake.is_set():
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(conn.wake.wait(), PING_INTERVAL_S)
                        if not conn.stopping and not conn.wake.is_set():
                            # a liveness check that every protocol version has (ping is gone in
                            # 2026-07-28), which also picks up a changed tool list
                            conn.tools = await self._list_tools(
                                conn.config, client, cache_mode="bypass"
                            )
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - a server's failure is shown, then retried
                conn.error = _describe(exc)
                conn.state = ServerState.FAILED
                log.warning("MCP server %s failed: %s", conn.config.name, conn.error)
            finally:
                conn.client = None
                conn.ready.set()
                if conn.errlog is not None:
                    conn.errlog.close()
                    conn.errlog = None
            if conn.stopping:
                break
            if conn.wake.is_set():  # a restart was asked for: at once
                continue
            delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
            failures += 1
            conn.wake = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(conn.wake.wait(), delay)
        conn.state = ServerState.STOPPED

    def _client(self, conn: _Connection) -> Any:  # mcp.Client
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client

        config = conn.config
        if config.name == BUILTIN_FILES:
            from engine_mlx.tools.files import files_server

            return Client(files_server(self.files_roots), mode="legacy")
        if config.is_stdio:
            params = StdioServerParameters(
                command=config.command,
                args=list(config.args),
                env=dict(config.env) or None,
                cwd=config.cwd,
            )
            conn.errlog = self._stderr_file(config)
            return Client(stdio_client(params, errlog=conn.errlog))
        if config.headers:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = httpx2.AsyncClient(headers=dict(config.headers), timeout=config.timeout_s)
            return Client(streamable_http_client(config.url, http_client=http))
        return Client(config.url)

    async def _list_tools(
        self, config: ServerConfig, client: Any, cache_mode: str = "use"
    ) -> list[ToolSpec]:
        out: list[ToolSpec] = []
        cursor = None
        for _ in range(100):  # a paginator that never ends cannot hang the start
            listing = await asyncio.wait_for(
                client.list_tools(cursor=cursor, cache_mode=cache_mode), config.timeout_s
            )
            out.extend(
                ToolSpec(config.name, t.name, t.description or "", dict(t.input_schema))
                for t in listing.tools
            )
            cursor = listing.next_cursor
            if not cursor:
                break
        return out

    def _request(
        self,
        server: str,
        what: str,
        ask: Callable[[Any, float], Awaitable[_T]],
        timeout: float | None,
    ) -> _T:
        """Ask ``server`` something besides a tool call (resources, prompts): ToolError if it cannot."""
        conn = self._connections.get(server)
        if conn is None:
            raise ToolError(f"There is no running tool server named {server!r}.")
        limit = timeout if timeout is not None else conn.config.timeout_s

        async def run() -> _T:
            client = await self._ready_client(conn, limit)
            try:
                return await asyncio.wait_for(ask(client, limit), limit)
            except TimeoutError:
                self._restart(conn)
                raise ToolTimeout(
                    f"{server} did not {what} within {limit:g} s; the server is being restarted."
                ) from None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _is_protocol_error(exc) or isinstance(exc, ValueError):
                    raise ToolError(f"{server} could not {what}: {_describe(exc)}") from None
                self._restart(conn)
                raise ToolError(
                    f"{server} could not {what}: the server stopped ({_describe(exc)}); "
                    "it is being restarted."
                ) from None

        return self._run(run(), timeout=limit + 15)

    async def _ready_client(self, conn: _Connection, timeout: float) -> Any:
        """The server's client once it runs; a server still starting gets a moment, a failed one is not
        waited for."""
        if conn.state is not ServerState.READY:
            for _ in range(int(min(timeout, 10) / 0.05)):
                if conn.state is ServerState.READY or conn.state is ServerState.FAILED:
                    break
                await asyncio.sleep(0.05)
        if conn.client is None:
            why = f": {conn.error}" if conn.error else ""
            raise ToolError(f"The tool server {conn.config.name!r} is not running{why}.")
        return conn.client

    async def _call(
        self, conn: _Connection, tool: str, arguments: dict[str, Any], timeout: float
    ) -> ToolResult:
        name = conn.config.name
        client = await self._ready_client(conn, timeout)
        if tool not in {t.name for t in conn.tools}:
            raise ToolError(f"The tool server {name!r} has no tool named {tool!r}.")
        try:
            result = await asyncio.wait_for(client.call_tool(tool, arguments), timeout)
        except TimeoutError:
            self._restart(conn)
            raise ToolTimeout(
                f"{name} ▸ {tool} did not answer within {timeout:g} s; the server is being restarted."
            ) from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection broke (a crash mid-call) or the server refused
            if not _is_protocol_error(exc):
                self._restart(conn)
            if not _is_protocol_error(exc):
                raise ToolError(
                    f"{name} ▸ {tool} failed: the server stopped during the call ({_describe(exc)}); "
                    "it is being restarted."
                ) from None
            raise ToolError(f"{name} ▸ {tool} failed: {_describe(exc)}") from None
        return self._convert(result)

    def _convert(self, result: Any) -> ToolResult:  # mcp_types.CallToolResult
        texts: list[str] = []
        images: list[ToolImage] = []
        for block in result.content:
            kind = getattr(block, "type", "")
            if kind == "text":
                texts.append(block.text)
            elif kind == "image":
                try:
                    images.append(
                        ToolImage(block.mime_type, base64.b64decode(block.data, validate=True))
                    )
                except ValueError:
                    texts.append(
                        f"[an image the server sent could not be decoded ({block.mime_type})]"
                    )
            elif kind == "resource":
                inner = block.resource
                texts.append(getattr(inner, "text", None) or f"[binary resource {inner.uri}]")
            elif kind == "resource_link":
                texts.append(f"[resource {block.uri}]")
            else:
                texts.append(f"[{kind or 'unknown'} content]")
        if not texts and result.structured_content is not None:
            texts.append(json.dumps(result.structured_content, ensure_ascii=False))
        text, truncated = cap_text("\n".join(texts), self.max_result_chars)
        return ToolResult(text, tuple(images), bool(result.is_error), truncated)

    def _restart(self, conn: _Connection) -> None:
        """Reconnect (a new process for a stdio server); calls made meanwhile wait for it."""
        conn.client, conn.state = None, ServerState.STARTING
        conn.wake.set()

    def _cancel_call(self, conn: _Connection, future: Future) -> None:
        """Cancel a running call; if it has not ended within the grace period, restart its server."""
        future.cancel()

        def check() -> None:
            if not future.done():
                self._restart(conn)

        def schedule() -> None:
            self._loop.call_later(CANCEL_GRACE_S, check)

        self._loop.call_soon_threadsafe(schedule)

    # ------------------------------------------------------------------------------ stderr logs

    def _stderr_path(self, config: ServerConfig) -> Path | None:
        if self.log_dir is None or not config.is_stdio or config.name == BUILTIN_FILES:
            return None
        return self.log_dir / f"mcp-{config.name}.stderr.log"

    def _stderr_file(self, config: ServerConfig) -> IO[str]:
        """The file a stdio server's stderr goes to (closed when its process ends)."""
        import os

        path = self._stderr_path(config)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                mode = "w" if path.exists() and path.stat().st_size > MAX_STDERR_BYTES else "a"
                return open(path, mode, encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError:
                log.warning("cannot write %s; the server's stderr is dropped", path)
        return open(os.devnull, "w")  # noqa: SIM115


def _is_protocol_error(exc: BaseException) -> bool:
    """The server answered with an error (the connection is fine), as opposed to a broken connection."""
    from mcp.shared.exceptions import MCPError
    from mcp_types.jsonrpc import CONNECTION_CLOSED

    return isinstance(exc, MCPError) and exc.code != CONNECTION_CLOSED


def _describe(exc: BaseException) -> str:
    """One line for a failure; an ExceptionGroup (anyio's task groups) is unwrapped to its first cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _all_pages(
    fetch: Callable[..., Awaitable[Any]], items: Callable[[Any], Any]
) -> list[Any]:
    """Every item of a paginated MCP listing (at most 100 pages: one that never ends cannot hang)."""
    found: list[Any] = []
    cursor = None
    for _ in range(100):
        page = await fetch(cursor=cursor, cache_mode="bypass")
        found.extend(items(page))
        cursor = page.next_cursor
        if not cursor:
            break
    return found
