"""``python -m engine_mlx mcp list | call``: the MCP servers of an ``mcp.json``, from the command line."""

from __future__ import annotations

import argparse
import base64
import json
import sys

from engine_mlx.data_dir import MCP_CONFIG, default_data_dir
from engine_mlx.errors import EngineError
from engine_mlx.tools.config import ToolConfigError, load_config
from engine_mlx.tools.host import ServerState, ServerStatus, ToolHost


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
            print(f"{tool.server} ▸ {tool.name}\n    {tool.description.strip().splitlines()[0] if tool.description.strip() else ''}")
    for status in failed:
        print(f"error: the server {status.name!r} did not start: {status.error or status.state.value}", file=sys.stderr)
    return 2 if failed and not tools else 0


def _call(host: ToolHost, args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.args)
    except ValueError as e:
        raise EngineError(f"--args is not JSON ({e})") from None
    if not isinstance(arguments, dict):
        raise EngineError("--args must be a JSON object, e.g. '{\"timezone\": \"UTC\"}'")
    result = host.call(args.server, args.tool, arguments, timeout=args.timeout)
    if args.json:
        print(json.dumps({"server": args.server, "tool": args.tool, "text": result.text, "is_error": result.is_error,
                          "truncated": result.truncated, "duration_s": round(result.duration_s, 3),
                          "images": [{"mime_type": i.mime_type, "data": base64.b64encode(i.data).decode()}
                                     for i in result.images]}))
    else:
        print(result.text)
        for image in result.images:
            print(f"[image: {image.mime_type}, {len(image.data):,} bytes]")
    return 1 if result.is_error else 0
