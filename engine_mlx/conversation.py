"""The typed conversation the app and the CLI hand to the engine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .media import DEFAULT_VIDEO_FPS


class Role(str, Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"  # a tool's result, answering the assistant's tool call


@dataclass(frozen=True)
class ImageAttachment:
    path: Path


@dataclass(frozen=True)
class PdfAttachment:
    """Pages ``first_page``..``last_page`` (1-based, inclusive; None = to the end) become images."""

    path: Path
    first_page: int = 1
    last_page: int | None = None


@dataclass(frozen=True)
class VideoAttachment:
    """Frames sampled at ``fps`` between ``start_s`` and ``end_s`` (None = the end, clipped to the limit)."""

    path: Path
    fps: float = DEFAULT_VIDEO_FPS
    start_s: float = 0.0
    end_s: float | None = None


@dataclass(frozen=True)
class TextAttachment:
    """A text or code file: it enters the prompt as a fenced block headed by its name."""

    path: Path
    name: str = ""  # shown to the model; the path's name when empty

    @property
    def display_name(self) -> str:
        return self.name or Path(self.path).name


Attachment = ImageAttachment | PdfAttachment | VideoAttachment | TextAttachment


@dataclass(frozen=True)
class ToolCall:
    """A function the assistant called; ``arguments`` is a JSON object as text (as OpenAI carries it)."""

    name: str
    arguments: str = "{}"
    id: str = ""


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, description and JSON-schema parameters (JSON text)."""

    name: str
    description: str = ""
    parameters: str = "{}"


@dataclass(frozen=True)
class Message:
    role: Role
    text: str
    attachments: tuple[Attachment, ...] = ()
    # The assistant's reasoning, kept for display; the chat template decides whether the model sees it.
    thinking: str = ""
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls


# A conversation id that asks the engine to continue whichever recent conversation the prompt extends,
# found by token ids: API clients resend the whole history and carry no id.
ANONYMOUS = "*"


@dataclass(frozen=True)
class Conversation:
    """Messages in order. ``id`` names the conversation for the engine's state cache ("" = no reuse
    key; ANONYMOUS = continue whichever recent conversation the prompt extends)."""

    messages: tuple[Message, ...] = ()
    id: str = ""
    tools: tuple[Tool, ...] = ()  # functions the model may call, rendered by the chat template
    # The last message is an assistant turn cut short (by the token limit or Stop): the model carries
    # on from its end, its thinking included, instead of starting a new turn.
    continue_last: bool = False

    def with_message(self, message: Message) -> Conversation:
        return Conversation(self.messages + (message,), self.id, self.tools)

    @property
    def unfinished(self) -> Message | None:
        """The assistant turn to carry on, if ``continue_last``."""
        if not self.continue_last:
            return None
        if not self.messages or self.messages[-1].role is not Role.ASSISTANT:
            raise ValueError("continue_last needs an assistant message last")
        return self.messages[-1]

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        return tuple(a for m in self.messages for a in m.attachments)


__all__ = [
    "Attachment",
    "Conversation",
    "ImageAttachment",
    "Message",
    "PdfAttachment",
    "Role",
    "TextAttachment",
    "Tool",
    "ToolCall",
    "VideoAttachment",
]
