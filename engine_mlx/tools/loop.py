"""The tool loop: generate; run the tools the model calls (with the user's consent); give it the results; repeat.

Each step is an ordinary ``Engine.generate`` turn of the same conversation, so a step resumes from the
previous one's state and prefills only what is new (the tool results). The model's calls are read by
the one Qwen XML parser (``engine_mlx.tool_calls``); each result goes back as a ``tool`` message, and
the chat template decides what the model sees of the reasoning between calls. Consent comes from the
table (Allow, Block) or, for Ask, from ``approve``, which blocks this thread until the user answers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from engine_mlx.cancel import CancelToken
from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role, Tool, ToolCall
from engine_mlx.events import AnswerDelta, Event, Finished, FinishReason, ThinkingDelta
from engine_mlx.settings import GenerationSettings
from engine_mlx.tool_calls import START, parse_tool_calls
from engine_mlx.tools.consent import Consent, ConsentTable
from engine_mlx.tools.host import ToolCancelled, ToolError, ToolHost, ToolImage, ToolSpec

DEFAULT_MAX_STEPS = 10
DENIED_TEXT = "The user denied this tool call."
BLOCKED_TEXT = "The user's settings block this tool."


class Outcome(str, Enum):
    RAN = "ran"  # the tool answered (its result may itself be an error the tool reported)
    FAILED = (
        "failed"  # it did not run or did not finish: unknown tool, bad arguments, timeout, crash
    )
    DENIED = "denied"  # the user said no on the consent card
    BLOCKED = "blocked"  # the consent table blocks it
    CANCELLED = "cancelled"  # Stop during the call


@dataclass(frozen=True)
class ToolCallProposed:
    """The model asked for a call the user must approve (the consent card)."""

    step: int
    call_id: str
    server: str
    tool: str
    description: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolCallFinished:
    step: int
    call_id: str
    server: str
    tool: str
    arguments: dict[str, Any]
    outcome: Outcome
    result: str  # what the model is given
    images: tuple[ToolImage, ...] = ()
    duration_s: float = 0.0
    truncated: bool = False


@dataclass(frozen=True)
class StepWritten:
    """A step ended in tool calls: what the model wrote before the first call's markup (as written) and
    its reasoning. Yielded before the step's calls; ``step_message`` makes the step's message from it."""

    step: int
    text: str
    thinking: str


@dataclass(frozen=True)
class StepLimitReached:
    """The model called tools on every one of ``steps`` steps; the loop stopped there."""

    steps: int


LoopEvent = Event | ToolCallProposed | ToolCallFinished | StepWritten | StepLimitReached
TOOL_EVENTS = (ToolCallProposed, ToolCallFinished, StepWritten, StepLimitReached)


def tool_event_json(
    event: ToolCallProposed | ToolCallFinished | StepWritten | StepLimitReached,
) -> dict[str, Any]:
    """The CLI's ``--json`` line for a tool event (images as their type and size only)."""
    if isinstance(event, StepLimitReached):
        return {"type": "tool_limit", "steps": event.steps}
    if isinstance(event, StepWritten):
        return {
            "type": "tool_step",
            "step": event.step,
            "text": event.text,
            "thinking": event.thinking,
        }
    if isinstance(event, ToolCallProposed):
        return {
            "type": "tool_call",
            "step": event.step,
            "id": event.call_id,
            "server": event.server,
            "tool": event.tool,
            "arguments": event.arguments,
        }
    return {
        "type": "tool_result",
        "step": event.step,
        "id": event.call_id,
        "server": event.server,
        "tool": event.tool,
        "arguments": event.arguments,
        "outcome": event.outcome.value,
        "result": event.result,
        "truncated": event.truncated,
        "duration_s": round(event.duration_s, 3),
        "images": [{"mime_type": i.mime_type, "bytes": len(i.data)} for i in event.images],
    }


class Approval(str, Enum):
    RUN_ONCE = "run_once"
    ALWAYS = "always"  # run, and allow this tool from now on
    DENY = "deny"


@dataclass(frozen=True)
class ConsentAnswer:
    approval: Approval
    arguments: dict[str, Any] | None = (
        None  # the arguments as the user edited them; None = as proposed
    )


Approver = Callable[[ToolCallProposed, CancelToken | None], ConsentAnswer]


def deny_all(_proposed: ToolCallProposed, _cancel: CancelToken | None) -> ConsentAnswer:
    return ConsentAnswer(Approval.DENY)


