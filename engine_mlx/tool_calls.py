"""Qwen3.5's XML tool calls, out of the reply text: for the API's OpenAI ``tool_calls`` and the app's tool loop.

The model writes ``<tool_call>\\n<function=NAME>\\n<parameter=P>\\nvalue\\n</parameter>\\n</function>\\n</tool_call>``
(the Qwen3-Coder format its chat template teaches). mlx-lm's ``qwen3_coder`` parser reads one call
and types each value by the tool's JSON schema; this module finds the calls and keeps that parser's
use in one place (tests/test_api_server.py pins its contract).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from engine_mlx.runtime_imports import ensure_runtime_imported

log = logging.getLogger(__name__)

START = "<tool_call>"
END = "</tool_call>"
_BLOCK = re.compile(re.escape(START) + r"(.*?)(?:" + re.escape(END) + r"|\Z)", re.DOTALL)


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object as text
    id: str

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        if index is not None:
            out["index"] = index
        return out


def opening(name: str) -> str:
    """The start of a call of ``name``, as the engine forces it (``tool_choice``)."""
    return f"{START}\n<function={name}>\n"


def call_markup(name: str, arguments: str) -> str:
    """A call as the model writes it (what ``parse_tool_calls`` reads back): ``arguments`` is a JSON
    object as text; string values go in raw, others as JSON."""
    try:
        values = json.loads(arguments or "{}")
    except ValueError:
        values = {}
    lines = [START, f"<function={name}>"]
    for key, value in values.items() if isinstance(values, dict) else ():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines += [f"<parameter={key}>", text, "</parameter>"]
    return "\n".join([*lines, "</function>", END])


def parse_tool_calls(
    text: str, tools: list[dict[str, Any]] | None, *, forced: bool = False
) -> list[ParsedCall]:
    """Every well-formed call in ``text`` (which starts at the first ``<tool_call>``), in order.

    With ``forced`` (the engine wrote the call's opening) a first call the model left unfinished (cut
    by the token limit) is closed after its last complete parameter, as the client asked for a call."""
    ensure_runtime_imported()
    from mlx_lm.tool_parsers import qwen3_coder

    calls = []
    for i, block in enumerate(_BLOCK.findall(text)):
        body = block.strip()
        end = body.rfind("</function>")
        if forced and i == 0 and end < 0 and body.startswith("<function=") and ">" in body:
            last = body.rfind("</parameter>")
            body = body[: last + len("</parameter>")] if last >= 0 else body[: body.index(">") + 1]
            body += "\n</function>"
            end = body.rfind("</function>")
        if not body.startswith("<function=") or end < 0:
            log.warning("ignoring a malformed tool call: %r", body[:200])
            continue
        body = body[: end + len("</function>")]
        try:
            parsed = qwen3_coder.parse_tool_call(body, tools)
        except ValueError:  # a value that does not fit its schema type: keep the model's text
            parsed = qwen3_coder.parse_tool_call(body, None)
        calls.append(
            ParsedCall(
                parsed["name"],
                json.dumps(parsed["arguments"], ensure_ascii=False),
                f"call_{uuid.uuid4().hex[:24]}",
            )
        )
    return calls
