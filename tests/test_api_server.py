"""The local OpenAI-compatible API (issue 10), driven with the official ``openai`` client and raw HTTP
against a real server on a free 127.0.0.1 port, answering with the tiny Qwen3.5 model.

The oracle for every answer is the engine itself: the same conversation run straight through
``Engine.generate`` (greedy) must give the same reasoning, content and token counts as the API.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from media_files import write_image
from raw_http import send_chunked_until_answered

from engine_mlx.conversation import Role
from engine_mlx.events import AnswerDelta, Finished, Stats, ThinkingDelta
from engine_mlx.jobs import EngineThread, JobKind
from engine_mlx.prompt import load_media, render_text
from engine_mlx.server.config import ServerConfig
from engine_mlx.server.media import InlineImages
from engine_mlx.server.requests import parse_chat_request
from engine_mlx.server.responses import ReplyAssembler
from engine_mlx.server.runner import ApiServer
from engine_mlx.server.security import AccessPolicy
from engine_mlx.snapshots import common_prefix

openai = pytest.importorskip("openai")

GREEDY = {"temperature": 0.0, "presence_penalty": 0.0}
SLACK = 16  # prefilled tokens allowed beyond the new ones


@pytest.fixture(scope="module")
def jobs():
    thread = EngineThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def server(engine, jobs):
    srv = ApiServer(engine, jobs, ServerConfig(port=0))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(engine):
    return engine.model_info.name


def parse(server, body: dict):
    """``body`` as the server reads it (its images kept in the server's folder)."""
    images = server.context.media.batch()
    chat = parse_chat_request({"model": "x", **body}, images, server.context.config)
    images.done()
    return chat


def direct(engine, jobs, server, body: dict):
    """The engine's own answer to the request ``body``: (thinking, answer, stats)."""
    chat = parse(server, body)
    convo = replace(chat.conversation, id="")  # cold, no reuse
    events = jobs.call(lambda: list(engine.generate(convo, chat.settings)))
    assert isinstance(events[-1], Finished)
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return thinking, answer, next(e for e in events if isinstance(e, Stats))


def prompt_ids(engine, jobs, server, body: dict) -> list[int]:
    chat = parse(server, body)
    loaded = engine._loaded

    def ids():
        prompt = render_text(
            chat.conversation,
            loaded.apply_template,
            thinking=chat.settings.thinking,
            text_only=not loaded.is_vision,
        )
        return loaded.prepare(
            prompt, load_media(chat.conversation.attachments, engine.media_limits)
        ).ids

    return jobs.call(ids)


def stream_reply(client, **kwargs):
    reasoning = content = ""
    usage = finish = None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta.model_dump()
            reasoning += delta.get("reasoning_content") or ""
            content += delta.get("content") or ""
            finish = choice.finish_reason or finish
    return reasoning, content, usage, finish


# ------------------------------------------------------------------------------ openai client


def test_models_lists_the_loaded_model(client, model):
    assert [m.id for m in client.models.list().data] == [model]


@pytest.mark.parametrize("thinking", [True, False], ids=["thinking-on", "thinking-off"])
def test_non_streaming_separates_reasoning_from_content(
    client, model, engine, jobs, server, thinking
):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is MLX?"},
    ]
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=24,
        extra_body={"enable_thinking": thinking, **GREEDY},
    )
    msg = reply.choices[0].message.model_dump()
    thought, answer, stats = direct(
        engine,
        jobs,
        server,
        {"messages": messages, "max_tokens": 24, "enable_thinking": thinking, **GREEDY},
    )
    assert (msg.get("reasoning_content") or "") == thought
    assert "reasoning" not in msg  # reasoning_content only, unless serve --reasoning-alias
    assert msg["content"] == answer
    if thinking:
        assert (
            thought and "</think>" not in msg["content"] and thought not in (msg["content"] or "x")
        )
    else:
        assert not thought and answer
    assert reply.usage.prompt_tokens == stats.prompt_tokens
    assert reply.usage.completion_tokens == stats.generated_tokens
    assert reply.choices[0].finish_reason == ("length" if stats.generated_tokens == 24 else "stop")


@pytest.mark.parametrize("where", ["top-level", "chat_template_kwargs"])
def test_streaming_matches_the_engine_with_usage(client, model, engine, jobs, server, where):
    messages = [{"role": "user", "content": f"Tell me about the fox ({where})."}]
    switch = (
        {"enable_thinking": False, "thinking_budget": 3}
        if where == "top-level"
        else {"chat_template_kwargs": {"enable_thinking": True, "thinking_budget": 3}}
    )
    reasoning, content, usage, finish = stream_reply(
        client,
        model=model,
        messages=messages,
        max_tokens=20,
        stream_options={"include_usage": True},
        extra_body={**switch, **GREEDY},
    )
    thought, answer, stats = direct(
        engine, jobs, server, {"messages": messages, "max_tokens": 20, **switch, **GREEDY}
    )
    assert (reasoning, content) == (thought, answer)
    assert bool(reasoning) == (where != "top-level")
    assert finish == ("length" if stats.generated_tokens == 20 else "stop")
    assert (
        usage.prompt_tokens == stats.prompt_tokens
        and usage.completion_tokens == stats.generated_tokens
    )
    assert usage.prompt_tokens_details.cached_tokens == 0  # a new conversation


def test_an_image_as_a_data_uri(client, model, engine, jobs, server, tmp_path):
    png = write_image(tmp_path / "red.png").read_bytes()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "What colour is it?"},
            ],
        }
    ]
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=12,
        extra_body={"enable_thinking": False, **GREEDY},
    )
    _thought, answer, stats = direct(
        engine,
        jobs,
        server,
        {"messages": messages, "max_tokens": 12, "enable_thinking": False, **GREEDY},
    )
    text_only = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What colour is it?"}],
        max_tokens=1,
        extra_body={"enable_thinking": False},
    )
    assert reply.choices[0].message.content == answer
    assert reply.usage.prompt_tokens == stats.prompt_tokens > text_only.usage.prompt_tokens + 20


def test_a_tools_image_goes_in_the_tool_message(client, model, engine, jobs, server, tmp_path):
    """A tool that returns an image (an MCP screenshot): its result message carries it as OpenAI's
    image_url parts, and the engine reads it as the app's own tool loop hands it over."""
    from engine_mlx.conversation import ImageAttachment

    png = write_image(tmp_path / "red.png").read_bytes()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    call = {"id": "c1", "type": "function", "function": {"name": "picture", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "Draw"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "a red square"},
            ],
        },
    ]
    body = {"messages": messages, "max_tokens": 6, "enable_thinking": False, **GREEDY}
    tool = parse(server, body).conversation.messages[-1]
    assert tool.role is Role.TOOL and tool.text == "a red square"
    (image,) = tool.attachments
    assert isinstance(image, ImageAttachment) and image.path.read_bytes() == png
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=6,
        extra_body={"enable_thinking": False, **GREEDY},
    )
    _thought, answer, stats = direct(engine, jobs, server, body)
    assert reply.choices[0].message.content == answer
    assert reply.usage.prompt_tokens == stats.prompt_tokens  # the image's tokens included
    # an assistant message still may not carry one
    messages[1] = {
        "role": "assistant",
        "content": [{"type": "image_url", "image_url": {"url": url}}],
    }
    result = raw(
        server, "POST", "/v1/chat/completions", json.dumps({"model": model, **body}).encode()
    )
    assert_error(result, 400)
    assert "images go in user and tool messages only" in result[1]["error"]["message"]


