"""A QwenDesk server as the engine: the same calls and typed events as ``engine_mlx.engine.Engine``,
answered by ``python -m engine_mlx serve`` on another machine through its OpenAI-compatible API.

Nothing is loaded here: the model, its state snapshots and their reuse live on the server, which
finds a follow-up's cached prefix by token ids (``usage.prompt_tokens_details.cached_tokens``).
Only the configured server is ever contacted. Stop shuts the connection's socket down, which the
server sees as a disconnect and stops decoding at its next token, even while this thread is
blocked reading.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine_mlx.cancel import CancelToken
from engine_mlx.conversation import Conversation
from engine_mlx.errors import ModelNotLoadedError, ServerError
from engine_mlx.events import AnswerDelta, Event, Finished, FinishReason
from engine_mlx.prompt import DecodedMedia, MediaLimits
from engine_mlx.remote.connection import ServerConnection
from engine_mlx.remote.wire import StreamReader, chat_body, stats_from_usage
from engine_mlx.settings import GenerationSettings

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger(__name__)

MAX_ERROR_BODY = 64 << 10  # an error answer is read up to this much (an HTTP body is untrusted)
MAX_MODELS_BODY = 1 << 20
MAX_TOKENIZE_BODY = 32 << 20  # the ids of a prompt that fills a 262k context take a few MB
# No byte for this long mid-answer means the server is gone (serve sends a keep-alive every 10 s).
READ_TIMEOUT_S = 120.0
_CANCEL_POLL_S = 0.05


@dataclass(frozen=True)
class RemoteModel:
    """The model a server serves, as the app needs to know it."""

    name: str  # the model id (GET /v1/models)
    server: str  # host:port
    is_vision: bool
    context_length: int | None


def _message_of(body: bytes) -> str:
    """An error answer's message (OpenAI's shape), cut to one short paragraph."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message[:500] if isinstance(message, str) else ""


