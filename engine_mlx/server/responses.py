"""Engine events in, OpenAI chat-completion deltas out: reasoning apart from content (as
``reasoning_content``; also as ``reasoning`` only when the server is told to, for clients that read
that name), stop sequences, and tool calls held back from content and handed over whole at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine_mlx.events import FinishReason, Stats, TokenLogprob
from engine_mlx.tool_calls import START as TOOL_START
from engine_mlx.tool_calls import ParsedCall, parse_tool_calls


def _held_suffix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that could be the start of a marker."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


@dataclass
class ReplyAssembler:
    """Feed ``thinking``/``answer`` text as it streams; each call returns the deltas to send now."""

    stop: tuple[str, ...] = ()
    tools: list[dict[str, Any]] | None = None  # None: no tool calls are parsed
    reasoning_alias: bool = False  # also name the reasoning ``reasoning`` (serve --reasoning-alias)
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ParsedCall] = field(default_factory=list)
    stopped: bool = False  # a stop sequence was met: the caller cancels the generation
    logprobs: list[dict[str, Any]] | None = (
        None  # the content's token log-probabilities, when asked
    )
    forced_call: bool = False  # the engine forces a call's opening (tool_choice): always a call
    _pending: str = ""
    _tool_text: str | None = None
    _pending_logprobs: list[dict[str, Any]] = field(default_factory=list)

    def token_logprob(self, event: TokenLogprob) -> None:
        """An answer token's log-probabilities: sent with the content its text ends up in (dropped
        with text held back for a stop sequence or a tool call)."""
        if (
            self.logprobs is not None
            and not event.thinking
            and not self.stopped
            and self._tool_text is None
        ):
            self._pending_logprobs.append(logprob_entry(event))

    def thinking(self, text: str) -> list[dict[str, Any]]:
        if self.stopped or not text:
            return []
        self.reasoning += text
        return [self._reasoning(text)]

    def answer(self, text: str) -> list[dict[str, Any]]:
        if self.stopped:
            return []
        if self._tool_text is not None:
            self._tool_text += text
            return []
        buf = self._pending + text
        cuts = [(buf.find(s), s) for s in self.stop if s in buf]
        tool_at = buf.find(TOOL_START) if self.tools is not None else -1
        if cuts and (tool_at < 0 or min(cuts)[0] <= tool_at):
            self._pending = ""
            self.stopped = True
            return self._emit(buf[: min(cuts)[0]])
        if tool_at >= 0:
            self._pending = ""
            self._tool_text = buf[tool_at:]
            return self._emit(buf[:tool_at].rstrip())
        markers = self.stop + ((TOOL_START,) if self.tools is not None else ())
        keep = _held_suffix(buf, markers)
        # trailing blanks wait too
        keep = max(keep, len(buf) - len(buf[: len(buf) - keep].rstrip()))
        self._pending = buf[len(buf) - keep :]
        return self._emit(buf[: len(buf) - keep])

    def finish(self) -> list[dict[str, Any]]:
        """End of the reply: pending text, then the tool calls (whole) if the model made any."""
        deltas = []
        if self._tool_text is not None:
            self.tool_calls = parse_tool_calls(self._tool_text, self.tools, forced=self.forced_call)
            if self.tool_calls:
                deltas.append(
                    {"tool_calls": [c.to_openai(i) for i, c in enumerate(self.tool_calls)]}
                )
            else:  # not a call after all: it is what the model said
                deltas += self._emit(self._tool_text)
        elif self._pending and not self.stopped:
            deltas += self._emit(self._pending)
        self._pending = ""
        return deltas

    def finish_reason(self, reason: FinishReason) -> str:
        if self.tool_calls:
            return "tool_calls"
        if self.stopped or reason in (FinishReason.STOP, FinishReason.CANCELLED):
            return "stop"
        return "length"

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "role": "assistant",
            "content": self.content or (None if self.tool_calls else ""),
        }
        if self.reasoning:
            msg.update(self._reasoning(self.reasoning))
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return msg

    def _reasoning(self, text: str) -> dict[str, str]:
        return (
            {"reasoning_content": text, "reasoning": text}
            if self.reasoning_alias
            else {"reasoning_content": text}
        )

    def _emit(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        self.content += text
        delta: dict[str, Any] = {"content": text}
        if self.logprobs is not None:
            # not a delta field: the server moves it to the choice (OpenAI's place for it)
            delta["logprobs"], self._pending_logprobs = self._pending_logprobs, []
            self.logprobs += delta["logprobs"]
        return [delta]


def logprob_entry(event: TokenLogprob) -> dict[str, Any]:
    """OpenAI's shape of one token's log-probabilities."""
    return {
        "token": event.token,
        "logprob": event.logprob,
        "bytes": list(event.bytes),
        "top_logprobs": [
            {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in event.top
        ],
    }


def usage(stats: Stats | None) -> dict[str, Any]:
    if stats is None:
        return {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.reused_tokens},
        "completion_tokens_details": {
            "reasoning_tokens": stats.thinking_tokens,
            # OpenAI's names for predicted-output tokens; here the MTP head's drafts kept and refused.
            "accepted_prediction_tokens": stats.accepted_tokens,
            "rejected_prediction_tokens": stats.drafted_tokens - stats.accepted_tokens,
        },
    }