class ToolLoop:
    """Runs turns with tools for one conversation. ``conversation`` afterwards holds the tool steps
    (the assistant's calls and the tool results), not the final answer, which the caller adds."""

    def __init__(
        self,
        engine: Any,
        host: ToolHost,
        *,
        consent: ConsentTable = ConsentTable(),
        approve: Approver = deny_all,
        on_consent: Callable[[ConsentTable], None] | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        servers: set[str] | None = None,
        image_dir: Path | None = None,
    ):
        self.engine = engine
        self.host = host
        self.consent = consent
        self.approve = approve
        self.on_consent = on_consent
        self.max_steps = max_steps
        self.servers = servers  # the chat's enabled servers; None = all running ones
        self.image_dir = image_dir  # where images a tool returns are written, for a vision model
        self.conversation = Conversation()

    def tool_specs(self) -> dict[str, ToolSpec]:
        """The tools offered, by the name the model sees (a name two servers share gets its server's)."""
        specs = [t for t in self.host.tools() if self.servers is None or t.server in self.servers]
        counts: dict[str, int] = {}
        for spec in specs:
            counts[spec.name] = counts.get(spec.name, 0) + 1
        return {
            (spec.name if counts[spec.name] == 1 else f"{spec.server}__{spec.name}"): spec
            for spec in specs
        }

    def offered(self, specs: dict[str, ToolSpec] | None = None) -> tuple[Tool, ...]:
        """The tools as the chat template gets them (what a turn adds to the prompt)."""
        specs = self.tool_specs() if specs is None else specs
        return tuple(
            Tool(name, spec.description, json.dumps(spec.input_schema))
            for name, spec in specs.items()
        )

    def run(
        self,
        conversation: Conversation,
        settings: GenerationSettings,
        cancel: CancelToken | None = None,
        step_settings: Callable[[int], GenerationSettings] | None = None,
        first_step: int = 0,
    ) -> Iterator[LoopEvent]:
        """Stream the turn: the engine's events of every step, and the tool calls between them; the
        last event is the final step's ``Finished``. ``step_settings`` (tests) gives each step its own.

        A ``continue_last`` conversation carries on a turn cut short (Continue): its first step goes on
        from the unfinished message, which a call then makes into that step's message; its steps are
        numbered from ``first_step`` (the steps the turn had already taken)."""
        specs = self.tool_specs()
        convo = replace(conversation, tools=conversation.tools + self.offered(specs))
        template_tools = [
            {
                "type": "function",
                "function": {"name": t.name, "parameters": json.loads(t.parameters)},
            }
            for t in convo.tools
        ]
        for step in range(self.max_steps + 1):
            thinking, answer, finished = [], [], Finished(FinishReason.ERROR, "no events")
            unfinished = convo.unfinished  # Continue's first step: what it had written so far
            if unfinished is not None:
                thinking, answer = [unfinished.thinking], [unfinished.text]
            for event in self.engine.generate(
                convo, step_settings(step) if step_settings else settings, cancel
            ):
                if isinstance(event, Finished):
                    finished = event
                    continue
                if isinstance(event, ThinkingDelta):
                    thinking.append(event.text)
                elif isinstance(event, AnswerDelta):
                    answer.append(event.text)
                yield event
            text = "".join(answer)
            calls = (
                parse_tool_calls(text, template_tools)
                if finished.reason is FinishReason.STOP
                else []
            )
            if not calls:
                self.conversation = convo
                yield finished
                return
            if step == self.max_steps:
                self.conversation = convo
                yield StepLimitReached(self.max_steps)
                yield finished
                return
            written = StepWritten(
                first_step + step,
                text[: text.find(START)] if START in text else text,
                "".join(thinking),
            )
            yield written
            if unfinished is not None:  # the continued message becomes this step's
                convo = replace(convo, messages=convo.messages[:-1], continue_last=False)
            convo = convo.with_message(
                step_message(
                    written.text,
                    written.thinking,
                    tuple(ToolCall(c.name, c.arguments, c.id) for c in calls),
                )
            )
            for call in calls:
                done = yield from self._one_call(
                    first_step + step,
                    call.id or uuid.uuid4().hex,
                    call.name,
                    call.arguments,
                    specs,
                    cancel,
                )
                convo = convo.with_message(self._tool_message(done))
                if done.outcome is Outcome.CANCELLED:
                    self.conversation = convo
                    yield Finished(FinishReason.CANCELLED)
                    return

    def _one_call(
        self,
        step: int,
        call_id: str,
        name: str,
        arguments_text: str,
        specs: dict[str, ToolSpec],
        cancel: CancelToken | None,
    ) -> Generator[LoopEvent, None, ToolCallFinished]:
        """Decide and run one call; yields its events and returns its ToolCallFinished."""
        spec = specs.get(name)
        try:
            arguments = json.loads(arguments_text or "{}")
        except ValueError:
            arguments = None
        if spec is None or not isinstance(arguments, dict):
            why = (
                f"There is no tool named {name!r}; the tools are: {', '.join(specs) or 'none'}."
                if spec is None
                else f"The arguments of {name} are not a JSON object."
            )
            done = ToolCallFinished(
                step, call_id, spec.server if spec else "", name, {}, Outcome.FAILED, why
            )
            yield done
            return done
        server, tool = spec.server, spec.name
        decision = self.consent.decide(server, tool)
        if decision is Consent.BLOCK:
            done = ToolCallFinished(
                step, call_id, server, tool, arguments, Outcome.BLOCKED, BLOCKED_TEXT
            )
            yield done
            return done
        if decision is Consent.ASK:
            proposed = ToolCallProposed(step, call_id, server, tool, spec.description, arguments)
            yield proposed
            answer = self.approve(proposed, cancel)
            if answer.approval is Approval.DENY:
                done = ToolCallFinished(
                    step, call_id, server, tool, arguments, Outcome.DENIED, DENIED_TEXT
                )
                yield done
                return done
            if answer.approval is Approval.ALWAYS:
                self.consent = self.consent.with_tool(server, tool, Consent.ALLOW)
                if self.on_consent is not None:
                    self.on_consent(self.consent)
            if answer.arguments is not None:
                arguments = answer.arguments
        try:
            result = self.host.call(server, tool, arguments, cancel=cancel)
        except ToolCancelled as exc:
            done = ToolCallFinished(
                step, call_id, server, tool, arguments, Outcome.CANCELLED, str(exc)
            )
        except ToolError as exc:
            done = ToolCallFinished(
                step, call_id, server, tool, arguments, Outcome.FAILED, f"Error: {exc}"
            )
        else:
            done = ToolCallFinished(
                step,
                call_id,
                server,
                tool,
                arguments,
                Outcome.RAN,
                result.text,
                result.images,
                result.duration_s,
                result.truncated,
            )
        yield done
        return done

    def _tool_message(self, done: ToolCallFinished) -> Message:
        paths: list[Path] = []
        if done.images and self.image_dir is not None:
            self.image_dir.mkdir(parents=True, exist_ok=True)
            for index, image in enumerate(done.images):
                path = self.image_dir / f"{done.call_id}-{index}{image_suffix(image.mime_type)}"
                path.write_bytes(image.data)
                paths.append(path)
        info = getattr(self.engine, "model_info", None)
        return tool_message(done.result, paths, vision=info is None or info.is_vision)


