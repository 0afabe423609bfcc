"""``python -m engine_mlx mcp list | call | resources | read | prompts``: the MCP servers of an ``mcp.json``,
from the command line."""

from __future__ import annotations

import argparse
import base64
import json
import sys

from engine_mlx.data_dir import MCP_CONFIG, default_data_dir
from engine_mlx.errors import EngineError
from engine_mlx.sizes import human_bytes
from engine_mlx.tools.config import ToolConfigError, load_config
from engine_mlx.tools.consent import Consent, ConsentTable
from engine_mlx.tools.host import ServerState, ServerStatus, ToolError, ToolHost
from engine_mlx.tools.loop import (
    Approval,
    Approver,
    ConsentAnswer,
    ToolCallProposed,
    ToolLoop,
    deny_all,
)


def mcp_command(args: argparse.Namespace) -> int:
    config = args.config or default_data_dir() / MCP_CONFIG
    if args.config is not None and not args.config.is_file():
        raise ToolConfigError(f"{args.config}: no such file")
    servers = load_config(config)
    host = ToolHost(default_data_dir() / "logs", files_roots=args.files_roots)
    try:
        host.configure(servers, builtin_files=bool(args.files_roots))
        host.wait_ready(60)
        failed = [s for s in host.status() if s.state is not ServerState.READY]
        if args.mcp_command == "list":
            return _list(host, failed, args.json)
        if args.mcp_command == "resources":
            return _resources(host, failed, args.json)
        if args.mcp_command == "read":
            return _read(host, args)
        if args.mcp_command == "prompts":
            return _prompts(host, failed, args.json)
        return _call(host, args)
    finally:
        host.close()


def _list(host: ToolHost, failed: list[ServerStatus], as_json: bool) -> int:
    tools = host.tools()
    if as_json:
        print(json.dumps([t.to_json() for t in tools], indent=2))
    else:
        if not tools and not failed:
            print("No MCP servers are enabled (add them to mcp.json, or use --files DIR).")
        for tool in tools:
            print(
                f"{tool.server} ▸ {tool.name}\n    {tool.description.strip().splitlines()[0] if tool.description.strip() else ''}"
            )
    _report_failed(failed, [])
    return 2 if failed and not tools else 0


def _ready_servers(host: ToolHost) -> list[str]:
    return [s.name for s in host.status() if s.state is ServerState.READY]


def _report_failed(failed: list[ServerStatus], errors: list[str]) -> None:
    for status in failed:
        print(
            f"error: the server {status.name!r} did not start: {status.error or status.state.value}",
            file=sys.stderr,
        )
    for error in errors:
        print(f"error: {error}", file=sys.stderr)


def _resources(host: ToolHost, failed: list[ServerStatus], as_json: bool) -> int:
    found, errors = [], []
    for server in _ready_servers(host):
        try:
            found.extend(host.list_resources(server))
        except ToolError as error:
            errors.append(str(error))
    if as_json:
        print(json.dumps([r.to_json() for r in found], indent=2))
    else:
        if not found and not failed and not errors:
            print("The enabled MCP servers offer no resources.")
        for resource in found:
            kind = f" ({resource.mime_type})" if resource.mime_type else ""
            print(f"{resource.server} ▸ {resource.name}{kind}\n    {resource.uri}")
    _report_failed(failed, errors)
    return 2 if (failed or errors) and not found else 0


def _read(host: ToolHost, args: argparse.Namespace) -> int:
    parts = host.read_resource(args.server, args.uri)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "uri": p.uri,
                        "mime_type": p.mime_type,
                        "text": p.text,
                        "data": base64.b64encode(p.data).decode() if p.data is not None else None,
                        "truncated": p.truncated,
                    }
                    for p in parts
                ]
            )
        )
    else:
        for part in parts:
            if part.text is not None:
                print(part.text)
            else:
                print(f"[{part.mime_type or 'binary'}: {human_bytes(len(part.data or b''))}]")
    return 0