def test_four_turn_chat_prefills_only_the_new_tokens(
    client, model, engine, jobs, server, tmp_path, capsys
):
    """Turns 2-4 resume from the previous turn's snapshot though the requests carry no id;
    turn 2 adds an image, which stays in the history."""
    png = write_image(tmp_path / "blue.png", color=(20, 40, 200)).read_bytes()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    users = [
        "Hello there, what is MLX?",
        [
            {"type": "text", "text": "And this picture?"},
            {"type": "image_url", "image_url": {"url": url}},
        ],
        "Tell me more about the fox and the dog.",
        "And the cat on the mat?",
    ]
    messages = [{"role": "system", "content": "You are terse."}]
    previous: list[int] | None = None
    figures = []
    for turn, user in enumerate(users, 1):
        messages.append({"role": "user", "content": user})
        body = {"messages": messages, "max_tokens": 10, "thinking_budget": 3, **GREEDY}
        if turn % 2:
            reply = client.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=10,
                extra_body={"thinking_budget": 3, **GREEDY},
            )
            usage, msg = reply.usage, reply.choices[0].message
            reasoning, content = msg.model_dump().get("reasoning_content") or "", msg.content
        else:
            reasoning, content, usage, _ = stream_reply(
                client,
                model=model,
                messages=messages,
                max_tokens=10,
                stream_options={"include_usage": True},
                extra_body={"thinking_budget": 3, **GREEDY},
            )
        ids = prompt_ids(engine, jobs, server, body)
        cached = usage.prompt_tokens_details.cached_tokens
        prefilled = usage.prompt_tokens - cached
        assert usage.prompt_tokens == len(ids)
        if previous is None:
            assert cached == 0
        else:
            new = len(ids) - common_prefix(previous, ids)
            assert cached > 0 and prefilled <= new + SLACK, (turn, usage, new)
            figures.append((turn, usage.prompt_tokens, cached, prefilled, new))
        if turn == len(users):  # a resumed turn answers exactly as a cold prefill
            assert (reasoning, content) == direct(engine, jobs, server, body)[:2]
        previous = ids
        messages.append({"role": "assistant", "content": content})
    with capsys.disabled():
        for turn, prompt, cached, prefilled, new in figures:
            print(
                f"\n  API turn {turn}: prompt {prompt}, cached {cached}, prefilled {prefilled} (new {new})",
                end="",
            )


def _turn_starts(engine, jobs, server, body) -> list[int]:
    marker = jobs.call(lambda: engine._loaded.encode("<|im_start|>"))[0]
    return [i for i, t in enumerate(prompt_ids(engine, jobs, server, body)) if t == marker]


@pytest.mark.parametrize("chats", [2, 6])
def test_api_conversations_in_turn_all_resume(client, model, engine, jobs, server, chats):
    """Clients' chats alternating (no ids): each follow-up finds its own chat's snapshot, with more
    chats than the old fixed limit of 4 (the snapshot budget, not a count, decides)."""
    histories = {
        n: [{"role": "system", "content": f"You are agent {n} of {chats}."}] for n in range(chats)
    }
    cached, starts = {}, {}
    for turn in range(2):
        for n, messages in histories.items():
            messages.append({"role": "user", "content": f"Agent {n}, turn {turn}: say something."})
            reply = client.chat.completions.create(
                model=model, messages=messages, max_tokens=6, extra_body={"enable_thinking": False}
            )
            starts[n, turn] = _turn_starts(
                engine, jobs, server, {"messages": messages, "enable_thinking": False}
            )
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})
            cached[n, turn] = reply.usage.prompt_tokens_details.cached_tokens
    for n in histories:
        # everything before the first turn's generation prompt
        assert cached[n, 1] >= starts[n, 0][-1], (n, cached, starts)


def test_edited_and_repeated_last_user_message_reuse_everything_before_it(
    client, model, engine, jobs, server
):
    """An API client that edits its last message, or sends a second user message in a row, resumes
    right before (after) it, and answers exactly as a cold prefill."""
    settings = {"max_tokens": 6, "thinking_budget": 2, **GREEDY}
    base = [
        {"role": "system", "content": "You edit."},
        {"role": "user", "content": "First question here."},
    ]
    first = client.chat.completions.create(model=model, messages=base, extra_body=settings)
    history = base + [{"role": "assistant", "content": first.choices[0].message.content}]
    client.chat.completions.create(
        model=model,
        messages=history + [{"role": "user", "content": "A second one."}],
        extra_body=settings,
    )
    for last in (
        {"role": "user", "content": "No, a different second one."},  # edited
        {"role": "user", "content": "And a third, right after."},
    ):  # two user messages in a row
        messages = (history if last["content"].startswith("No") else base) + [last]
        body = {"messages": messages, **settings}
        reply = client.chat.completions.create(model=model, messages=messages, extra_body=settings)
        assert (
            reply.usage.prompt_tokens_details.cached_tokens
            == _turn_starts(engine, jobs, server, body)[-2]
        )
        msg = reply.choices[0].message
        assert (msg.model_dump().get("reasoning_content") or "", msg.content) == direct(
            engine, jobs, server, body
        )[:2]


def test_logprobs_and_top_logprobs_stream_and_not(client, model, engine, jobs, server):
    """OpenAI's logprobs: each content token's log-probability under the model and its top
    alternatives, the same streamed or not, equal to the engine's own TokenLogprob events; greedy
    picks the most likely token each time."""
    from engine_mlx.events import TokenLogprob

    messages = [{"role": "user", "content": "Count to five."}]
    extra = {"enable_thinking": False, **GREEDY}
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
        extra_body=extra,
    )
    entries = reply.choices[0].logprobs.content
    chat = parse(
        server,
        {
            "model": model,
            "messages": messages,
            "max_tokens": 8,
            "logprobs": True,
            "top_logprobs": 3,
            **extra,
        },
    )
    events = jobs.call(
        lambda: list(engine.generate(replace(chat.conversation, id=""), chat.settings))
    )
    expected = [e for e in events if isinstance(e, TokenLogprob)]
    assert len(expected) == 8 and not any(e.thinking for e in expected)
    content = reply.choices[0].message.content
    # (the API's turn may resume from a snapshot: the figures agree to float rounding)
    assert [(e.token, e.bytes) for e in entries] == [(e.token, list(e.bytes)) for e in expected]
    assert [e.logprob for e in entries] == pytest.approx([e.logprob for e in expected], abs=1e-4)
    for entry in entries:
        top = entry.top_logprobs
        assert len(top) == 3 and top[0].logprob >= top[1].logprob >= top[2].logprob
        assert (entry.token, entry.logprob) == (top[0].token, top[0].logprob) and entry.logprob <= 0
    streamed = []
    for chunk in client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
        stream=True,
        extra_body=extra,
    ):
        for choice in chunk.choices:
            if choice.logprobs is not None:
                streamed += choice.logprobs.content or []
    assert [e.token for e in streamed] == [e.token for e in entries]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in entries], abs=1e-4)
    plain = client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, extra_body=extra
    )
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == content
    bad = {"model": model, "messages": messages, "top_logprobs": 2}
    status, body, _ = raw(server, "POST", "/v1/chat/completions", json.dumps(bad).encode())
    assert status == 400 and body["error"]["param"] == "top_logprobs"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather forecast for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "metric": {"type": "boolean"},
                    "hours": {"type": "array", "items": {"type": "number"}},
                },
                "required": ["city"],
            },
        },
    }
]
# What Qwen3.5 writes when it calls a tool (the format its chat template teaches), thinking first.
MODEL_TOOL_REPLY = (
    "The user wants the weather; I should call the tool.\n</think>\n\nLet me look that up.\n\n"
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n"
    "<parameter=hours>\n[9, 12.5]\n</parameter>\n</function>\n</tool_call>"
)


def test_tool_call_parsed_from_model_shaped_tokens(engine, jobs):
    """Qwen3.5's XML tool call, tokenized by the real tokenizer and decoded token by token through
    the engine's own streaming detokenizer and thinking splitter, comes out whole as OpenAI tool_calls
    typed by the schema, and never leaks into content."""
    from engine_mlx.events import FinishReason
    from engine_mlx.thinking import ThinkingSplitter

    loaded = engine._loaded
    text, splitter = loaded.text_stream(), ThinkingSplitter(starts_in_thinking=True)
    assembler = ReplyAssembler(tools=TOOLS)
    deltas = []
    for token in loaded.encode(MODEL_TOOL_REPLY):
        part = splitter.feed(text.add(token))
        deltas += assembler.thinking(part.thinking) + assembler.answer(part.answer)
        assert not any("tool_call" in (d.get("content") or "") for d in deltas)
    tail = splitter.feed(text.finalize())
    deltas += assembler.thinking(tail.thinking) + assembler.answer(tail.answer)
    rest = splitter.flush()
    deltas += assembler.thinking(rest.thinking) + assembler.answer(rest.answer) + assembler.finish()
    assert assembler.finish_reason(FinishReason.STOP) == "tool_calls"
    msg = assembler.message()
    assert msg["content"] == "Let me look that up."
    assert msg["reasoning_content"] == "The user wants the weather; I should call the tool.\n"
    (call,) = msg["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {
        "city": "Paris",
        "days": 3,
        "metric": True,
        "hours": [9, 12.5],
    }
    tool_deltas = [d for d in deltas if "tool_calls" in d]
    assert len(tool_deltas) == 1 and tool_deltas[0]["tool_calls"][0]["index"] == 0


