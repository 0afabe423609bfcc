"""MCP resources and prompts as typed values: what a server offers as context (resources to attach, prompts
to start a message from), converted from the SDK's models with the host's size caps."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from engine_mlx.sizes import human_bytes

MAX_BLOB_BYTES = 20 << 20  # a binary resource (an image) larger than this is refused, not attached
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})


@dataclass(frozen=True)
class ResourceSpec:
    """A resource a server lists (a fixed URI; templates are not offered)."""

    server: str
    uri: str
    name: str
    description: str = ""
    mime_type: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "uri": self.uri,
            "name": self.name,
            "description": self.description,
            "mime_type": self.mime_type,
        }


@dataclass(frozen=True)
class ResourcePart:
    """One item of what a read (or a prompt) returned: text, or bytes (an image the app attaches as one)."""

    uri: str
    mime_type: str
    text: str | None = None
    data: bytes | None = None
    truncated: bool = False

    @property
    def is_image(self) -> bool:
        return self.data is not None and self.mime_type in IMAGE_TYPES


@dataclass(frozen=True)
class PromptArgument:
    name: str
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class PromptSpec:
    server: str
    name: str
    description: str = ""
    arguments: tuple[PromptArgument, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "name": self.name,
            "description": self.description,
            "arguments": [
                {"name": a.name, "description": a.description, "required": a.required}
                for a in self.arguments
            ],
        }


@dataclass(frozen=True)
class PromptText:
    """A prompt filled in: its messages' text (for the composer) and the images and resources it embeds."""

    text: str
    parts: tuple[ResourcePart, ...] = ()


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters, the cut said at the end (the host's cap on what the model reads)."""
    if len(text) <= limit:
        return text, False
    return (
        text[:limit] + f"\n[… truncated by QwenDesk: the result was {len(text):,} "
        f"characters; the first {limit:,} are kept]",
        True,
    )


def resource_spec(server: str, resource: Any) -> ResourceSpec:  # mcp_types.Resource
    return ResourceSpec(
        server,
        str(resource.uri),
        resource.title or resource.name or str(resource.uri),
        (resource.description or "").strip(),
        resource.mime_type or "",
    )


def resource_parts(contents: Any, max_chars: int) -> tuple[ResourcePart, ...]:
    """A ReadResourceResult's (or an embedded resource's) contents; raises ValueError for a blob too large
    or not base64."""
    out = []
    for item in contents:
        uri, mime = str(item.uri), item.mime_type or ""
        text = getattr(item, "text", None)
        if text is not None:
            capped, truncated = cap_text(text, max_chars)
            out.append(ResourcePart(uri, mime or "text/plain", text=capped, truncated=truncated))
            continue
        blob = getattr(item, "blob", "") or ""
        if len(blob) * 3 // 4 > MAX_BLOB_BYTES:
            raise ValueError(
                f"{uri} is larger than {human_bytes(MAX_BLOB_BYTES)}; QwenDesk attaches smaller ones"
            )
        out.append(ResourcePart(uri, mime, data=base64.b64decode(blob, validate=True)))
    return tuple(out)


def prompt_spec(server: str, prompt: Any) -> PromptSpec:  # mcp_types.Prompt
    return PromptSpec(
        server,
        prompt.name,
        (prompt.description or "").strip(),
        tuple(
            PromptArgument(a.name, (a.description or "").strip(), bool(a.required))
            for a in prompt.arguments or ()
        ),
    )


def prompt_text(result: Any, max_chars: int) -> PromptText:  # mcp_types.GetPromptResult
    """The messages' text, one paragraph each, and their images and embedded resources as parts."""
    texts: list[str] = []
    parts: list[ResourcePart] = []
    for message in result.messages:
        block = message.content
        kind = getattr(block, "type", "")
        if kind == "text":
            texts.append(block.text)
        elif kind == "image":
            parts.append(
                ResourcePart("", block.mime_type, data=base64.b64decode(block.data, validate=True))
            )
        elif kind == "resource":
            parts.extend(resource_parts([block.resource], max_chars))
        elif kind == "resource_link":
            texts.append(f"[resource {block.uri}]")
    text, _ = cap_text("\n\n".join(t.strip() for t in texts if t.strip()), max_chars)
    return PromptText(text, tuple(parts))
