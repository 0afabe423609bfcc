"""engine_mlx.remote: a QwenDesk server as the engine, against a real ``python -m engine_mlx serve``
subprocess on 127.0.0.1 (the tiny model): the same typed events as the local engine, cached tokens on a
follow-up, Stop that stops the server's decoding, media as data URIs, clear errors."""

from __future__ import annotations

import base64
import io
import re
import threading

import pytest
from media_files import write_image, write_pdf, write_video
from serve_process import KEY

from engine_mlx.cancel import CancelToken
from engine_mlx.conversation import (
    Conversation,
    ImageAttachment,
    Message,
    PdfAttachment,
    Role,
    TextAttachment,
    VideoAttachment,
)
from engine_mlx.errors import ServerError, UnsupportedInputError
from engine_mlx.events import AnswerDelta, Finished, FinishReason, Stats, ThinkingDelta
from engine_mlx.prompt import MediaLimits, load_media
from engine_mlx.remote.connection import ServerConnection
from engine_mlx.remote.engine import RemoteEngine
from engine_mlx.remote.wire import StreamReader, chat_body
from engine_mlx.settings import GenerationSettings
from engine_mlx.tool_calls import call_markup, parse_tool_calls

GREEDY = dict(temperature=0.0, presence_penalty=0.0)
SLACK = 16  # prompt tokens a follow-up may prefill again beyond its new ones


@pytest.fixture(scope="module")
def remote(qwendesk_server):
    engine = RemoteEngine(ServerConnection.parse(qwendesk_server.address, KEY))
    engine.connect()
    return engine


def _split(events) -> tuple[str, str]:
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return thinking, answer


def _logged(line: str) -> dict[str, int | str]:
    """An access-log line's status, finish and token counts."""
    match = re.search(r" (\d{3}) (\S+); prompt (\d+) \(cached (\d+)\), completion (\d+);", line)
    assert match, line
    status, finish, prompt, cached, completion = match.groups()
    return {
        "status": int(status),
        "finish": finish,
        "prompt": int(prompt),
        "cached": int(cached),
        "completion": int(completion),
    }


def test_the_model_list_names_the_servers_model(remote, tiny_model_dir):
    model = remote.model_info
    assert model.name == tiny_model_dir.name
    assert model.is_vision is True  # the tiny model has its vision tower: the server says so
    assert model.context_length and model.context_length > 0


@pytest.mark.parametrize("thinking", [True, False])
def test_streams_the_same_typed_events_as_the_local_engine(remote, engine, thinking):
    convo = Conversation((Message(Role.USER, "Name three colours."),))
    settings = GenerationSettings(thinking=thinking, max_tokens=24, **GREEDY)
    events = list(remote.generate(convo, settings))
    local = list(engine.generate(convo, settings))
    assert _split(events) == _split(local)
    assert bool(_split(events)[0]) is thinking  # live thinking arrives as ThinkingDelta
    assert isinstance(events[-1], Finished) and events[-1].reason is local[-1].reason
    (stats,) = [e for e in events if isinstance(e, Stats)]
    (local_stats,) = [e for e in local if isinstance(e, Stats)]
    assert (stats.prompt_tokens, stats.generated_tokens, stats.thinking_tokens) == (
        local_stats.prompt_tokens,
        local_stats.generated_tokens,
        local_stats.thinking_tokens,
    )


def test_a_follow_up_reports_the_servers_cached_tokens(remote, qwendesk_server):
    before = len(qwendesk_server.requests())
    settings = GenerationSettings(thinking=False, max_tokens=12, **GREEDY)
    first_convo = Conversation((Message(Role.USER, "A follow-up test: say something long."),))
    first = list(remote.generate(first_convo, settings))
    (first_stats,) = [e for e in first if isinstance(e, Stats)]
    follow_up = Conversation(
        first_convo.messages
        + (Message(Role.ASSISTANT, _split(first)[1]), Message(Role.USER, "And then?"))
    )
    second = list(remote.generate(follow_up, settings))
    (stats,) = [e for e in second if isinstance(e, Stats)]
    # the server resumed from the first turn's state: its prompt was cached, but for the generation
    # prompt's tail the next turn renders otherwise (as on one Mac: at most new + 16 prefilled)
    assert stats.reused_tokens >= first_stats.prompt_tokens - SLACK > 0
    assert stats.prefilled_tokens == stats.prompt_tokens - stats.reused_tokens
    logged = _logged(qwendesk_server.wait_for_requests(before + 2)[before + 1])
    assert logged["cached"] == stats.reused_tokens and logged["prompt"] == stats.prompt_tokens