class RemoteEngine:
    """The engine's public calls, over HTTP. Blocking; one generation at a time (the caller's job
    thread runs them, as for the local engine)."""

    def __init__(self, connection: ServerConnection, *, media_limits: MediaLimits = MediaLimits()):
        self.connection = connection
        self.media_limits = media_limits
        self.decoded_media = DecodedMedia()
        self._model: RemoteModel | None = None

    # ------------------------------------------------------------------ the server's model

    @property
    def model_info(self) -> RemoteModel | None:
        return self._model

    def connect(self) -> RemoteModel:
        """Ask the server which model it serves (``GET /v1/models``); ServerError when it cannot be
        reached, refuses the key or serves none yet."""
        with self._client() as client:
            try:
                response = client.get(self._url("/models"), headers=self._headers())
            except Exception as exc:  # noqa: BLE001 - httpx2's transport errors, named for the user
                raise self._unreachable(exc) from None
            body = response.content[:MAX_MODELS_BODY]
            if response.status_code != 200:
                raise self._refused(response.status_code, body)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise ServerError(
                f"{self.connection.host} answered, but not as a QwenDesk server (no model list at "
                f"{self._url('/models')}); check the address in Settings ▸ Engine."
            )
        first = next(
            (m for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)), None
        )
        if first is None:
            raise ServerError(
                f"The server at {self.connection.host} has no model loaded yet; start `serve` with "
                "--model there, or wait until it has loaded, then reconnect in Settings ▸ Engine."
            )
        extra: dict[str, Any] = first["qwendesk"] if isinstance(first.get("qwendesk"), dict) else {}
        vision = extra.get("vision")
        context = extra.get("context_length")
        self._model = RemoteModel(
            name=first["id"][:200],
            server=self.connection.host,
            is_vision=vision if isinstance(vision, bool) else True,
            context_length=context if isinstance(context, int) and context > 0 else None,
        )
        log.info("using %s on the server at %s", self._model.name, self.connection.host)
        return self._model

    def unload(self) -> None:
        """Nothing is loaded here; forget the server's model."""
        self._model = None
        self.decoded_media.clear()

    # ------------------------------------------------------------------ what the app calls

    def context_limit(self, settings: GenerationSettings) -> int:
        limits = [
            n
            for n in (self._model.context_length if self._model else 0, settings.context_limit)
            if n
        ]
        return min(limits, default=0)

    def check_prompt_size(self, conversation: Conversation, settings: GenerationSettings) -> None:
        """The server checks the prompt's size itself (a 400 with its reason)."""

    def count_tokens(
        self, conversation: Conversation, settings: GenerationSettings = GenerationSettings()
    ) -> int:
        """The prompt tokens the server would start from (its ``POST /tokenize``, vLLM's shape): the
        same body as the chat request, so the count is the one the answer's stats will show."""
        body = self._chat_body(conversation, settings)
        for streaming in ("stream", "stream_options"):
            del body[streaming]
        url = self.connection.base_url.removesuffix("/v1") + "/tokenize"
        with self._client() as client:
            try:
                with client.stream("POST", url, json=body, headers=self._headers()) as response:
                    reply = _read_capped(response, MAX_TOKENIZE_BODY)
            except Exception as exc:  # noqa: BLE001 - httpx2's transport errors, named for the user
                raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise self._refused(response.status_code, reply)
        try:
            count = json.loads(reply).get("count")
        except (ValueError, AttributeError):
            count = None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ServerError(
                f"The server at {self.connection.host} answered the token count in a shape "
                "QwenDesk cannot read; update QwenDesk on the server."
            )
        return count

    def _chat_body(self, conversation: Conversation, settings: GenerationSettings) -> dict:
        """The chat request for ``conversation`` (its media as data URIs), for the served model."""
        model = self._require_model()
        return chat_body(
            model.name,
            conversation,
            settings,
            vision=model.is_vision,
            limits=self.media_limits,
            decoded=self.decoded_media,
        )

    def persist(self, conversation_id: str) -> None:
        """The server keeps its own state snapshots."""

    def forget(self, conversation_id: str) -> None:
        """The server keeps no state by chat id (it resumes by token ids)."""

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        conversation: Conversation,
        settings: GenerationSettings = GenerationSettings(),
        cancel: CancelToken | None = None,
    ) -> Iterator[Event]:
        """Stream events for the next assistant turn, as ``Engine.generate`` does: bad input or a
        refused request raises (ServerError, MediaError, ...) before the first event; a failure
        mid-answer ends the stream with ``Finished(ERROR, message)``."""
        started = time.perf_counter()
        body = self._chat_body(conversation, settings)
        cancel = cancel or CancelToken()
        sockets: list[socket.socket] = []

        def trace(name: str, info: dict[str, Any]) -> None:
            # the connection's socket (after TLS, the wrapped one): Stop shuts it down
            if name.endswith(("connect_tcp.complete", "start_tls.complete")):
                sock = info["return_value"].get_extra_info("socket")
                if sock is not None:
                    sockets.append(sock)

        ended = threading.Event()
        watcher = threading.Thread(
            target=_shut_on_cancel, args=(cancel, ended, sockets), name="remote-stop", daemon=True
        )
        watcher.start()
        try:
            yield from self._stream(body, cancel, started, trace)
        finally:
            ended.set()

    def _stream(
        self,
        body: dict[str, Any],
        cancel: CancelToken,
        started: float,
        trace: Callable[[str, dict[str, Any]], None],
    ) -> Iterator[Event]:
        import httpx2

        with self._client() as client:
            request = client.build_request(
                "POST",
                self._url("/chat/completions"),
                json=body,
                headers=self._headers(),
                extensions={"trace": trace},
            )
            try:
                response = client.send(request, stream=True)
            except Exception as exc:  # noqa: BLE001 - httpx2's transport errors, named for the user
                if cancel.cancelled:
                    yield Finished(FinishReason.CANCELLED)
                    return
                raise self._unreachable(exc) from None
            try:
                if response.status_code != 200:
                    raise self._refused(response.status_code, _read_capped(response))
                reader = StreamReader()
                ttft: float | None = None
                try:
                    for sse in httpx2.EventSource(response):
                        for event in reader.feed(sse.data):
                            if ttft is None:
                                ttft = time.perf_counter() - started
                            yield event
                        if reader.done or reader.error or cancel.cancelled:
                            break
                except Exception as exc:  # noqa: BLE001 - the connection broke (or Stop shut it)
                    if not cancel.cancelled:
                        yield Finished(
                            FinishReason.ERROR,
                            f"The connection to the server at {self.connection.host} broke "
                            f"mid-answer ({_reason(exc)}); send again to retry.",
                        )
                        return
                if cancel.cancelled:
                    yield Finished(FinishReason.CANCELLED)
                    return
                if reader.error:
                    yield Finished(
                        FinishReason.ERROR, f"The server at {self.connection.host}: {reader.error}"
                    )
                    return
                calls = reader.call_text()
                if calls:  # handed on as the model wrote them: the tool loop reads the markup
                    yield AnswerDelta(calls)
                total = time.perf_counter() - started
                if reader.usage is not None:
                    yield stats_from_usage(reader.usage, ttft if ttft is not None else total, total)
                if reader.finish is None:
                    yield Finished(
                        FinishReason.ERROR,
                        f"The server at {self.connection.host} ended the answer without finishing "
                        "it; send again to retry.",
                    )
                    return
                yield Finished(reader.finish)
            finally:
                response.close()

    # ------------------------------------------------------------------ HTTP

    def _require_model(self) -> RemoteModel:
        if self._model is None:
            raise ModelNotLoadedError(
                f"Not connected to the server at {self.connection.host}; reconnect in Settings ▸ Engine."
            )
        return self._model

    def _client(self) -> httpx2.Client:
        """A client per call: Stop shuts down its own connection."""
        import httpx2

        certificate = self.connection.certificate
        verify: ssl.SSLContext | bool = True
        if certificate is not None:
            try:
                verify = ssl.create_default_context(cafile=str(certificate))
            except (OSError, ssl.SSLError) as exc:
                raise ServerError(
                    f"The certificate {certificate} cannot be used ({_reason(exc)}); choose the "
                    "PEM file the server was started with (serve --tls-cert) in Settings ▸ Engine."
                ) from None
        return httpx2.Client(
            timeout=httpx2.Timeout(READ_TIMEOUT_S, connect=self.connection.connect_timeout_s),
            verify=verify,
            trust_env=False,  # only the server the user configured: no proxy from the environment
            follow_redirects=False,
        )

    def _url(self, path: str) -> str:
        return self.connection.base_url + path

    def _headers(self) -> dict[str, str]:
        key = self.connection.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _unreachable(self, exc: BaseException) -> ServerError:
        host = self.connection.host
        if isinstance(_innermost(exc), ssl.SSLCertVerificationError):
            return ServerError(
                f"The server at {host} presented a certificate this computer does not trust "
                f"({_reason(exc)}); in Settings ▸ Engine, choose the certificate file the server "
                "was started with (serve --tls-cert)."
            )
        return ServerError(
            f"Cannot reach the QwenDesk server at {host} ({_reason(exc)}); check that "
            "`python -m engine_mlx serve` runs there and the address in Settings ▸ Engine."
        )

    def _refused(self, status: int, body: bytes) -> ServerError:
        host, message = self.connection.host, _message_of(body)
        if status == 401:
            what = (
                "refused the API key"
                if self.connection.api_key
                else "needs an API key and none is set"
            )
            return ServerError(
                f"The server at {host} {what} (401); enter the key its `serve --api-key` uses "
                "in Settings ▸ Engine.",
                status,
            )
        if status == 404 and not message:
            message = "no QwenDesk API at this address; check the address in Settings ▸ Engine"
        return ServerError(
            f"The server at {host} answered {status}: {message or 'no reason given'}", status
        )


def _read_capped(response: Any, cap: int = MAX_ERROR_BODY) -> bytes:
    body = bytearray()
    for piece in response.iter_bytes():
        body += piece
        if len(body) >= cap:
            break
    return bytes(body[:cap])


def _innermost(exc: BaseException) -> BaseException:
    inner = exc
    while (cause := inner.__cause__ or inner.__context__) is not None:
        inner = cause
    return inner


def _reason(exc: BaseException) -> str:
    """A transport error in a few words (the innermost cause, e.g. "Connection refused")."""
    inner = _innermost(exc)
    text = getattr(inner, "strerror", None) or str(inner) or type(inner).__name__
    return str(text).strip()[:200]


def _shut_on_cancel(cancel: CancelToken, ended: threading.Event, sockets: list) -> None:
    """On Stop, shut the connection down: the blocked read returns, and the server sees the
    client leave (it cancels the generation at its next token)."""
    while not ended.is_set():
        if cancel.wait(_CANCEL_POLL_S):
            for sock in sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed
            return
