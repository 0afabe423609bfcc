"""One hierarchy of user-facing errors.

Every message is one sentence a person can act on: it names the file or folder and what is wrong.
The CLI prints ``str(error)``; the app shows it in the window. Tracebacks go to the log only.
"""

from __future__ import annotations

from pathlib import Path


class EngineError(Exception):
    """Base of every error the engine reports to a user."""


class CheckpointError(EngineError):
    """A model folder cannot be used (missing files, unsupported architecture, unsafe weights)."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedModelError(CheckpointError):
    """The folder holds a model of another family than Qwen3.5."""


class MediaError(EngineError):
    """An attachment cannot be read (corrupt, empty, unsupported, unreadable video)."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MemoryFitError(EngineError):
    """The model would not fit in this machine's memory; loading was refused."""


class ModelNotLoadedError(EngineError):
    """A generation was asked for while no model is loaded."""


class ClusterError(EngineError):
    """A rank of a model split over several machines stopped answering; the message names it."""


class UnsupportedInputError(EngineError):
    """The loaded model cannot take this input (for example an image on a text-only checkpoint)."""


class ContextOverflowError(EngineError):
    """The prompt does not fit in the model's context (``at_least``: ``tokens`` is a floor, counted
    without tokenizing)."""

    def __init__(
        self,
        tokens: int,
        limit: int,
        *,
        at_least: bool = False,
        what: str = "The conversation",
        remedy: str = "start a new chat or remove attachments",
    ):
        self.tokens, self.limit, self.at_least = tokens, limit, at_least
        super().__init__(
            f"{what} is {'at least ' if at_least else ''}{tokens:,} tokens, more than this "
            f"model's context of {limit:,}; {remedy}."
        )


class GenerationError(EngineError):
    """Generation failed inside MLX; the message says what happened."""


class ServerError(EngineError):
    """The QwenDesk server the app uses (Settings ▸ Engine) cannot be reached, refused the key, or
    answered with an error; the message names the server and what to do."""

    def __init__(self, message: str, status: int = 0):
        self.status = status  # the HTTP status, 0 when no answer came
        super().__init__(message)
