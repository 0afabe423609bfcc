"""An OpenAI chat-completions request body, checked and turned into the engine's typed input.

Every field is checked here, so a bad request gets a 400 that names the field before it reaches
the engine; the body as a whole has size, nesting-depth and integer-length limits, and no string in
it may hold a lone surrogate. Images must come inline as base64 ``data:`` URIs: the app is offline,
so a URL is refused and never fetched (engine_mlx.server.media keeps them on disk).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_mlx.conversation import (
    ANONYMOUS,
    Conversation,
    ImageAttachment,
    Message,
    Role,
    Tool,
    ToolCall,
)
from engine_mlx.forcing import ForcedText
from engine_mlx.grammar import JsonFormat, ToolCallStart, schema_error
from engine_mlx.server.config import ServerConfig
from engine_mlx.server.errors import ApiError
from engine_mlx.server.media import ImageBatch
from engine_mlx.settings import GenerationSettings
from engine_mlx.tool_calls import opening

MAX_STOP_SEQUENCES = 16
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_STOP_CHARS = 1000  # each is matched against the reply's tail at every step
MAX_JSON_DEPTH = 64  # objects and lists inside one another, the body itself included
MAX_INT_DIGITS = 32  # a 64-bit seed has 20
MAX_MESSAGES = 10_000
MAX_TOOLS = 512
# reasoning_effort -> thinking budget in tokens (None: think until done, within max_tokens)
EFFORT_BUDGETS: dict[str, int | None] = {"minimal": 256, "low": 1024, "medium": 4096, "high": None}
TOOL_CHOICES = ("none", "auto", "required")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Image formats taken inline, by their leading bytes.
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"))


@dataclass(frozen=True)
class ChatRequest:
    model: str
    conversation: Conversation
    settings: GenerationSettings
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()
    tools_on: bool = False  # parse tool calls out of the reply
    # OpenAI tool dicts, for typing arguments
    tool_schemas: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str = "auto"  # "auto", "none" (tools left out) or "required"
    forced_tool: str | None = None  # the declared tool a named tool_choice asks for

    @property
    def forced_call(self) -> bool:
        """tool_choice asks for a call: the engine writes (or constrains) its opening after the thinking."""
        return self.settings.forced is not None or self.settings.tool_call is not None


# ---------------------------------------------------------------------------------- the body


class _BadNumber:
    """A JSON number the body may not hold, found where it sits by ``_check_tree``."""

    def __init__(self, reason: str):
        self.reason = reason


def _parse_int(text: str) -> int | _BadNumber:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _BadNumber(
            f"is an integer of {digits:,} digits (at most {MAX_INT_DIGITS} are taken)"
        )
    return int(text)


def _parse_constant(text: str) -> _BadNumber:
    return _BadNumber(f"is {text}, which JSON does not have")


_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % (MAX_INT_DIGITS + 1))
_LONG_DIGITS_TEXT = re.compile(f"[0-9]{{{MAX_INT_DIGITS + 1}}}")


def parse_body(raw: bytes | bytearray) -> dict[str, Any]:
    body = _load_json(raw, None)
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _load_json(raw: bytes | bytearray | str, where: str | None) -> Any:
    """JSON text within the body's limits; ``where`` names it in errors (None: the body itself)."""
    what = f"'{where}'" if where else "The request body"
    # Integers go through _parse_int (a call each: slow on a body of millions) only when the text
    # has a run of digits long enough to be one too long.
    long_digits = (_LONG_DIGITS_TEXT if isinstance(raw, str) else _LONG_DIGITS).search(raw)
    hooks: dict[str, Any] = {"parse_int": _parse_int} if long_digits else {}
    try:
        value = json.loads(raw, parse_constant=_parse_constant, **hooks)
    except RecursionError:
        raise ApiError(
            400,
            f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels.",
            param=where,
            code="too_deep" if where else "invalid_json",
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ApiError(
            400, f"{what} is not valid JSON: {exc}.", param=where, code="invalid_json"
        ) from None
    _check_tree(value, (where,) if where else ())
    return value


def _field(path: tuple[str | int, ...]) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


_PLAIN = frozenset({int, bool, type(None), float, str})


def _plain(items: list[Any]) -> bool:
    """Only small numbers, finite floats, None and clean strings: checked at C speed, for the lists
    of millions a body can hold (a too-long integer is a _BadNumber, not an int)."""
    kinds = set(map(type, items))
    if not kinds <= _PLAIN or (float in kinds and (math.inf in items or -math.inf in items)):
        return False
    return str not in kinds or (kinds == {str} and not _has_surrogate("".join(items)))


def _bad_value(value: Any) -> str | None:
    if isinstance(value, str) and _has_surrogate(value):
        return (
            "holds a lone surrogate (\\ud800-\\udfff), which is not text; send valid UTF-16 pairs"
        )
    if isinstance(value, _BadNumber):
        return value.reason
    if isinstance(value, float) and not math.isfinite(value):
        return "is a number too large"
    return None


def _check_tree(root: Any, at: tuple[str | int, ...]) -> None:
    """Depth, numbers and strings of a whole JSON value found ``at``; a 400 names the field.
    Depth-first with one iterator per open container, so a list of millions of items costs no more
    memory than its depth."""
    if not isinstance(root, (dict, list)):
        reason = _bad_value(root)
        if reason:
            raise ApiError(
                400, f"'{_field(at)}' {reason}.", param=_field(at) or None, code="invalid_json"
            )
        return
    stack: list[tuple[Any, tuple[str | int, ...]]] = [
        (iter(root.items() if isinstance(root, dict) else enumerate(root)), at)
    ]
    while stack:
        items, path = stack[-1]
        for key, value in items:
            if isinstance(key, str) and _has_surrogate(key):
                raise ApiError(
                    400,
                    f"A key in '{_field(path) or 'the body'}' holds a lone surrogate.",
                    param=_field(path) or None,
                    code="invalid_string",
                )
            if isinstance(value, (dict, list)):
                if len(path) + 1 >= MAX_JSON_DEPTH:
                    where = _field((*path, key)[:4])
                    raise ApiError(
                        400,
                        f"'{where}' nests deeper than {MAX_JSON_DEPTH} levels; flatten it.",
                        param=where,
                        code="too_deep",
                    )
                if not value or (isinstance(value, list) and _plain(value)):
                    continue
                stack.append(
                    (
                        iter(value.items() if isinstance(value, dict) else enumerate(value)),
                        (*path, key),
                    )
                )
                break
            reason = _bad_value(value)
            if reason:
                where = _field((*path, key))
                code = "invalid_string" if isinstance(value, str) else "invalid_number"
                raise ApiError(400, f"'{where}' {reason}.", param=where, code=code)
        else:
            stack.pop()


# ---------------------------------------------------------------------------------- the request


def parse_chat_request(
    body: dict[str, Any], images: ImageBatch, config: ServerConfig = ServerConfig()
) -> ChatRequest:
    """The request, typed; its inline images go to ``images`` (the caller refuses or keeps them)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: use an id from GET /v1/models.", param="model")
    if _typed(body, "n", int, 1) != 1:
        raise ApiError(400, "Only n=1 is supported.", param="n")
    tools = _tools(body.get("tools"))
    choice, forced = _tool_choice(body.get("tool_choice"), tools)
    forced_name = _forced_name(choice, forced, tools)
    if choice == "none":
        tools = ()
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list.", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise ApiError(
            400,
            f"'messages' holds {len(messages):,} messages; at most {MAX_MESSAGES:,} are taken.",
            param="messages",
        )
    parsed = tuple(_message(m, i, images) for i, m in enumerate(messages))
    # vLLM's name for carrying on the last (assistant) message instead of answering it
    continue_last = _typed(body, "continue_final_message", bool, False)
    if continue_last and parsed[-1].role is not Role.ASSISTANT:
        raise ApiError(
            400,
            "'continue_final_message' needs an assistant message last.",
            param="continue_final_message",
        )
    stream = _typed(body, "stream", bool, False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object.", param="stream_options")
    return ChatRequest(
        model=model,
        conversation=Conversation(parsed, ANONYMOUS, tools, continue_last=continue_last),
        settings=_settings(body, config, forced_name, tools),
        stream=stream,
        include_usage=bool(options.get("include_usage")) and stream,
        stop=_stop(body.get("stop")),
        tools_on=bool(tools),
        tool_schemas=[
            {
                "type": "function",
                "function": {"name": t.name, "parameters": json.loads(t.parameters)},
            }
            for t in tools
        ],
        tool_choice=choice,
        forced_tool=forced,
    )


def _tool_choice(value: Any, tools: tuple[Tool, ...]) -> tuple[str, str | None]:
    """("none" | "auto" | "required", the named tool or None); anything else is a 400."""
    if value is None:
        return "auto", None
    if isinstance(value, str) and value in TOOL_CHOICES:
        if value == "required" and not tools:
            raise ApiError(
                400,
                "'tool_choice' is 'required' but the request declares no 'tools'.",
                param="tool_choice",
            )
        return value, None
    fn = value.get("function") if isinstance(value, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(name, str):
        raise ApiError(
            400,
            "'tool_choice' must be 'none', 'auto', 'required' or "
            "{'type': 'function', 'function': {'name': ...}}.",
            param="tool_choice",
        )
    if name not in {t.name for t in tools}:
        raise ApiError(
            400,
            f"'tool_choice' names the function {name!r}, which is not in 'tools'.",
            param="tool_choice",
        )
    return "required", name


# ---------------------------------------------------------------------------------- settings


def _typed(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any, *, where: str = ""
) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        value = object()  # a JSON true is not a number here
    if not isinstance(value, kinds):
        names = " or ".join("a number" if k in (int, float) else f"a {k.__name__}" for k in kinds)
        raise ApiError(400, f"'{where}{name}' must be {names}.", param=where + name)
    return value


def _number(
    body: dict[str, Any], name: str, lo: float, hi: float, *, integer: bool = False, where: str = ""
):
    value = _typed(body, name, int if integer else (int, float), None, where=where)
    if value is not None and not lo <= value <= hi:
        raise ApiError(
            400, f"'{where}{name}' must be between {lo:g} and {hi:g}.", param=where + name
        )
    return value


def _settings(
    body: dict[str, Any],
    config: ServerConfig,
    forced_name: str | None = None,
    tools: tuple[Tool, ...] = (),
) -> GenerationSettings:
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ApiError(
            400, "'chat_template_kwargs' must be an object.", param="chat_template_kwargs"
        )
    # the most specific wins: enable_thinking / thinking_budget, then reasoning_effort, then serve's default
    effort = _typed(body, "reasoning_effort", str, None)
    if effort is not None and effort != "none" and effort not in EFFORT_BUDGETS:
        raise ApiError(
            400,
            f"'reasoning_effort' must be one of none, {', '.join(EFFORT_BUDGETS)}.",
            param="reasoning_effort",
        )
    thinking = _typed(body, "enable_thinking", bool, None)
    if thinking is None:
        thinking = _typed(kwargs, "enable_thinking", bool, None, where="chat_template_kwargs.")
    if thinking is None:
        thinking = effort != "none" if effort is not None else config.thinking.on
    budget = _number(body, "thinking_budget", 0, 1 << 30, integer=True)
    if budget is None:
        budget = _number(
            kwargs, "thinking_budget", 0, 1 << 30, integer=True, where="chat_template_kwargs."
        )
    if budget is None:
        budget = EFFORT_BUDGETS.get(effort) if effort is not None else config.thinking.budget
    max_tokens = _number(body, "max_completion_tokens", 1, 1 << 30, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", 1, 1 << 30, integer=True)
    top_k = _number(body, "top_k", -1, 1 << 20, integer=True)
    logprobs = _typed(body, "logprobs", bool, False)
    top_logprobs = _number(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, integer=True)
    if top_logprobs is not None and not logprobs:
        raise ApiError(400, "'top_logprobs' needs 'logprobs': true.", param="top_logprobs")
    defaults = GenerationSettings()
    return GenerationSettings(
        thinking=thinking,
        thinking_budget=budget,
        max_tokens=max_tokens or defaults.max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        top_k=None if top_k is None or top_k < 0 else top_k,
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0),
        seed=_number(body, "seed", 0, (1 << 64) - 1, integer=True),
        context_limit=config.context_tokens,
        logprobs=(top_logprobs or 0) if logprobs else None,
        forced=ForcedText("\n\n" + opening(forced_name), end_turn=False, after_thinking=True)
        if forced_name
        else None,
        tool_call=ToolCallStart(tuple(t.name for t in tools)) if forced_name == "" else None,
        # a forced call is not JSON: the call wins, as in OpenAI's API
        response_format=_response_format(body.get("response_format"))
        if forced_name is None
        else None,
    )


def _response_format(value: Any) -> JsonFormat | None:
    """OpenAI's response_format: text, any JSON object, or a JSON schema. A schema the grammar engine
    cannot enforce is a 400 with ``strict``; without it the answer is still constrained to an object."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonFormat()
    if kind != "json_schema":
        raise ApiError(
            400,
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
            param="response_format.type",
        )
    spec = value.get("json_schema")
    schema = spec.get("schema", {}) if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise ApiError(
            400,
            "'response_format.json_schema.schema' must be a JSON schema object.",
            param="response_format.json_schema.schema",
        )
    strict = _typed(spec, "strict", bool, False, where="response_format.json_schema.")
    error = schema_error(schema)
    if error and strict:
        raise ApiError(
            400,
            f"'response_format.json_schema.schema' cannot be enforced: {error}; "
            "fix the schema or send strict: false.",
            param="response_format.json_schema.schema",
        )
    return JsonFormat() if error else JsonFormat(json.dumps(schema))


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "'stop' must be a string or a list of non-empty strings.", param="stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ApiError(400, f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences.", param="stop")
    if max(map(len, stops)) > MAX_STOP_CHARS:
        raise ApiError(
            400, f"Each 'stop' sequence has at most {MAX_STOP_CHARS:,} characters.", param="stop"
        )
    return tuple(stops)