def image_suffix(mime_type: str) -> str:
    return {
        "image/png": ".png",
        "image/jpeg": ".jpg",
        "image/webp": ".webp",
        "image/gif": ".gif",
    }.get(mime_type, ".png")


def step_message(text: str, thinking: str, calls: tuple[ToolCall, ...]) -> Message:
    """A step's assistant message, from what the model wrote before its calls (``StepWritten``): the loop's
    next step and every later turn's rebuilt prompt (the app rebuilds it from the store) both build it here,
    so the prompt is the same token for token."""
    return Message(Role.ASSISTANT, text.strip(), thinking=thinking, tool_calls=calls)


def tool_message(result: str, images: Sequence[Path], *, vision: bool) -> Message:
    """A tool's result as the model reads it: its images attached for a vision model; a text-only one is
    told there were images it cannot see. The loop's step and every later turn's rebuilt prompt (the app
    rebuilds it from the store) both build it here, so the prompt is the same token for token."""
    if not images:
        return Message(Role.TOOL, result)
    if vision:
        return Message(Role.TOOL, result, tuple(ImageAttachment(Path(p)) for p in images))
    count = len(images)
    note = (
        f"[The tool returned {count} image{'s' if count != 1 else ''}; this model is text-only and "
        "cannot see images.]"
    )
    return Message(Role.TOOL, f"{result}\n{note}" if result else note)
