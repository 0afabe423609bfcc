"""A small MCP server for the tests, written with the official SDK: stdio (default) or Streamable HTTP
(``--http PORT``). Its tools exercise what the host must handle: exact arguments, a slow call, a huge
result, an image, a crash mid-call, and the environment it was given. Its resources (a text note, a big
text, a PNG) and prompts (with and without arguments) are the context the composer offers."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os

from mcp.server.mcpserver import MCPServer
from mcp.types import ImageContent

server = MCPServer("qwendesk-test", log_level="WARNING")


@server.tool(description="Return the arguments it was given, as JSON.")
def echo(text: str, count: int = 1, options: dict | None = None) -> str:
    return json.dumps({"text": text, "count": count, "options": options}, sort_keys=True)


@server.tool(description="Sleep, then say so.")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(description="A result of n characters.")
def big(n: int) -> str:
    return "x" * n


@server.tool(description="A small red PNG.")
def picture() -> list:
    return [
        ImageContent(type="image", data=base64.b64encode(red_png()).decode(), mime_type="image/png")
    ]


@server.tool(description="The value of an environment variable ('' if unset).")
def env(name: str) -> str:
    return os.environ.get(name, "")


@server.tool(description="This server's process id.")
def pid() -> str:
    return str(os.getpid())


@server.tool(description="Exit the server process at once, mid-call.")
def crash() -> str:
    os._exit(3)


def red_png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 3), (255, 0, 0)).save(out, format="PNG")
    return out.getvalue()


NOTE = "The quokka lives on Rottnest Island.\nIt smiles.\n"


@server.resource(
    "note://quokka", name="quokka-note", description="A note on quokkas.", mime_type="text/markdown"
)
def quokka_note() -> str:
    return NOTE


@server.resource("note://big", name="big-note", mime_type="text/plain")
def big_note() -> str:
    return "y" * 300_000


@server.resource("note://slow", name="slow-note", mime_type="text/plain")
async def slow_note() -> str:
    await asyncio.sleep(1.5)
    return "Worth the wait."


@server.resource("image://red", name="red-square", mime_type="image/png")
def red_image() -> bytes:
    return red_png()


@server.prompt(description="Review a piece of code for one concern.")
def review(language: str, concern: str = "bugs") -> str:
    return f"Please review this {language} code, looking for {concern}."


@server.prompt(description="Say hello, in two messages.")
def greet() -> list:
    from mcp.server.mcpserver.prompts.base import AssistantMessage, UserMessage

    return [UserMessage("Hello there."), AssistantMessage("Hi! How can I help?")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, help="serve Streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run("stdio")