def test_stop_ends_the_stream_and_the_server_stops_decoding(remote, qwendesk_server):
    before = len(qwendesk_server.requests())
    token = CancelToken()
    events = []
    for event in remote.generate(
        Conversation((Message(Role.USER, "Write a long story"),)),
        GenerationSettings(thinking=False, max_tokens=4000, seed=1),
        token,
    ):
        events.append(event)
        if len(events) == 3:
            token.cancel()
    assert events[-1] == Finished(FinishReason.CANCELLED)
    # the server logs the request once its generation ended: it saw the client leave and stopped
    logged = _logged(qwendesk_server.wait_for_requests(before + 1)[before])
    assert logged["status"] == 499 and logged["finish"] == "disconnected"
    assert logged["completion"] < 4000


def test_stop_while_the_request_waits_for_its_first_token(remote, qwendesk_server):
    """Stop before any byte of the answer arrived (a long prefill, a queue): the blocked read returns."""
    before = len(qwendesk_server.requests())
    token = CancelToken()
    timer = threading.Timer(0.05, token.cancel)
    timer.start()
    events = list(
        remote.generate(
            Conversation((Message(Role.USER, "word " * 3000),)),
            GenerationSettings(max_tokens=200_000),
            token,
        )
    )
    assert events[-1] == Finished(FinishReason.CANCELLED)
    logged = _logged(qwendesk_server.wait_for_requests(before + 1)[before])
    assert logged["finish"] == "disconnected" and logged["completion"] < 200_000


def test_an_image_goes_as_a_data_uri_and_the_server_reads_it(remote, tmp_path, engine):
    image = write_image(tmp_path / "red.png")
    convo = Conversation((Message(Role.USER, "What colour?", (ImageAttachment(image),)),))
    settings = GenerationSettings(thinking=False, max_tokens=8, **GREEDY)
    events = list(remote.generate(convo, settings))
    local = list(engine.generate(convo, settings))
    (stats,) = [e for e in events if isinstance(e, Stats)]
    (local_stats,) = [e for e in local if isinstance(e, Stats)]
    assert stats.prompt_tokens == local_stats.prompt_tokens  # the image's tokens, as here
    assert _split(events) == _split(local)  # the same pixels: the same greedy answer


def test_a_tools_image_goes_in_its_tool_message_and_the_server_reads_it(remote, tmp_path, engine):
    """A tool's result with an image (as the tool loop builds it): sent in the tool message, counted
    by the server as this Mac's engine counts it."""
    from engine_mlx.conversation import Tool, ToolCall
    from engine_mlx.tools.loop import tool_message

    image = write_image(tmp_path / "shot.png")
    convo = Conversation(
        (
            Message(Role.USER, "Take a screenshot"),
            Message(Role.ASSISTANT, "", tool_calls=(ToolCall("shot", "{}", "c1"),)),
            tool_message("the screen", [image], vision=True),
        ),
        tools=(Tool("shot", "A screenshot.", '{"type": "object", "properties": {}}'),),
    )
    settings = GenerationSettings(thinking=False, max_tokens=6, **GREEDY)
    sent = chat_body("m", convo, settings, vision=True)["messages"][-1]
    assert sent["role"] == "tool"
    assert [p["type"] for p in sent["content"]] == ["image_url", "text"]
    events = list(remote.generate(convo, settings))
    local = list(engine.generate(convo, settings))
    (stats,) = [e for e in events if isinstance(e, Stats)]
    (local_stats,) = [e for e in local if isinstance(e, Stats)]
    assert stats.prompt_tokens == local_stats.prompt_tokens
    assert _split(events) == _split(local)