# ---------------------------------------------------------------------------------- tools


def _tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ApiError(400, "'tools' must be a list.", param="tools")
    if len(value) > MAX_TOOLS:
        raise ApiError(
            400,
            f"'tools' holds {len(value):,} tools; at most {MAX_TOOLS} are taken.",
            param="tools",
        )
    out = []
    for i, tool in enumerate(value):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(fn, dict)
        ):
            raise ApiError(
                400,
                f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}.",
                param=f"tools[{i}]",
            )
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(
                400, f"tools[{i}].function.name is required.", param=f"tools[{i}].function.name"
            )
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise ApiError(
                400,
                f"tools[{i}].function.parameters must be a JSON schema object.",
                param=f"tools[{i}].function.parameters",
            )
        description = fn.get("description") or ""
        out.append(Tool(name, str(description), json.dumps(params, ensure_ascii=False)))
    return tuple(out)


def _forced_name(choice: str, named: str | None, tools: tuple[Tool, ...]) -> str | None:
    """The call the engine forces: a function's name, "" for any of the tools ("required" with several),
    or None (the model chooses: "auto", "none")."""
    if choice != "required":
        return None
    if named is not None:
        return named
    return tools[0].name if len(tools) == 1 else ""


def _tool_calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ApiError(400, f"{where}.tool_calls must be a list.", param=f"{where}.tool_calls")
    calls = []
    for j, call in enumerate(value):
        here = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ApiError(400, f"{here}.function.name is required.", param=here)
        arguments = fn.get("arguments") or "{}"
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        ok = isinstance(arguments, str) and isinstance(
            _load_json(arguments, f"{here}.function.arguments"), dict
        )
        if not ok:
            raise ApiError(
                400, f"{here}.function.arguments must be a JSON object as text.", param=here
            )
        calls.append(ToolCall(fn["name"], arguments, str(call.get("id") or "")))
    return tuple(calls)