OTHER_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object"}},
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choice", ["named", "required", "required-of-two"])
def test_tool_choice_forces_a_call_after_the_thinking(client, model, choice, stream):
    """tool_choice 'required' or a named function: the engine writes the call's opening once the
    thinking closes (here the budget closes it), so even the random model's reply is a call; with
    several tools and 'required', a grammar lets the model pick only one of their names."""
    tools = TOOLS if choice == "required" else TOOLS + [OTHER_TOOL]
    tool_choice = (
        {"type": "function", "function": {"name": "get_weather"}}
        if choice == "named"
        else "required"
    )
    allowed = ["get_weather", "get_time"] if choice == "required-of-two" else ["get_weather"]
    for extra in ({"thinking_budget": 3}, {"enable_thinking": False}):
        kwargs = dict(
            model=model,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=tools,
            tool_choice=tool_choice,
            max_tokens=80,
            extra_body={**extra, **GREEDY},
        )
        if stream:
            names, finish = [], None
            for chunk in client.chat.completions.create(stream=True, **kwargs):
                for c in chunk.choices:
                    names += [tc.function.name for tc in c.delta.tool_calls or []]
                    finish = c.finish_reason or finish
        else:
            reply = client.chat.completions.create(**kwargs).choices[0]
            names, finish = (
                [tc.function.name for tc in reply.message.tool_calls or []],
                reply.finish_reason,
            )
            assert json.loads(reply.message.tool_calls[0].function.arguments) is not None
        assert len(names) >= 1 and names[0] in allowed and finish == "tool_calls", (extra, names)


def test_invalid_tool_choice_is_400(server, model):
    base = {"model": model, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    for choice in (
        "sometimes",
        {"type": "function", "function": {"name": "nope"}},
        {"type": "function"},
    ):
        status, body, _ = raw(
            server,
            "POST",
            "/v1/chat/completions",
            json.dumps({**base, "tool_choice": choice}).encode(),
        )
        assert status == 400 and body["error"]["param"] == "tool_choice", (choice, body)
    status, body, _ = raw(
        server,
        "POST",
        "/v1/chat/completions",
        json.dumps({**base, "tools": [], "tool_choice": "required"}).encode(),
    )
    assert status == 400 and body["error"]["param"] == "tool_choice"


SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["ok", "n", "colour"],
    "properties": {
        "ok": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "colour": {"enum": ["red", "green"]},
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_constrains_the_answer_to_json(client, model, stream):
    """json_object and json_schema (strict) through llguidance: the random model's answer parses as
    JSON and matches the schema, after its thinking (closed by the budget) or without any."""
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    # Any object: the random model writes long strings; on this prompt (greedy) it closes its object
    # within 80 tokens, thinking or not.
    cases = [
        (fmt, extra)
        for fmt in ({"type": "json_object"}, schema)
        for extra in ({"thinking_budget": 3}, {"enable_thinking": False})
    ]
    for response_format, extra in cases:
        kwargs = dict(
            model=model,
            messages=[{"role": "user", "content": "Return JSON."}],
            max_tokens=600,
            response_format=response_format,
            extra_body={**extra, **GREEDY},
        )
        if stream:
            content, finish = "", None
            for chunk in client.chat.completions.create(stream=True, **kwargs):
                for c in chunk.choices:
                    content += c.delta.content or ""
                    finish = c.finish_reason or finish
        else:
            reply = client.chat.completions.create(**kwargs).choices[0]
            content, finish = reply.message.content, reply.finish_reason
        value = json.loads(content)
        assert finish == "stop" and isinstance(value, dict), (response_format, extra, content)
        if response_format["type"] == "json_schema":
            assert set(value) == {"ok", "n", "colour"} and isinstance(value["ok"], bool)
            assert (
                type(value["n"]) is int
                and 0 <= value["n"] <= 99
                and value["colour"] in ("red", "green")
            )


def test_response_format_errors(server, model):
    base = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    bad_schema = {"type": "object", "properties": {"a": {"type": "wizard"}}}
    cases = [
        ({"type": "yaml"}, "response_format.type"),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": bad_schema, "strict": True},
            },
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}},
            "response_format.json_schema.schema",
        ),
    ]
    for response_format, param in cases:
        status, body, _ = raw(
            server,
            "POST",
            "/v1/chat/completions",
            json.dumps({**base, "response_format": response_format}).encode(),
        )
        assert status == 400 and body["error"]["param"] == param, (response_format, body)
    # Not strict: still an object, though the schema cannot be enforced.
    loose = {"type": "json_schema", "json_schema": {"name": "x", "schema": bad_schema}}
    status, body, _ = raw(
        server,
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {
                **base,
                "messages": [{"role": "user", "content": "Return JSON."}],
                "response_format": loose,
                "max_tokens": 600,
                "enable_thinking": False,
                **GREEDY,
            }
        ).encode(),
    )
    assert status == 200 and isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)


def test_tool_parser_contract_pinned():
    """mlx-lm's qwen3_coder parser, which engine_mlx.tool_calls relies on."""
    from mlx_lm.tool_parsers import qwen3_coder

    out = qwen3_coder.parse_tool_call(
        "<function=f>\n<parameter=n>\n7\n</parameter>\n<parameter=s>\n007\n</parameter>\n</function>",
        [
            {
                "function": {
                    "name": "f",
                    "parameters": {
                        "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}
                    },
                }
            }
        ],
    )
    assert out == {"name": "f", "arguments": {"n": 7, "s": "007"}}


def test_tool_round_trip_through_the_template(client, model, engine, jobs, server):
    """Tools, an assistant tool call and its result go through the checkpoint's own template into the
    prompt the model answers; the answer carries no tool-call markup in its content."""
    messages = [
        {"role": "user", "content": "Weather in Paris for 3 days?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": json.dumps({"city": "Paris", "days": 3}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 22C"},
    ]
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        tools=TOOLS,
        max_tokens=12,
        extra_body={"enable_thinking": False, **GREEDY},
    )
    chat = parse(server, {"messages": messages, "tools": TOOLS})
    prompt = jobs.call(
        lambda: render_text(
            chat.conversation, engine._loaded.apply_template, thinking=False, text_only=False
        )
    )
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt
    assert (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>" in prompt
    )
    assert "<|im_start|>user\n<tool_response>\nSunny, 22C\n</tool_response><|im_end|>" in prompt
    _thought, answer, stats = direct(
        engine,
        jobs,
        server,
        {
            "messages": messages,
            "tools": TOOLS,
            "max_tokens": 12,
            "enable_thinking": False,
            **GREEDY,
        },
    )
    assert reply.usage.prompt_tokens == stats.prompt_tokens == len(engine._loaded.encode(prompt))
    assert "<tool_call>" not in (reply.choices[0].message.content or "")
    expected = answer.split("<tool_call>")[0].rstrip() if "<tool_call>" in answer else answer
    assert reply.choices[0].message.content == expected


def _forcing(engine, monkeypatch, text: str, pause=None):
    """The real engine, made to write ``text`` (tokenized by the real tokenizer, forced through the
    sampler, decoded by the engine's detokenizer and thinking splitter): the tiny model's random
    weights never write a tool call. ``pause(events so far)`` runs between the engine's events."""
    from engine_mlx.forcing import ForcedText

    generate = engine.generate

    def forced(conversation, settings, cancel=None):
        assert conversation.tools and conversation.tools[0].name == "get_weather"
        events = []
        for event in generate(conversation, replace(settings, forced=ForcedText(text)), cancel):
            events.append(event)
            yield event
            if pause is not None:
                pause(events)

    monkeypatch.setattr(engine, "generate", forced)


def test_streamed_tool_call_reaches_the_openai_client(engine, jobs, model, monkeypatch):
    """The streaming tool-call path end to end over HTTP: the real engine writes MODEL_TOOL_REPLY
    token by token (forced), and the official client reassembles the call."""
    from engine_mlx.tool_calls import START

    _forcing(engine, monkeypatch, MODEL_TOOL_REPLY)
    srv = ApiServer(engine, jobs, ServerConfig(port=0))
    srv.start()
    try:
        c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        calls: dict[int, dict] = {}
        content, finish = "", None
        for chunk in c.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], tools=TOOLS, stream=True
        ):
            delta = chunk.choices[0].delta
            content += delta.content or ""
            for tc in delta.tool_calls or []:
                calls[tc.index] = {"name": tc.function.name, "arguments": tc.function.arguments}
            finish = chunk.choices[0].finish_reason or finish
        assert START not in content and content == "Let me look that up."
        assert finish == "tool_calls"
        assert json.loads(calls[0]["arguments"]) == {
            "city": "Paris",
            "days": 3,
            "metric": True,
            "hours": [9, 12.5],
        }
        reply = c.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], tools=TOOLS
        )
        assert (
            reply.choices[0].finish_reason == "tool_calls"
            and reply.choices[0].message.content == content
        )
        assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    finally:
        srv.stop()


