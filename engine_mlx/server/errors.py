"""OpenAI-style errors: a status code and ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

from engine_mlx.errors import (
    ClusterError,
    ContextOverflowError,
    EngineError,
    MediaError,
    ModelNotLoadedError,
    UnsupportedInputError,
)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """A request the server answers with an error status and an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind  # the error's "type", when not the status's usual one

    def body(self) -> dict[str, Any]:
        return error_body(
            self.status, self.message, param=self.param, code=self.code, kind=self.kind
        )


def error_body(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    kind = kind or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def model_not_found(asked: str, served: str | None) -> ApiError:
    """OpenAI's 404 for a model id it does not serve."""
    return ApiError(
        404,
        f"The model {asked!r} does not exist; this server serves {served!r}.",
        param="model",
        code="model_not_found",
        kind="invalid_request_error",
    )


def context_overflow(error: ContextOverflowError) -> ApiError:
    """OpenAI's 400 for a prompt over the context, in its words (clients match them: litellm raises
    ContextWindowExceededError, aider shows its token-limit help)."""
    count = f"at least {error.tokens}" if error.at_least else str(error.tokens)
    return ApiError(
        400,
        f"This model's maximum context length is {error.limit} tokens. However, your "
        f"messages resulted in {count} tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


def from_engine_error(error: Exception) -> ApiError:
    """The HTTP status for an error the engine raised before its first event."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, ContextOverflowError):
        return context_overflow(error)
    if isinstance(error, ModelNotLoadedError):
        return ApiError(503, str(error), code="model_not_loaded")
    if isinstance(error, ClusterError):
        return ApiError(503, str(error), code="cluster_rank_lost")
    if isinstance(error, (MediaError, UnsupportedInputError)):
        return ApiError(400, str(error), param="messages", code="invalid_image")
    if isinstance(error, EngineError):
        return ApiError(400, str(error))
    return ApiError(
        500, f"The engine failed: {type(error).__name__}: {error}", code="internal_error"
    )