def test_count_tokens_asks_the_servers_tokenize(remote, engine, qwendesk_server, tmp_path):
    """The context meter's count in server mode: the server's POST /tokenize, equal to this Mac's
    count and to the prompt the answer then reports."""
    image = write_image(tmp_path / "blue.png", color=(0, 0, 255))
    convo = Conversation((Message(Role.USER, "What colour?", (ImageAttachment(image),)),))
    settings = GenerationSettings(thinking=False, max_tokens=2, **GREEDY)
    before = len(qwendesk_server.requests("/tokenize"))
    count = remote.count_tokens(convo, settings)
    assert count == engine.count_tokens(convo, settings)
    assert (
        _logged(qwendesk_server.wait_for_requests(before + 1, "/tokenize")[before])["prompt"]
        == count
    )
    (stats,) = [e for e in remote.generate(convo, settings) if isinstance(e, Stats)]
    assert stats.prompt_tokens == count
    wrong = RemoteEngine(ServerConnection.parse(qwendesk_server.address, "wrong"))
    wrong._model = remote.model_info
    with pytest.raises(ServerError, match=r"refused the API key \(401\)"):
        wrong.count_tokens(convo, settings)


def test_pdf_pages_and_video_frames_go_as_images_decoded_as_here(tmp_path):
    from PIL import Image

    pdf = write_pdf(tmp_path / "doc.pdf", pages=3)
    video = write_video(tmp_path / "clip.mp4", seconds=2.0)
    notes = tmp_path / "notes.txt"
    notes.write_text("remember the milk")
    attachments = (
        PdfAttachment(pdf, 2, 3),
        VideoAttachment(video, fps=2.0),
        TextAttachment(notes),
    )
    convo = Conversation((Message(Role.USER, "Summarise", attachments),))
    body = chat_body("m", convo, GenerationSettings(thinking=False), vision=True)
    parts = body["messages"][0]["content"]
    uris = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    local = load_media(attachments, MediaLimits())
    frames = local.videos[0].frames
    assert len(uris) == 2 + len(frames)  # pages 2 and 3, then each sampled frame
    pages = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))) for u in uris[:2]]
    assert all(u.startswith("data:image/png;base64,") for u in uris[:2])
    assert [p.tobytes() for p in pages] == [p.tobytes() for p in local.images]  # lossless
    assert all(u.startswith("data:image/jpeg;base64,") for u in uris[2:])
    assert parts[-1]["type"] == "text" and "remember the milk" in parts[-1]["text"]
    assert body["enable_thinking"] is False and body["stream"] is True
    # a text-only server model is told so before anything is sent
    with pytest.raises(UnsupportedInputError, match="text-only"):
        chat_body("m", convo, GenerationSettings(), vision=False)


def test_thinking_modes_and_continue_go_in_the_body():
    convo = Conversation(
        (Message(Role.USER, "Hi"), Message(Role.ASSISTANT, "Hel", thinking="greet")),
        continue_last=True,
    )
    body = chat_body(
        "m", convo, GenerationSettings(thinking=True, thinking_budget=64, seed=3), vision=True
    )
    assert (body["enable_thinking"], body["thinking_budget"], body["seed"]) == (True, 64, 3)
    assert body["continue_final_message"] is True
    assert body["messages"][-1] == {
        "role": "assistant",
        "content": "Hel",
        "reasoning_content": "greet",
    }
    off = chat_body("m", convo, GenerationSettings(thinking=False, thinking_budget=64), vision=True)
    assert off["enable_thinking"] is False and "thinking_budget" not in off


def test_wrong_key_and_no_server_are_clear_errors(qwendesk_server):
    wrong = RemoteEngine(ServerConnection.parse(qwendesk_server.address, "not-the-key"))
    with pytest.raises(ServerError, match="refused the API key") as refused:
        wrong.connect()
    assert refused.value.status == 401 and "Settings ▸ Engine" in str(refused.value)
    assert "not-the-key" not in str(refused.value)
    none = RemoteEngine(ServerConnection.parse(qwendesk_server.address))
    with pytest.raises(ServerError, match="needs an API key"):
        none.connect()
    import socket

    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    down = RemoteEngine(ServerConnection.parse(f"127.0.0.1:{port}", KEY))
    with pytest.raises(ServerError, match="Cannot reach the QwenDesk server at 127.0.0.1"):
        down.connect()


def test_a_key_refused_mid_session_is_a_clear_error_before_any_event(remote, qwendesk_server):
    wrong = RemoteEngine(ServerConnection.parse(qwendesk_server.address, "wrong"))
    wrong._model = remote.model_info  # connected once, then the server's key changed
    with pytest.raises(ServerError, match=r"refused the API key \(401\)"):
        list(wrong.generate(Conversation((Message(Role.USER, "hi"),))))