# ---------------------------------------------------------------------------------- messages

_ROLES = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
    "tool": Role.TOOL,
}


def _message(m: Any, i: int, images: ImageBatch) -> Message:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise ApiError(400, f"{where} must be an object.", param=where)
    role = _ROLES.get(m.get("role"))
    if role is None:
        raise ApiError(
            400, f"{where}.role must be one of {', '.join(_ROLES)}.", param=f"{where}.role"
        )
    # a tool's result may hold images (an MCP tool's screenshot), as the app's own tool loop gives them
    text, paths = _content(
        m.get("content"), where, images, images_ok=role in (Role.USER, Role.TOOL)
    )
    thinking = ""
    if role is Role.ASSISTANT:
        thinking = m.get("reasoning_content") or m.get("reasoning") or ""
        if not isinstance(thinking, str):
            raise ApiError(
                400,
                f"{where}.reasoning_content must be a string.",
                param=f"{where}.reasoning_content",
            )
    calls = _tool_calls(m.get("tool_calls"), where) if role is Role.ASSISTANT else ()
    return Message(
        role, text, tuple(ImageAttachment(p) for p in paths), thinking=thinking, tool_calls=calls
    )


def _content(
    content: Any, where: str, batch: ImageBatch, *, images_ok: bool
) -> tuple[str, list[Path]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise ApiError(
            400, f"{where}.content must be a string or a list of parts.", param=f"{where}.content"
        )
    texts: list[str] = []
    images: list[Path] = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            if not images_ok:
                raise ApiError(
                    400, f"{here}: images go in user and tool messages only.", param=here
                )
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            images.append(_inline_image(url, here, batch))
        else:
            raise ApiError(
                400,
                f"{here}: unsupported content part {kind!r} (text and image_url are).",
                param=here,
            )
    return "\n".join(texts), images


def _inline_image(url: Any, where: str, batch: ImageBatch) -> Path:
    if not isinstance(url, str) or not url:
        raise ApiError(400, f"{where}.image_url.url is required.", param=where)
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url else "that"
        raise ApiError(
            400,
            f"{where}: QwenDesk is offline and does not fetch {scheme} URLs; send the image inline "
            "as a base64 data: URI (data:image/png;base64,...).",
            param=where,
            code="remote_image_refused",
        )
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ApiError(400, f"{where}: the data: URI must be base64-encoded.", param=where)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where}: the data: URI is not valid base64.", param=where) from None
    suffix = _image_suffix(data)
    if suffix is None:
        raise ApiError(
            400, f"{where}: the image is not PNG, JPEG or WebP.", param=where, code="invalid_image"
        )
    return batch.add(data, suffix)


def _image_suffix(data: bytes) -> str | None:
    for magic, suffix in _IMAGE_MAGIC:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None