def test_stop_sequence_ends_the_answer(client, model, engine, jobs, server):
    messages = [{"role": "user", "content": "Count."}]
    _, answer, _ = direct(
        engine,
        jobs,
        server,
        {"messages": messages, "max_tokens": 30, "enable_thinking": False, **GREEDY},
    )
    stop = answer[8:11]
    assert len(stop) == 3
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=30,
        stop=[stop],
        extra_body={"enable_thinking": False, **GREEDY},
    )
    assert reply.choices[0].message.content == answer[: answer.index(stop)]
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens < 30


def test_client_disconnect_frees_the_model(client, model, engine, jobs, server):
    messages = [{"role": "user", "content": "Go on and on."}]
    body = {"messages": messages, "enable_thinking": False, **GREEDY}
    _, _, stats = direct(engine, jobs, server, {**body, "max_tokens": 300})
    full = stats.generated_tokens  # (greedy) the answer's length when nobody leaves
    assert full >= 100
    before = len(server.context.records)
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=300,
        stream=True,
        extra_body={"enable_thinking": False, **GREEDY},
    )
    for got, _chunk in enumerate(stream, 1):
        if got == 4:
            break
    stream.close()
    deadline = time.monotonic() + 60
    while len(server.context.records) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    gone = server.context.records[before]
    assert gone.finish_reason == "disconnected" and gone.status == 499 and gone.engine_ended
    assert gone.completion_tokens < full - 50  # stopped soon after the client left
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert reply.usage.completion_tokens == 3
    after = server.context.records[-1]
    assert after.engine_started >= gone.engine_ended


def test_two_clients_at_once_are_queued_and_both_served(client, model, server):
    results: dict[int, object] = {}

    def ask(i: int) -> None:
        results[i] = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Question {i}"}], max_tokens=40
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    before = len(server.context.records)
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == [0, 1]
    assert all(0 < r.usage.completion_tokens <= 40 for r in results.values())
    a, b = sorted(list(server.context.records)[before:], key=lambda r: r.engine_started)
    assert b.engine_started >= a.engine_ended  # one generation at a time


# ------------------------------------------------------------------------------ raw HTTP


def raw(
    server_or_port, method: str, path: str, body: bytes | None = None, headers: dict | None = None
):
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, (json.loads(data) if data else None), dict(resp.getheaders())


def assert_error(status_body, status: int, code: str | None = None):
    got, body, _ = status_body
    assert got == status, body
    err = body["error"]
    assert err["message"] and err["type"]
    if code:
        assert err["code"] == code


def test_bad_json_and_bad_fields_are_400(server, model):
    assert_error(raw(server, "POST", "/v1/chat/completions", b"{not json"), 400, "invalid_json")
    bad = {"model": model, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}
    status, body, _ = raw(server, "POST", "/v1/chat/completions", json.dumps(bad).encode())
    assert status == 400 and body["error"]["param"] == "temperature"
    bad = {"model": model, "messages": [{"role": "wizard", "content": "hi"}]}
    assert_error(raw(server, "POST", "/v1/chat/completions", json.dumps(bad).encode()), 400)


def test_remote_image_url_is_refused_and_never_fetched(server, model):
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}/cat.png"
        body = {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": "?"},
                    ],
                }
            ],
        }
        result = raw(server, "POST", "/v1/chat/completions", json.dumps(body).encode())
        assert_error(result, 400, "remote_image_refused")
        assert "data: URI" in result[1]["error"]["message"]
        time.sleep(0.2)
        assert hits == []
    finally:
        web.shutdown()
        web.server_close()


def test_foreign_host_or_origin_is_403_and_a_wrong_key_401(engine, jobs, model):
    srv = ApiServer(
        engine,
        jobs,
        ServerConfig(port=0, api_key="s3cret", allow_origins=("http://localhost:3000",)),
    )
    srv.start()
    try:
        key = {"Authorization": "Bearer s3cret"}
        assert raw(srv, "GET", "/v1/models", headers=key)[0] == 200
        assert_error(
            raw(srv, "GET", "/v1/models", headers={**key, "Host": f"evil.example:{srv.port}"}),
            403,
            "forbidden_host",
        )
        assert_error(
            raw(srv, "GET", "/v1/models", headers={**key, "Origin": "https://evil.example"}),
            403,
            "forbidden_origin",
        )
        assert_error(
            raw(srv, "GET", "/v1/models", headers={"Authorization": "Bearer nope"}),
            401,
            "invalid_api_key",
        )
        assert_error(raw(srv, "GET", "/v1/models"), 401)
        status, _, headers = raw(
            srv, "GET", "/v1/models", headers={**key, "Origin": "http://localhost:3000"}
        )
        assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
        # the browser's preflight for the allowed origin, without the key
        status, _, headers = raw(
            srv,
            "OPTIONS",
            "/v1/chat/completions",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert status == 204 and "authorization" in headers["access-control-allow-headers"]
        c = openai.OpenAI(base_url=srv.base_url, api_key="s3cret", max_retries=0)
        assert (
            c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            ).usage.completion_tokens
            == 2
        )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0).models.list()
    finally:
        srv.stop()


def test_access_policy_hosts():
    policy = AccessPolicy("127.0.0.1", 8035)
    policy.check("GET", {"host": "localhost:8035"})
    policy.check("GET", {"host": "[::1]:8035"})
    for host in ("127.0.0.1:8036", "attacker.example:8035", ""):
        with pytest.raises(Exception, match="not a name this server answers to"):
            policy.check("GET", {"host": host})
    # the user chose to expose it
    AccessPolicy("0.0.0.0", 8035).check("GET", {"host": "192.168.1.5:8035"})


def test_unknown_model_is_404(server):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert_error(
        raw(server, "POST", "/v1/chat/completions", json.dumps(body).encode()),
        404,
        "model_not_found",
    )
    assert_error(raw(server, "GET", "/v1/nothing-here"), 404)


