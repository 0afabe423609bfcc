"""MCP context for the composer, without widgets: the chat's servers' resources (attached from the + menu)
and prompts (the / commands), listed, read and filled in on the thread pool, so the GUI never waits on a
server. What a read or a prompt returns becomes files in the scratch folder, attached like any file."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PySide6.QtCore import QObject, Signal

from engine_mlx.text_files import TEXT_SUFFIXES
from engine_mlx.tools.context import PromptSpec, PromptText, ResourcePart, ResourceSpec
from engine_mlx.tools.host import ServerState, ToolError
from engine_mlx.tools.loop import image_suffix

from ..operations import Operation
from .attachments import AttachmentsController
from .tools import ToolsController

TEXT_TYPE_SUFFIX = {
    "text/markdown": ".md",
    "application/json": ".json",
    "text/html": ".html",
    "text/csv": ".csv",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "application/x-yaml": ".yaml",
    "text/x-python": ".py",
}


@dataclass(frozen=True)
class ServerResources:
    """One server's answer to a listing: its resources, or why there are none."""

    server: str
    resources: tuple[ResourceSpec, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class ServerPrompts:
    server: str
    prompts: tuple[PromptSpec, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class FilledPrompt:
    """A prompt filled in, for the composer: ``command`` is the text it replaces ("/review")."""

    command: str
    text: str


def attachment_name(name: str, uri: str, part: ResourcePart) -> str:
    """A file name for a read resource (the model sees it above the text): its own suffix if it has a
    readable one, else one from its MIME type."""
    stem = re.sub(r"[^\w.\- ]+", "-", name).strip(" .-") or "resource"
    if part.text is None:
        return Path(stem).stem + image_suffix(part.mime_type)
    if Path(stem).suffix.lower() in TEXT_SUFFIXES:
        return stem
    from_uri = PurePosixPath(uri.split("?")[0]).suffix.lower()
    if from_uri in TEXT_SUFFIXES:
        return stem + from_uri
    return stem + TEXT_TYPE_SUFFIX.get(part.mime_type, ".txt")


class ToolContext(QObject):
    """Lists, reads and fills in on the thread pool; results come back as signals on the GUI thread."""

    resourcesListed = Signal(str, ServerResources)  # chat id, one server's answer
    promptsListed = Signal(str, ServerPrompts)  # chat id, one server's answer
    # the resource's uri (its files are on their way to the composer)
    resourceAttached = Signal(str)
    promptFilled = Signal(FilledPrompt)
    errorOccurred = Signal(str)

    def __init__(
        self,
        tools: ToolsController,
        attachments: AttachmentsController,
        scratch_dir: Path,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self.tools = tools
        self.attachments = attachments
        self.scratch_dir = Path(scratch_dir)

    def servers(self, cid: str | None) -> list[str]:
        """The chat's servers that run now, in the order of Settings ▸ Tools."""
        chosen = self.tools.chat_servers(cid)
        running = {s.name for s in self.tools.status() if s.state is ServerState.READY}
        return [name for name in self.tools.available() if name in chosen and name in running]

    # --- resources -------------------------------------------------------------------------------
    def list_resources(self, cid: str | None) -> None:
        """Ask each of the chat's servers on its own, so a slow one holds up none of the others."""
        host = self.tools.host
        for server in self.servers(cid):

            def listing(_ctx, server=server) -> ServerResources:
                try:
                    return ServerResources(server, tuple(host.list_resources(server)))
                except ToolError as error:
                    return ServerResources(server, error=str(error))

            Operation(
                self,
                listing,
                lambda found: self.resourcesListed.emit(cid or "", found),
                label="Listing a tool server's resources",
            ).run_in_background()

    def attach_resource(self, resource: ResourceSpec) -> None:
        """Read ``resource`` and attach what it holds: text as a text file, an image as an image."""
        host, scratch = self.tools.host, self.scratch_dir

        def read(_ctx) -> list[tuple[Path, str]]:
            parts = host.read_resource(resource.server, resource.uri)
            return self._write_parts(parts, resource.name, resource.uri, scratch)

        def done(files: list[tuple[Path, str]]) -> None:
            for path, name in files:
                self.attachments.add_file(path, name, scratch=True)
            self.resourceAttached.emit(resource.uri)

        Operation(self, read, done, label=f"Reading {resource.name}").failure(
            lambda error: self.errorOccurred.emit(str(error))
        ).run_in_background()

    @staticmethod
    def _write_parts(
        parts: tuple[ResourcePart, ...], name: str, uri: str, scratch: Path
    ) -> list[tuple[Path, str]]:
        """Each part as a scratch file (deleted once attached) and the name the model sees it by."""
        files = []
        scratch.mkdir(parents=True, exist_ok=True)
        for part in parts:
            if part.text is None and not part.is_image:
                raise ToolError(
                    f"{part.uri or name} is {part.mime_type or 'binary data'}: QwenDesk attaches text "
                    "and images (PNG, JPEG, WebP, GIF) only."
                )
            shown = attachment_name(name, part.uri or uri, part)
            handle = tempfile.NamedTemporaryFile(
                prefix="resource-", suffix=Path(shown).suffix, dir=scratch, delete=False
            )
            with handle:
                handle.write(part.text.encode("utf-8") if part.text is not None else part.data)
            files.append((Path(handle.name), shown))
        return files

    # --- prompts ---------------------------------------------------------------------------------
    def list_prompts(self, cid: str | None) -> None:
        """Ask each of the chat's servers on its own, as for resources."""
        host = self.tools.host
        for server in self.servers(cid):

            def listing(_ctx, server=server) -> ServerPrompts:
                try:
                    return ServerPrompts(server, tuple(host.list_prompts(server)))
                except ToolError as error:
                    return ServerPrompts(server, error=str(error))

            Operation(
                self,
                listing,
                lambda found: self.promptsListed.emit(cid or "", found),
                label="Listing a tool server's prompts",
            ).run_in_background()

    def fill_prompt(self, prompt: PromptSpec, arguments: dict[str, str], command: str) -> None:
        """Ask the server for the prompt; its text goes to the composer, its images and resources are
        attached."""
        host, scratch = self.tools.host, self.scratch_dir

        def get(_ctx) -> tuple[PromptText, list[tuple[Path, str]]]:
            filled = host.get_prompt(prompt.server, prompt.name, arguments)
            return filled, self._write_parts(filled.parts, prompt.name, "", scratch)

        def done(result: tuple[PromptText, list[tuple[Path, str]]]) -> None:
            filled, files = result
            for path, name in files:
                self.attachments.add_file(path, name, scratch=True)
            self.promptFilled.emit(FilledPrompt(command, filled.text))

        Operation(self, get, done, label=f"Getting the prompt {prompt.name}").failure(
            lambda error: self.errorOccurred.emit(str(error))
        ).run_in_background()