def test_addresses_are_checked_and_the_key_is_never_shown():
    assert ServerConnection.parse("studio.local:8035").base_url == "http://studio.local:8035/v1"
    assert (
        ServerConnection.parse("https://studio.local:8035/v1/", "k").base_url
        == "https://studio.local:8035/v1"
    )
    assert "s3cret" not in repr(ServerConnection.parse("h:1", "s3cret"))
    for bad, reason in (
        ("", "Enter the server's address"),
        ("ftp://studio.local", "not an http"),
        ("http://studio.local:port", "not a server address"),
        ("http://user:pw@studio.local:8035", "not in the address"),
    ):
        with pytest.raises(ServerError, match=reason):
            ServerConnection.parse(bad)
    with pytest.raises(ServerError, match="spaces"):
        ServerConnection.parse("h:1", "two words")


def test_the_stream_reader_takes_only_well_formed_fields():
    reader = StreamReader()
    assert reader.feed('{"choices": [{"delta": {"reasoning_content": "hm", "content": 5}}]}') == [
        ThinkingDelta("hm")
    ]
    assert reader.feed("not json") == [] and "cannot read" in reader.error
    reader = StreamReader()
    reader.feed('{"error": {"message": "The engine failed: boom"}}')
    assert reader.error == "The engine failed: boom"
    reader = StreamReader()
    reader.feed(
        '{"choices": [{"delta": {}, "finish_reason": "length"}], "usage": {"prompt_tokens": -3}}'
    )
    assert reader.finish is FinishReason.LENGTH
    from engine_mlx.remote.wire import stats_from_usage

    stats = stats_from_usage(reader.usage, 0.5, 1.0)
    assert stats.prompt_tokens == 0  # a negative count is not trusted


def test_tool_calls_come_back_as_the_models_markup():
    """The server hands over tool calls whole; the tool loop reads them from the answer text, as from a
    local answer."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "parameters": {
                    "type": "object",
                    "properties": {"zone": {"type": "string"}, "hours": {"type": "integer"}},
                },
            },
        }
    ]
    markup = call_markup("get_time", '{"zone": "Europe/Paris", "hours": 3}')
    (parsed,) = parse_tool_calls(markup, tools)
    assert (parsed.name, parsed.arguments) == ("get_time", '{"zone": "Europe/Paris", "hours": 3}')
    reader = StreamReader()
    reader.feed(
        '{"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "type": "function", '
        '"function": {"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\"}"}}]}, '
        '"finish_reason": "tool_calls"}]}'
    )
    assert reader.call_text() == call_markup("get_time", '{"zone": "UTC"}')


def test_https_with_the_servers_own_certificate(engine, tmp_path):
    """serve --tls-cert with a self-signed certificate: the client trusts that certificate when told,
    and refuses the server otherwise (no silent plain fallback, no unchecked TLS)."""
    from test_api_exposed import _self_signed

    from engine_mlx.jobs import EngineThread
    from engine_mlx.server.config import ServerConfig
    from engine_mlx.server.runner import ApiServer

    cert, key = _self_signed(tmp_path)
    jobs = EngineThread()
    server = ApiServer(engine, jobs, ServerConfig(port=0, api_key=KEY, tls_cert=cert, tls_key=key))
    server.bind()
    server.start()
    try:
        address = f"https://127.0.0.1:{server.port}"
        trusted = RemoteEngine(ServerConnection.parse(address, KEY, str(cert)))
        assert trusted.connect().name == engine.model_info.name
        events = list(
            trusted.generate(
                Conversation((Message(Role.USER, "hi"),)),
                GenerationSettings(thinking=False, max_tokens=4),
            )
        )
        assert events[-1].reason in (FinishReason.STOP, FinishReason.LENGTH)
        untrusted = RemoteEngine(ServerConnection.parse(address, KEY))
        with pytest.raises(ServerError, match="presented a certificate this computer does not"):
            untrusted.connect()
        with pytest.raises(ServerError, match="only used with an https"):
            ServerConnection.parse(f"http://127.0.0.1:{server.port}", KEY, str(cert))
    finally:
        server.stop()
        jobs.close(timeout=5)