def _prompts(host: ToolHost, failed: list[ServerStatus], as_json: bool) -> int:
    found, errors = [], []
    for server in _ready_servers(host):
        try:
            found.extend(host.list_prompts(server))
        except ToolError as error:
            errors.append(str(error))
    if as_json:
        print(json.dumps([p.to_json() for p in found], indent=2))
    else:
        if not found and not failed and not errors:
            print("The enabled MCP servers offer no prompts.")
        for prompt in found:
            args = " ".join(
                f"{a.name}=…" if a.required else f"[{a.name}=…]" for a in prompt.arguments
            )
            print(f"/{prompt.name} {args}".rstrip() + f"  ({prompt.server})")
            if prompt.description:
                print(f"    {prompt.description.splitlines()[0]}")
    _report_failed(failed, errors)
    return 2 if (failed or errors) and not found else 0


def _call(host: ToolHost, args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.args)
    except ValueError as e:
        raise EngineError(f"--args is not JSON ({e})") from None
    if not isinstance(arguments, dict):
        raise EngineError('--args must be a JSON object, e.g. \'{"timezone": "UTC"}\'')
    result = host.call(args.server, args.tool, arguments, timeout=args.timeout)
    if args.json:
        print(
            json.dumps(
                {
                    "server": args.server,
                    "tool": args.tool,
                    "text": result.text,
                    "is_error": result.is_error,
                    "truncated": result.truncated,
                    "duration_s": round(result.duration_s, 3),
                    "images": [
                        {"mime_type": i.mime_type, "data": base64.b64encode(i.data).decode()}
                        for i in result.images
                    ],
                }
            )
        )
    else:
        print(result.text)
        for image in result.images:
            print(f"[image: {image.mime_type}, {len(image.data):,} bytes]")
    return 1 if result.is_error else 0


def allowed_consent(allow: str | None) -> ConsentTable:
    """``chat --allow-tools``: "all", or a comma-separated list of SERVER, TOOL or SERVER/TOOL names,
    allowed without asking. Everything else asks (interactive) or is denied (a scripted run)."""
    table = ConsentTable()
    for name in (n.strip() for n in (allow or "").split(",")):
        if not name:
            continue
        if name == "all":
            return ConsentTable(servers={"*": Consent.ALLOW})
        server, _, tool = name.partition("/")
        if tool:
            table = table.with_tool(server, tool, Consent.ALLOW)
        else:  # a server's name or a tool's
            table = table.with_server(name, Consent.ALLOW).with_tool("*", name, Consent.ALLOW)
    return table


def ask_on_terminal(proposed: ToolCallProposed, _cancel: object) -> ConsentAnswer:
    print(
        f"\nThe model wants to run {proposed.server} ▸ {proposed.tool} with\n"
        f"{json.dumps(proposed.arguments, indent=2, ensure_ascii=False)}\nRun it? [y]es / [a]lways / [N]o: ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    reply = sys.stdin.readline().strip().lower()
    if reply in ("a", "always"):
        return ConsentAnswer(Approval.ALWAYS)
    return ConsentAnswer(Approval.RUN_ONCE if reply in ("y", "yes") else Approval.DENY)


def chat_tool_loop(args: argparse.Namespace, engine: object) -> tuple[ToolLoop, ToolHost]:
    """``chat --mcp-config FILE [--files DIR] [--allow-tools ...]``: the tool loop for a scripted or
    interactive chat. Without --allow-tools a scripted run denies every call; an interactive one asks."""
    servers = load_config(args.mcp_config) if args.mcp_config else ()
    if args.mcp_config is not None and not args.mcp_config.is_file():
        raise ToolConfigError(f"{args.mcp_config}: no such file")
    host = ToolHost(default_data_dir() / "logs", files_roots=args.files_roots)
    host.configure(servers, builtin_files=bool(args.files_roots))
    host.wait_ready(60)
    for status in host.status():
        if status.state is not ServerState.READY:
            print(
                f"warning: the tool server {status.name!r} did not start: {status.error}",
                file=sys.stderr,
            )
    interactive = sys.stdin.isatty() and not args.json and args.prompt is None
    approve: Approver = ask_on_terminal if interactive else deny_all
    return ToolLoop(engine, host, consent=allowed_consent(args.allow_tools), approve=approve), host