def test_while_loading_503_then_over_context_400(tiny_model_dir, tmp_path):
    """A server whose model is still loading answers 503; once loaded, a prompt longer than the
    context gets OpenAI's 400. (The load is held half-way through its real progress callback.)"""
    from engine_mlx.engine import Engine

    small = Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny-small-context"))
    config = json.loads((small / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 64
    (small / "config.json").write_text(json.dumps(config))

    engine, jobs = Engine(), EngineThread()
    reading, release = threading.Event(), threading.Event()

    def progress(p):
        if p.stage == "Reading weights" and p.fraction > 0.1:
            reading.set()
            release.wait(60)

    srv = ApiServer(engine, jobs, ServerConfig(port=0))
    srv.start()
    try:
        loaded = jobs.submit(
            lambda: engine.load(small, context_tokens=64, progress=progress), JobKind.LOAD
        )
        assert reading.wait(60)
        body = {
            "model": small.name,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
        }
        status, err, headers = raw(srv, "POST", "/v1/chat/completions", json.dumps(body).encode())
        assert_error((status, err, headers), 503, "model_loading")
        assert headers.get("retry-after")
        release.set()
        loaded.result(60)
        assert raw(srv, "POST", "/v1/chat/completions", json.dumps(body).encode())[0] == 200
        body["messages"][0]["content"] = "word " * 100
        result = raw(srv, "POST", "/v1/chat/completions", json.dumps(body).encode())
        assert_error(result, 400, "context_length_exceeded")
        assert result[1]["error"]["message"].startswith(
            "This model's maximum context length is 64 tokens."
        )
    finally:
        release.set()
        srv.stop()
        jobs.call(engine.unload)
        jobs.close()


# ------------------------------------------------------------------------------ CLI


def test_cli_serve(tiny_model_dir):
    """serve with --context (the prompt's cap) and --thinking off (the default for requests that do not say)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine_mlx",
            "serve",
            "--model",
            str(tiny_model_dir),
            "--port",
            "0",
            "--context",
            "200",
            "--thinking",
            "off",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "Serving" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "serve exited early"
        assert "Serving" in line, line
        base = line.split(" at ")[1].split(" ")[0]
        c = openai.OpenAI(base_url=base, api_key="x", max_retries=0)
        name = c.models.list().data[0].id
        reply = c.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2, seed=0
        )
        # random weights may end the reply early: an end-of-turn token is not counted
        assert (reply.choices[0].finish_reason, reply.usage.completion_tokens) in {
            ("stop", 0),
            ("stop", 1),
            ("length", 2),
        }
        assert reply.usage.prompt_tokens > 0
        thinks = c.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert not thinks.choices[0].message.model_dump().get("reasoning_content")  # --thinking off
        with pytest.raises(
            openai.BadRequestError, match="maximum context length is 200 tokens"
        ) as caught:
            c.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "word " * 250}], max_tokens=2
            )
        assert caught.value.code == "context_length_exceeded"
    finally:
        proc.send_signal(2)  # Ctrl-C
        code = proc.wait(30)
    assert code == 0, proc.stderr.read()


def test_continue_final_message_carries_on_the_assistant_turn(client, model, engine, jobs, server):
    """vLLM's ``continue_final_message``: the reply continues the last assistant message (its
    reasoning too), equal to the engine's own continuation, resuming the cached prompt."""
    question = [{"role": "user", "content": "Write a long story about a fox."}]
    first = client.chat.completions.create(
        model=model, messages=question, max_tokens=6, extra_body=GREEDY
    )
    said = first.choices[0].message.model_dump()
    assert (
        first.choices[0].finish_reason == "length"
        and said["reasoning_content"]
        and not said["content"]
    )
    body = {
        "messages": question
        + [{"role": "assistant", "content": "", "reasoning_content": said["reasoning_content"]}],
        "max_tokens": 8,
        "continue_final_message": True,
    }
    reasoning, content, usage, _finish = stream_reply(
        client,
        model=model,
        messages=body["messages"],
        stream_options={"include_usage": True},
        max_tokens=8,
        extra_body={"continue_final_message": True, **GREEDY},
    )
    thought, answer, stats = direct(engine, jobs, server, {**body, **GREEDY})
    assert (reasoning, content) == (
        thought,
        answer,
    ) and usage.completion_tokens == stats.generated_tokens
    # the turn so far is in it
    assert usage.prompt_tokens == stats.prompt_tokens > first.usage.prompt_tokens
    assert usage.prompt_tokens_details.cached_tokens > 0  # the question's prefill was reused
    with pytest.raises(openai.BadRequestError, match="continue_final_message"):
        client.chat.completions.create(
            model=model,
            messages=question,
            max_tokens=4,
            extra_body={"continue_final_message": True},
        )


def test_roles_map_onto_the_typed_conversation(tmp_path):
    chat = parse_chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "rules"},
                {"role": "user", "content": [{"type": "text", "text": "q"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "hm",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "ok"},
            ],
            "max_completion_tokens": 9,
            "seed": 3,
            "stop": "END",
        },
        InlineImages(tmp_path, 1 << 20).batch(),
    )
    roles = [m.role for m in chat.conversation.messages]
    assert roles == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL]
    assert chat.conversation.messages[2].tool_calls[0].arguments == '{"a": 1}'
    assert chat.conversation.messages[2].thinking == "hm"
    assert (chat.settings.max_tokens, chat.settings.seed, chat.stop) == (9, 3, ("END",))


def test_stop_sequence_split_across_chunks_is_held_back():
    from engine_mlx.events import FinishReason

    a = ReplyAssembler(stop=("END",))
    out = a.answer("Hello E") + a.answer("N") + a.answer("D and more")
    assert "".join(d["content"] for d in out) == "Hello " and a.stopped
    assert a.finish_reason(FinishReason.CANCELLED) == "stop"
    b = ReplyAssembler(stop=("END",))
    out = b.answer("An EN") + b.answer("ding") + b.finish()
    assert "".join(d["content"] for d in out) == "An ENding" and not b.stopped


def test_engine_thread_runs_jobs_in_order_and_skips_cancelled_waiters():
    from engine_mlx.cancel import CancelToken

    jobs = EngineThread()
    try:
        started, gate, order = threading.Event(), threading.Event(), []
        jobs.submit(lambda: (started.set(), gate.wait(10), order.append("first")))
        assert started.wait(10)
        skipped, kept = CancelToken(), CancelToken()
        seen: list = []
        jobs.submit_stream(lambda: iter(["never"]), seen.append, skipped)
        stream = jobs.stream(lambda: iter(["a", "b"]), kept)  # queued when first read
        skipped.cancel()
        assert jobs.waiting == 1
        gate.set()
        assert list(stream) == ["a", "b"] and order == ["first"]
        assert len(seen) == 1 and seen[0].error is None  # only its end: it never ran
        with pytest.raises(ValueError):
            jobs.call(lambda: int("x"))
        assert jobs.call(lambda: threading.current_thread().name) == "engine"
    finally:
        jobs.close()


# ------------------------------------------------------------------------------ app


def test_app_switch_serves_the_loaded_model(qapp, qt_wait, tmp_path, tiny_model_dir):
    """Settings ▸ Local API in the real window: type a port, click the switch, and a real HTTP
    request is answered with the model the app loaded; the log and the status bar show it."""
    import socket

    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtTest import QTest

    from app.paths import app_paths
    from app.window import MainWindow

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    window = MainWindow(app_paths(tmp_path / "data"), reload_last=False)
    window.show()
    try:
        window.models.load(tiny_model_dir)
        qt_wait(lambda: window.models.loaded_info is not None, 120)
        assert not window.status_api.isVisible()  # off by default

        window.act_local_api.trigger()
        dialog = window._local_api_dialog
        assert dialog.isVisible() and not dialog.switch.isChecked()
        dialog.port.setFocus()
        dialog.port.selectAll()
        QTest.keyClicks(dialog.port, str(port))
        QTest.keyClick(dialog.port, Qt.Key.Key_Return)
        QTest.mouseClick(dialog.switch, Qt.MouseButton.LeftButton)
        assert dialog.switch.isChecked() and window.local_api.running and window.local_api.key == ""
        assert window.status_api.isVisible() and f":{port}" in window.status_api.text()

        QTest.mouseClick(dialog.copy_url, Qt.MouseButton.LeftButton)
        url = QGuiApplication.clipboard().text()
        assert url == f"http://127.0.0.1:{port}/v1"
        c = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)
        name = window.models.loaded_info.name
        assert [m.id for m in c.models.list().data] == [name]
        reply = c.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.usage.completion_tokens == 3
        qt_wait(lambda: dialog.log.rowCount() >= 1, 30)  # chat requests (and refusals) are logged
        row = dialog.log.rowCount() - 1
        assert "3 out" in dialog.log.item(row, 2).text() and dialog.log.item(
            row, 1
        ).text().startswith("127.0.0.1")
        # an API request and the app's own chat at once: one model, one queue, both answered
        from app.store import ChatSettings, MessageState, ThinkingMode

        api_reply = {}
        api = threading.Thread(
            target=lambda: api_reply.setdefault(
                "r",
                c.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": "meanwhile"}], max_tokens=30
                ),
            )
        )
        api.start()
        window.chat.set_settings(
            ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=16, seed=7)
        )
        window.composer.edit.setPlainText("And you?")
        assert window.send(window.composer.text())
        qt_wait(lambda: not window.chat.busy and not api.is_alive(), 120)
        answer = window.store.messages(window.chat.current_id)[-1]
        assert answer.state is MessageState.COMPLETE and answer.stats.generated_tokens > 0
        assert api_reply["r"].usage.completion_tokens > 0

        QTest.mouseClick(dialog.switch, Qt.MouseButton.LeftButton)
        assert not window.local_api.running and not window.status_api.isVisible()
        with pytest.raises(openai.APIConnectionError):
            c.models.list()
    finally:
        window.close()


# ------------------------------------------------------------------------------ hardening (issue 14)


def test_a_chunked_body_over_the_cap_is_refused_before_it_is_all_sent(server):
    """The 64 MiB cap holds without a Content-Length: the body is read piece by piece and the 413
    comes back while the client is still sending (the server never holds the rest)."""
    from engine_mlx.server.app import MAX_BODY_BYTES

    sent, response = send_chunked_until_answered(server.port, 4 * MAX_BODY_BYTES)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert sent < 2 * MAX_BODY_BYTES, sent  # answered long before the 256 MiB were sent


def test_context_overflow_is_openais_400_and_a_huge_prompt_never_reaches_the_engine(
    engine, jobs, model
):
    """``context_tokens`` (serve --context) caps the prompt: over it, OpenAI's 400 in OpenAI's words,
    which openai-python raises as BadRequestError with the code. (litellm raises ContextWindowExceededError
    on the lower-cased "this model's maximum context length is" in the message; litellm itself is not a
    test dependency: its botocore needs python-dateutil < 3, constraints.txt pins 4.0.0.) A prompt whose
    text alone cannot fit is refused while the engine thread is busy: never queued, never tokenized."""
    import re

    srv = ApiServer(engine, jobs, ServerConfig(port=0, context_tokens=100))
    srv.start()
    started, gate = threading.Event(), threading.Event()
    try:
        c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=60)
        fits = c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=500,
            extra_body={"enable_thinking": False},
        )
        # the reply stops at the cap
        assert fits.usage.prompt_tokens + fits.usage.completion_tokens <= 100
        words = [{"role": "user", "content": "word " * 120}]  # fits the model, not the cap
        with pytest.raises(openai.BadRequestError) as caught:
            c.chat.completions.create(model=model, messages=words, max_tokens=2)
        assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
        assert re.fullmatch(
            r"This model's maximum context length is 100 tokens\. However, your messages resulted "
            r"in \d{3} tokens\. Please reduce the length of the messages\.",
            caught.value.body["message"],
        )

        jobs.submit(lambda: (started.set(), gate.wait(120)))
        assert started.wait(60)
        huge = [{"role": "user", "content": "x" * (10 << 20)}]
        with pytest.raises(
            openai.BadRequestError, match=r"resulted in at least \d+ tokens"
        ) as caught:
            c.chat.completions.create(model=model, messages=huge, max_tokens=2)
        assert caught.value.code == "context_length_exceeded"
        assert jobs.waiting == 0 and not gate.is_set()  # answered with the engine thread still held
    finally:
        gate.set()
        srv.stop()


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


MALFORMED = {
    # name: (the body's text with MODEL for the model id, the field named, the error code)
    "5000-digit integer": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "seed": '
        + "9" * 5000
        + "}",
        "seed",
        "invalid_number",
    ),
    "NaN": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        "temperature",
        "invalid_number",
    ),
    "100k-deep JSON": (
        '{"model": MODEL, "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        None,
        "invalid_json",
    ),
    "lone surrogate": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi \\ud800 there"}]}',
        "messages[0].content",
        "invalid_string",
    ),
    "tool parameters 500 deep": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": '
        '[{"type": "function", "function": {"name": "f", "parameters": ' + _nested(500) + "}}]}",
        "tools[0].function.parameters",
        "too_deep",
    ),
    "tool-call arguments 100k deep": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": '
        '[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "'
        + "[" * 100_000
        + "]" * 100_000
        + '"}}]}]}',
        "messages[1].tool_calls[0].function.arguments",
        "too_deep",
    ),
    "a 5000-digit integer in tool-call arguments": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": '
        '[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\\"n\\": '
        + "7" * 5000
        + '}"}}]}]}',
        "messages[1].tool_calls[0].function.arguments.n",
        "invalid_number",
    ),
    "a stop sequence of 1,001 characters": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], '
        '"stop": ["' + "s" * 1001 + '"]}',
        "stop",
        None,
    ),
    "n: true": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": true}',
        "n",
        None,
    ),
    "n: 2": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 2}',
        "n",
        None,
    ),
    "tool_choice: sometimes": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], '
        '"tool_choice": "sometimes"}',
        "tool_choice",
        None,
    ),
    "tool_choice: an undeclared function": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, '
        '"tool_choice": {"type": "function", "function": {"name": "launch"}}}',
        "tool_choice",
        None,
    ),
    "tool_choice: required without tools": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}',
        "tool_choice",
        None,
    ),
    "10,001 messages": (
        '{"model": MODEL, "messages": ['
        + ", ".join(['{"role": "user", "content": "hi"}'] * 10_001)
        + "]}",
        "messages",
        None,
    ),
    "513 tools": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": ['
        + ", ".join(['{"type": "function", "function": {"name": "f"}}'] * 513)
        + "]}",
        "tools",
        None,
    ),
    "reasoning_effort: extreme": (
        '{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], '
        '"reasoning_effort": "extreme"}',
        "reasoning_effort",
        None,
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_is_a_400_naming_the_field(server, model, case):
    text, param, code = MALFORMED[case]
    text = text.replace("MODEL", json.dumps(model)).replace("TOOLS", json.dumps(TOOLS))
    status, body, headers = raw(server, "POST", "/v1/chat/completions", text.encode())
    assert status == 400 and headers["content-type"] == "application/json", (status, body)
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"
    if code:
        assert body["error"]["code"] == code
    assert (param or "JSON") in body["error"]["message"]


@pytest.mark.parametrize(
    "choice",
    ["none", "auto", "required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["none", "auto", "required", "named"],
)
def test_valid_tool_choices_are_taken(client, model, choice):
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=TOOLS,
        tool_choice=choice,
        max_tokens=1,
    )
    assert reply.choices[0].finish_reason in ("length", "stop", "tool_calls")


def test_model_by_id(client, model):
    assert client.models.retrieve(model).id == model
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert (
        caught.value.code == "model_not_found"
        and caught.value.body["type"] == "invalid_request_error"
    )


def test_refused_images_are_deleted_at_once_and_the_folder_is_capped(engine, jobs, model, tmp_path):
    pngs = [
        write_image(tmp_path / f"{i}.png", color=(40 * i, 20, 200)).read_bytes() for i in range(5)
    ]
    cap = 2 * max(map(len, pngs)) + 100  # room for two
    srv = ApiServer(engine, jobs, ServerConfig(port=0, media_cap_bytes=cap))
    srv.start()
    folder = srv.context.media.folder

    def ask(*parts):
        content = [*parts, {"type": "text", "text": "What is it?"}]
        body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 1}
        return raw(srv, "POST", "/v1/chat/completions", json.dumps(body).encode())

    def image(data: bytes):
        return {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()},
        }

    try:
        # a PNG signature over junk: the engine cannot decode it
        assert_error(ask(image(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)), 400, "invalid_image")
        assert os.listdir(folder) == []
        # a good image, then a part the server refuses: the image written for it goes too
        assert_error(
            ask(
                image(pngs[0]),
                {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}},
            ),
            400,
            "remote_image_refused",
        )
        assert os.listdir(folder) == []
        for i, png in enumerate(pngs):
            assert ask(image(png))[0] == 200
            on_disk = {p.name: p.stat().st_size for p in folder.iterdir()}
            assert sum(on_disk.values()) <= cap and len(on_disk) == min(i + 1, 2)
            # the newest is kept for the next turn
            assert any(size == len(png) for size in on_disk.values())
    finally:
        srv.stop()


def test_error_answers_carry_cors_headers_for_allowed_origins(engine, jobs, model):
    allowed = "http://localhost:3000"
    srv = ApiServer(engine, jobs, ServerConfig(port=0, api_key="k", allow_origins=(allowed,)))
    srv.start()
    key = {"Authorization": "Bearer k", "Origin": allowed}
    try:
        answers = {
            401: raw(srv, "GET", "/v1/models", headers={"Origin": allowed}),
            400: raw(srv, "POST", "/v1/chat/completions", b"{oops", headers=key),
            404: raw(srv, "GET", "/v1/models/nope", headers=key),
            413: raw(
                srv,
                "POST",
                "/v1/chat/completions",
                b"{}",
                headers={**key, "Content-Length": str(1 << 30)},
            ),
        }
        for status, (got, body, headers) in answers.items():
            assert got == status and body["error"]["message"], (status, got, body)
            assert headers.get("access-control-allow-origin") == allowed, (status, headers)
        got, _, headers = raw(srv, "GET", "/v1/models", headers={"Origin": "https://evil.example"})
        assert got == 403 and "access-control-allow-origin" not in headers
    finally:
        srv.stop()


def _sse_lines(resp):
    """The lines of a raw SSE response, as they arrive."""
    while True:
        line = resp.readline()
        if not line:
            return
        yield line.decode().rstrip("\r\n")


def _open_stream(srv, body: dict):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request(
        "POST",
        "/v1/chat/completions",
        json.dumps({**body, "stream": True}).encode(),
        {"Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    return conn, resp


def test_a_stream_sends_keepalive_comments_while_its_request_waits(engine, jobs, model):
    """While the engine is busy (another generation, a long prefill), the stream is open and sends
    ``: keep-alive`` every keepalive_s; then the answer comes as usual."""
    srv = ApiServer(engine, jobs, ServerConfig(port=0, keepalive_s=0.05))
    srv.start()
    started, gate = threading.Event(), threading.Event()
    try:
        jobs.submit(lambda: (started.set(), gate.wait(120)))
        assert started.wait(60)
        conn, resp = _open_stream(
            srv, {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        )
        lines = _sse_lines(resp)
        seen = []
        while seen.count(": keep-alive") < 2:
            seen.append(next(lines))
        assert not gate.is_set() and seen[0].startswith("data: ")  # the role chunk first
        gate.set()
        rest = list(lines)
        conn.close()
        data = [json.loads(line[6:]) for line in seen + rest if line.startswith("data: {")]
        assert rest[-2:] == ["data: [DONE]", ""] and data[-1]["choices"][0]["finish_reason"] in (
            "length",
            "stop",
        )
    finally:
        gate.set()
        srv.stop()


def test_keepalive_while_a_tool_call_is_written_and_reasoning_content_only(
    engine, jobs, model, monkeypatch
):
    """A tool call is held back until it is whole; while it is being written, keep-alive comments go
    out. Reasoning goes as ``reasoning_content`` alone; ``reasoning_alias`` adds ``reasoning``."""
    halfway = threading.Event()
    go_on = threading.Event()

    def pause(events):  # the engine stops halfway through writing the call, until told to go on
        answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
        if "<parameter=days>" in answer and not halfway.is_set():
            halfway.set()
            go_on.wait(60)

    _forcing(engine, monkeypatch, MODEL_TOOL_REPLY, pause)
    for alias in (False, True):
        halfway.clear()
        go_on.clear()
        srv = ApiServer(engine, jobs, ServerConfig(port=0, keepalive_s=0.05, reasoning_alias=alias))
        srv.start()
        try:
            conn, resp = _open_stream(
                srv,
                {"model": model, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS},
            )
            lines, seen = _sse_lines(resp), []
            while not (halfway.is_set() and seen[-1:] == [": keep-alive"]):
                seen.append(next(lines))
            go_on.set()
            seen += list(lines)
            conn.close()
            deltas = [
                json.loads(line[6:])["choices"][0]["delta"]
                for line in seen
                if line.startswith("data: {")
            ]
            thought = [d for d in deltas if "reasoning_content" in d]
            assert thought and all(("reasoning" in d) == alias for d in thought)
            assert any(d.get("reasoning") == d["reasoning_content"] for d in thought) == alias
            calls = [d["tool_calls"] for d in deltas if d.get("tool_calls")]
            assert len(calls) == 1 and calls[0][0]["function"]["name"] == "get_weather"
        finally:
            go_on.set()
            srv.stop()


def test_reasoning_effort_and_the_servers_thinking_default(engine, jobs, model):
    """reasoning_effort: none turns thinking off, the others set the documented budgets; a request
    that says nothing takes the server's default (serve --thinking), which the request can override."""
    from engine_mlx.server.config import ThinkingDefault
    from engine_mlx.server.requests import EFFORT_BUDGETS

    srv = ApiServer(engine, jobs, ServerConfig(port=0, thinking=ThinkingDefault(on=False)))
    srv.start()
    try:
        c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=60)
        ask = [{"role": "user", "content": "Think about foxes."}]

        def reasoning(**kw):
            msg = (
                c.chat.completions.create(model=model, messages=ask, max_tokens=6, **kw)
                .choices[0]
                .message
            )
            return msg.model_dump().get("reasoning_content") or ""

        assert reasoning() == ""  # the server's default: off
        assert reasoning(extra_body={"enable_thinking": True}) != ""
        assert reasoning(reasoning_effort="low") != ""
        assert reasoning(reasoning_effort="none") == ""
        assert reasoning(extra_body={"chat_template_kwargs": {"enable_thinking": True}}) != ""
        settings = {
            effort: parse(srv, {"messages": ask, "reasoning_effort": effort}).settings
            for effort in ("none", *EFFORT_BUDGETS)
        }
        assert not settings["none"].thinking
        assert [settings[e].thinking_budget for e in EFFORT_BUDGETS] == [256, 1024, 4096, None]
        assert all(settings[e].thinking for e in EFFORT_BUDGETS)
        budget = ServerConfig(thinking=ThinkingDefault(on=True, budget=77))
        images = srv.context.media.batch()
        chat = parse_chat_request({"model": model, "messages": ask}, images, budget)
        assert (chat.settings.thinking, chat.settings.thinking_budget) == (True, 77)
        chat = parse_chat_request(
            {"model": model, "messages": ask, "thinking_budget": 5}, images, budget
        )
        assert chat.settings.thinking_budget == 5
    finally:
        srv.stop()


def test_a_stream_refused_after_it_started_ends_with_an_error_event(engine, jobs, model):
    """A stream that started while waiting its turn, then refused by the engine (an image it cannot
    decode), ends with an OpenAI error event, and the refused image is deleted."""
    srv = ApiServer(engine, jobs, ServerConfig(port=0, keepalive_s=0.05))
    srv.start()
    started, gate = threading.Event(), threading.Event()
    junk = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"junk" * 10).decode()
    try:
        jobs.submit(lambda: (started.set(), gate.wait(120)))
        assert started.wait(60)
        conn, resp = _open_stream(
            srv,
            {
                "model": model,
                "max_tokens": 3,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": junk}},
                            {"type": "text", "text": "?"},
                        ],
                    }
                ],
            },
        )
        lines = _sse_lines(resp)
        assert next(lines).startswith("data: ")
        assert len(os.listdir(srv.context.media.folder)) == 1  # in use while the request waits
        gate.set()
        rest = [line for line in lines if line.startswith("data: ")]
        conn.close()
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][6:])["error"]["code"] == "invalid_image"
        assert os.listdir(srv.context.media.folder) == []
    finally:
        gate.set()
        srv.stop()


def test_serve_thinking_option():
    from engine_mlx.cli import _thinking_default
    from engine_mlx.errors import EngineError
    from engine_mlx.server.config import ThinkingDefault

    assert _thinking_default(["on"]) == ThinkingDefault(on=True)
    assert _thinking_default(["off"]) == ThinkingDefault(on=False)
    assert _thinking_default(["budget", "512"]) == ThinkingDefault(on=True, budget=512)
    for bad in (["maybe"], ["budget"], ["budget", "lots"], ["on", "off"]):
        with pytest.raises(EngineError, match="'on', 'off' or 'budget N'"):
            _thinking_default(bad)


def test_the_engine_refuses_a_prompt_too_long_before_tokenizing_it(engine, jobs, monkeypatch):
    """Engine.generate (the app's path too) checks the text's floor first: the tokenizer never runs."""
    from engine_mlx.conversation import Conversation, Message
    from engine_mlx.errors import ContextOverflowError
    from engine_mlx.settings import GenerationSettings

    prepared = []
    real_prepare = engine._loaded.prepare
    monkeypatch.setattr(
        engine._loaded, "prepare", lambda *a: prepared.append(a) or real_prepare(*a)
    )
    text = "y" * (engine._loaded.max_token_bytes * 100)  # at least 100 tokens
    convo = Conversation((Message(Role.USER, text),), "")
    with pytest.raises(ContextOverflowError) as caught:
        jobs.call(lambda: next(engine.generate(convo, GenerationSettings(context_limit=100))))
    assert (caught.value.at_least, caught.value.limit, caught.value.tokens) == (True, 100, 100)
    assert prepared == []
    events = jobs.call(
        lambda: list(engine.generate(convo, GenerationSettings(context_limit=None, max_tokens=1)))
    )
    assert isinstance(events[-1], Finished) and prepared  # the model's own context takes it


def test_the_token_floor_holds_for_the_real_qwen_vocabulary():
    """prompt_size's floor with Qwen3.5's own tokenizer: its longest token is 128 bytes (a run of
    spaces), and no text takes fewer tokens than its bytes / 128, the worst cases included."""
    import math

    import tokenizers

    from engine_mlx.prompt_size import max_token_bytes, text_bytes
    from engine_mlx.tiny_release import tokenizer_json

    qwen = tokenizers.Tokenizer.from_str(tokenizer_json())
    longest = max_token_bytes(type("Fast", (), {"backend_tokenizer": qwen})())
    assert longest == 128
    texts = [
        "a" + " " * 100_000 + "a",
        "-" * 50_000,
        "//" + "-" * 38 + "\n" * 5,
        "é" * 10_000,
        "e\u0301" * 10_000,
        "漢字かな交じり文" * 2_000,
        "All work and no play makes Jack a dull boy. " * 2_000,
        "=" * 4096,
    ]
    for text in texts:
        assert len(qwen.encode(text, add_special_tokens=False).ids) >= math.ceil(
            text_bytes(text) / longest
        ), text[:20]


def test_completions_for_autocomplete_stream_and_not(client, model, engine, jobs, server):
    """/v1/completions: the raw prompt's continuation equals Engine.complete's, streamed or not, stop
    sequences applied; a longer prompt (the next keystrokes) reuses the snapshot before its end."""
    prompt = 'def add(a, b):\n    """Add two numbers."""\n    return'
    settings = {"temperature": 0.0, "presence_penalty": 0.0}

    def expected(p, n=16):
        from engine_mlx.settings import GenerationSettings

        events = jobs.call(
            lambda: list(
                engine.complete(p, GenerationSettings(thinking=False, max_tokens=n, **settings))
            )
        )
        return "".join(e.text for e in events if isinstance(e, AnswerDelta))

    reply = client.completions.create(model=model, prompt=prompt, extra_body=settings)
    text = reply.choices[0].text
    assert (
        reply.object == "text_completion"
        and text == expected(prompt)
        and reply.usage.completion_tokens == 16
    )
    assert reply.choices[0].finish_reason == "length"
    streamed, finish, usage = "", None, None
    longer = prompt + " a + b\n\n\ndef sub(a, b):\n    return"
    for chunk in client.completions.create(
        model=model,
        prompt=longer,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=settings,
    ):
        for choice in chunk.choices:
            streamed += choice.text
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert streamed == expected(longer) and finish == "length"
    assert (
        usage.prompt_tokens_details.cached_tokens
        >= len(jobs.call(lambda: engine._loaded.encode(prompt))) - 8
    )
    stop = text.strip()[:2]
    if stop:
        cut = client.completions.create(
            model=model, prompt=prompt, stop=[stop], extra_body=settings
        )
        assert (
            cut.choices[0].text == text[: text.index(stop)]
            and cut.choices[0].finish_reason == "stop"
        )
    for bad, param in (
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": ["a", "b"]}, "prompt"),
    ):
        status, body, _ = raw(
            server, "POST", "/v1/completions", json.dumps({"model": model, **bad}).encode()
        )
        assert status == 400 and body["error"]["param"] == param, (bad, body)


# ------------------------------------------------------------------------------ POST /tokenize


def test_tokenize_counts_what_a_chat_request_starts_from(
    client, model, engine, jobs, server, tmp_path
):
    """vLLM's ``POST /tokenize``: ``{count, max_model_len, tokens}`` for a chat's body (images and
    tools included) or a raw prompt; the count is the prompt the chat's usage then reports."""
    png = write_image(tmp_path / "red.png").read_bytes()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "What colour is it?"},
            ],
        },
    ]
    tools = [{"type": "function", "function": {"name": "paint", "parameters": {"type": "object"}}}]
    options = {"enable_thinking": False, "tools": tools}
    status, body, _ = raw(
        server,
        "POST",
        "/tokenize",
        json.dumps({"model": model, "messages": messages, **options}).encode(),
    )
    assert status == 200, body
    assert set(body) == {"count", "max_model_len", "tokens"}
    expected = prompt_ids(engine, jobs, server, {"messages": messages, **options})
    assert body["tokens"] == expected and body["count"] == len(expected)
    assert body["max_model_len"] == engine.model_info.context_length
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=1,
        tools=tools,
        extra_body={"enable_thinking": False},
    )
    assert reply.usage.prompt_tokens == body["count"]
    # thinking on renders another generation prompt: counted as that request would be
    status, thinking, _ = raw(
        server, "POST", "/tokenize", json.dumps({"model": model, "messages": messages}).encode()
    )
    assert thinking["tokens"] == prompt_ids(engine, jobs, server, {"messages": messages})
    # a raw prompt: its tokens as /v1/completions reads them
    status, plain, _ = raw(
        server,
        "POST",
        "/tokenize",
        json.dumps({"model": model, "prompt": "def add(a, b):"}).encode(),
    )
    assert status == 200 and plain["tokens"] == engine._loaded.encode("def add(a, b):")
    assert plain["count"] == len(plain["tokens"]) > 0


def test_tokenize_has_the_chats_checks(engine, jobs, model):
    srv = ApiServer(engine, jobs, ServerConfig(port=0, api_key="s3cret", context_tokens=64))
    srv.start()
    key = {"Authorization": "Bearer s3cret"}
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    try:
        status, body, _ = raw(srv, "POST", "/tokenize", json.dumps(chat).encode(), key)
        assert status == 200 and body["max_model_len"] == 64  # serve --context
        assert_error(raw(srv, "POST", "/tokenize", json.dumps(chat).encode()), 401)
        assert_error(
            raw(srv, "POST", "/tokenize", json.dumps(chat).encode(), {"Authorization": "Bearer x"}),
            401,
            "invalid_api_key",
        )
        big = {**key, "Content-Length": str(1 << 30)}
        assert_error(raw(srv, "POST", "/tokenize", b"{}", big), 413, "body_too_large")
        for bad, param in (
            ({**chat, "prompt": "and text"}, "messages"),
            ({"model": model}, "messages"),
            ({**chat, "add_generation_prompt": False}, "add_generation_prompt"),
            ({**chat, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
            ({"model": model, "prompt": 5}, "prompt"),
        ):
            status, body, _ = raw(srv, "POST", "/tokenize", json.dumps(bad).encode(), key)
            assert status == 400 and body["error"]["param"] == param, body
        wrong = {**chat, "model": "gpt-4o"}
        assert_error(raw(srv, "POST", "/tokenize", json.dumps(wrong).encode(), key), 404)
        long = {"model": model, "messages": [{"role": "user", "content": "word " * 2000}]}
        assert_error(
            raw(srv, "POST", "/tokenize", json.dumps(long).encode(), key),
            400,
            "context_length_exceeded",
        )
        logged = [r for r in srv.context.records if r.path == "/tokenize"]
        assert logged[0].status == 200 and logged[0].prompt_tokens > 0
        assert {r.status for r in logged} >= {200, 400, 404}
    finally:
        srv.stop()
