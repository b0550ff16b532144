"""The ASGI application: ``POST /v1/tts``, its CDN, and the ``/__mock__`` control routes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from mockserver.audio import (
    CHUNK_SIZE,
    FORMATS,
    AudioCache,
    max_duration_ms,
    samples_for,
    speech_duration,
)
from mockserver.cdn import AUDIO_PATH_PREFIX, AudioPathError, AudioSpec, audio_url, parse_audio_path
from mockserver.config import MockConfig
from mockserver.errors import error_response, timestamp
from mockserver.journal import Journal, JournalEntry, mask_headers
from mockserver.pricing import usage
from mockserver.scenario import (
    AUDIO_FAULTS,
    CUT_AFTER,
    NO_BODY,
    Scenario,
    ScenarioError,
    Step,
    parse_scenario,
)
from mockserver.validation import BodyValidationError, SpeechRequest, parse_speech_request

__all__ = ["CONTROL_PREFIX", "MAX_BODY_BYTES", "TTS_PATH", "create_app"]

TTS_PATH = "/v1/tts"
CONTROL_PREFIX = "/__mock__/"
#: Request bodies above this get a 413, as a JSON body parser's limit would give.
MAX_BODY_BYTES = 1024 * 1024
_MAX_CONTROL_BODY_BYTES = 8 * 1024 * 1024

# Per-request values kept in the ASGI scope, which Starlette passes down intact.
_REQUEST_ID = "mockserver.request_id"
_BODY = "mockserver.body"
_ENTRY = "mockserver.journal_entry"
_TRANSPORT = "mockserver.transport"

# What a misbehaving upstream or a captive portal sends instead of what was promised.
_GARBAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head>"
    b"<body><p>This is not the response you were looking for.</p></body></html>\n"
)
# How each format's file starts, as far as a reader that checks signatures looks
# (``signature-junk``); raw PCM has no signature.
_SIGNATURES = {
    "mp3": b"ID3",
    "opus": b"OggS",
    "aac": b"\xff\xf1",  # an ADTS sync word: MPEG-4, no CRC
    "flac": b"fLaC",
    "wav": b"RIFF\xff\xff\xff\xffWAVE",
    "pcm": b"",
}

logger = logging.getLogger("mockserver")


def create_app(config: MockConfig | None = None) -> Starlette:
    """The mock AI/ML API as an ASGI app, for a socket or for ``httpx.ASGITransport``.

    ``app.state`` holds ``config`` (:class:`MockConfig`), ``journal``
    (:class:`~mockserver.journal.Journal`), ``scenario``
    (:class:`~mockserver.scenario.Scenario`) and ``audio_cache``
    (:class:`~mockserver.audio.AudioCache`), for in-process use.
    """
    config = config or MockConfig()
    routes = [
        Route(TTS_PATH, _tts, methods=["POST"]),
        Route(AUDIO_PATH_PREFIX + "{bucket}/{name}", _audio, methods=["GET", "HEAD"]),
        Route(CONTROL_PREFIX + "scenario", _push_scenario, methods=["POST"]),
        Route(CONTROL_PREFIX + "scenario", _show_scenario, methods=["GET"]),
        Route(CONTROL_PREFIX + "scenario", _clear_scenario, methods=["DELETE"]),
        Route(CONTROL_PREFIX + "requests", _requests, methods=["GET"]),
        Route(CONTROL_PREFIX + "reset", _reset, methods=["POST"]),
        # Anything else, any method: the AI/ML-shaped 404 its framework sends.
        Route("/{path:path}", _NotFound()),
    ]
    app = _MockApp(routes=routes, exception_handlers={Exception: _internal_error})
    app.state.config = config
    app.state.journal = Journal(config.journal_size)
    app.state.scenario = Scenario(config.max_steps)
    app.state.audio_cache = AudioCache(config.audio_cache_bytes)
    return app


class _MockApp(Starlette):
    """Starlette plus the per-request bookkeeping every route shares.

    Done here, outside Starlette's middleware, because two things need the
    server's own ``send``: the ``x-request-id`` header on every reply (error pages
    included) and the connection-dropping faults (see :func:`_find_transport`).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope[_REQUEST_ID] = request_id
        scope[_TRANSPORT] = _find_transport(send)
        entry: JournalEntry | None = None
        journal: Journal = self.state.journal
        if not scope["path"].startswith(CONTROL_PREFIX):
            body = await _read_body(receive, MAX_BODY_BYTES)
            scope[_BODY] = body
            entry = journal.record(_journal_entry(scope, body, request_id))
            scope[_ENTRY] = entry
            receive = _replay(body or b"", receive)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:  # a scenario step may set its own
                    headers["x-request-id"] = request_id
                if entry is not None:
                    journal.annotate(entry, status=message["status"])
            await send(message)

        await super().__call__(scope, receive, send_with_id)


def _find_transport(send: Send) -> Any:
    """The connection's transport, when the server is uvicorn; else ``None``.

    The one place the mock reaches past ASGI, and why: ASGI has no way to drop a
    connection. An app that raises, or returns, before replying gets a 500 sent for
    it (no ``reset`` possible); one that does so after part of the body makes uvicorn
    close the connection, but log an error ("Exception in ASGI application" with its
    traceback, or "ASGI callable returned without completing response.") that a
    fault the test asked for should not write. uvicorn's ``send`` is a method of its
    per-request object, which holds the asyncio transport, so the ``reset``,
    ``truncated`` and ``cut`` faults close that directly, once checked to be one.
    Elsewhere (in-process, or a server without it) they raise
    ``httpx.RemoteProtocolError`` instead, which is what an httpx client on a socket
    would have seen.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if callable(getattr(transport, "abort", None)) and callable(getattr(transport, "close", None)):
        return transport
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` if it is longer than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks) if size <= limit else None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out the already-read body once, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _route_of(method: str, path: str) -> str:
    if path == TTS_PATH and method == "POST":
        return "tts"
    # Exactly /generations/{bucket}/{name}: what the CDN route matches.
    if path.startswith(AUDIO_PATH_PREFIX) and method in ("GET", "HEAD"):
        bucket, _, name = path[len(AUDIO_PATH_PREFIX) :].partition("/")
        if bucket and name and "/" not in name:
            return "audio"
    return "other"


def _journal_entry(scope: Scope, body: bytes | None, request_id: str) -> dict[str, Any]:
    parsed: Any = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    return {
        "time": timestamp(),
        "request_id": request_id,
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "route": _route_of(scope["method"], scope["path"]),
        "headers": mask_headers(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ),
        "json": parsed,
        "status": None,
        "step": None,
    }


# -- helpers shared by the routes ------------------------------------------------------


def _request_id(request: Request) -> str:
    return str(request.scope[_REQUEST_ID])


def _take_step(request: Request, route: str) -> Step | None:
    scenario: Scenario = request.app.state.scenario
    step = scenario.take(route)
    if step is not None:
        logger.debug("%s %s: using step %s", request.method, request.url.path, step.to_json())
        entry = request.scope.get(_ENTRY)
        if entry is not None:
            request.app.state.journal.annotate(entry, step=step.to_json())
    return step


def _error(request: Request, status: int, message: str | None = None) -> Response:
    return error_response(status, request.url.path, _request_id(request), message)


def _step_error(request: Request, step: Step) -> Response:
    assert step.status is not None
    if step.body is not NO_BODY:
        return _body_response(step.body, step.status, "application/json; charset=utf-8")
    return _error(request, step.status, step.message)


def _body_response(body: Any, status: int, content_type: str) -> Response:
    """A step's ``body``: strings (and bytes) go out as they are, anything else as JSON."""
    content = _content(body)
    return Response(content, status_code=status, headers={"content-type": content_type})


def _content(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _junk(step: Step) -> bytes:
    """What a fault sends where the promised body should be: the step's ``body``, or HTML."""
    return _GARBAGE if step.body is NO_BODY else _content(step.body)


def _finish(response: Response, step: Step | None) -> Response:
    """Apply the step's extra headers and transport-level fault to a reply."""
    if step is None:
        return response
    for name, value in step.headers.items():
        response.headers[name] = value
    if step.fault in ("slow-body", "truncated", "junk-tail"):
        return _Faulty(response, step)
    if step.fault == "cut":
        return _Cut(response, CUT_AFTER if step.cut_after is None else step.cut_after)
    return response


async def _delay(step: Step | None) -> None:
    # slow-body spends its delay dribbling the body, junk-tail before the junk, instead
    # of before the reply.
    if step is not None and step.delay_ms and step.fault not in ("slow-body", "junk-tail"):
        await anyio.sleep(step.delay_ms / 1000)


def _bearer_token(header: str | None) -> str | None:
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _authorized(header: str | None, keys: tuple[str, ...]) -> bool:
    token = _bearer_token(header)
    if token is None:
        return False
    if not keys:
        return True
    # Compare with every key, in constant time, so timing says nothing about them.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode(), key.encode())
    return matched


def _audio_response(
    cache: AudioCache, voice: str, total: int, fmt: str, status: int = 200
) -> StreamingResponse:
    """A chunked audio reply (no Content-Length), encoded as it is sent unless cached."""
    return StreamingResponse(
        _iter_audio(cache, voice, total, fmt),
        status_code=status,
        media_type=FORMATS[fmt].content_type,
    )


async def _iter_audio(cache: AudioCache, voice: str, total: int, fmt: str) -> AsyncIterator[bytes]:
    cached = cache.get((voice, total, fmt))
    if cached is not None:
        for offset in range(0, len(cached), CHUNK_SIZE):
            yield cached[offset : offset + CHUNK_SIZE]
        return
    chunks = cache.iter_bytes(voice, total, fmt)
    try:
        while (chunk := await anyio.to_thread.run_sync(_next_chunk, chunks)) is not None:
            yield chunk
    finally:
        # A cancelled worker thread is waited for, so the encoder is idle here and
        # closing it (client gone mid-stream) is safe.
        chunks.close()


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


# -- POST /v1/tts ------------------------------------------------------------------------


async def _tts(request: Request) -> Response:
    step = _take_step(request, "tts")
    await _delay(step)
    if step is not None and step.fault == "reset":
        return _Reset()
    if step is not None and step.fault == "garbage":
        garbage = _body_response(_junk(step), step.status or 200, "application/json; charset=utf-8")
        return _finish(garbage, step)
    if step is not None and step.is_error:
        return _finish(_step_error(request, step), step)

    config: MockConfig = request.app.state.config
    if not _authorized(request.headers.get("authorization"), config.api_keys):
        return _finish(_error(request, 401), step)
    body = request.scope[_BODY]
    if body is None:
        return _finish(_error(request, 413), step)
    try:
        speech = parse_speech_request(body, request.headers.get("content-type"))
    except BodyValidationError as exc:
        return _finish(_error(request, 400, exc.message), step)
    await _generate(request, speech, step)
    return _finish(_tts_success(request, speech, step), step)


async def _generate(request: Request, speech: SpeechRequest, step: Step | None) -> None:
    """Wait as long as making the audio takes: the whole file exists before the reply."""
    config: MockConfig = request.app.state.config
    latency = config.generation_latency
    if step is not None and step.latency is not None:
        latency = step.latency  # even "0": this reply comes at once
    seconds = latency.seconds(len(speech.text))
    if seconds > 0:
        await anyio.sleep(seconds)


def _tts_success(request: Request, speech: SpeechRequest, step: Step | None) -> Response:
    config: MockConfig = request.app.state.config
    shape = (step.shape if step else None) or config.response_shape
    served_format = (step.audio_format if step else None) or speech.response_format
    duration = speech_duration(speech.text, speech.speed)
    if config.max_audio_seconds is not None:
        duration = min(duration, config.max_audio_seconds)
    duration_ms = round(duration * 1000)

    response: Response
    if shape == "binary":
        # The OpenAPI document lists the binary reply as audio/wav, whatever was asked.
        fmt = (step.audio_format if step else None) or "wav"
        cache: AudioCache = request.app.state.audio_cache
        response = _audio_response(cache, speech.voice, samples_for(duration_ms), fmt)
        status = 200
    else:
        root = config.cdn_url or str(request.base_url).rstrip("/")
        url = (step.audio_url if step else None) or audio_url(
            root, speech.voice, served_format, duration_ms
        )
        payload: dict[str, Any]
        if shape == "url-object":
            # 201: the doc page with this example dates from when the OpenAPI
            # document answered POST with 201.
            payload, status = {"audio": {"url": url}}, 201
        elif shape == "url-string":
            payload = {"audio": url, "meta": {"usage": usage(speech.model, speech.text)}}
            status = 200
        else:
            payload, status = _metadata(speech, _request_id(request), duration_ms), 201
        response = JSONResponse(payload, status_code=status)

    if step is not None and step.status is not None:
        status = step.status
        response.status_code = status
    if step is not None and step.body is not NO_BODY:
        response = _body_response(step.body, status, "application/json; charset=utf-8")
    return response


def _metadata(speech: SpeechRequest, request_id: str, duration_ms: int) -> dict[str, Any]:
    """The older 201 reply: Deepgram-style metadata and no way to get the audio."""
    model_id = str(uuid.uuid5(uuid.NAMESPACE_URL, speech.model))
    return {
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": request_id,
            # Of the submitted input, as in Deepgram's metadata; here that is the text.
            "sha256": hashlib.sha256(speech.text.encode()).hexdigest(),
            "created": timestamp(),
            "duration": duration_ms / 1000,
            "channels": 1,
            "models": [model_id],
            "model_info": {model_id: {"name": speech.model, "version": "1", "arch": "tts"}},
        }
    }


# -- GET /generations/{bucket}/{name} ------------------------------------------------------


async def _audio(request: Request) -> Response:
    # No authentication here: CDNs serve by unguessable URL. The journal shows
    # whether a client sent its key anyway.
    step = _take_step(request, "audio")
    await _delay(step)
    if step is not None and step.fault == "reset":
        return _Reset()
    spec: AudioSpec | None = None
    try:
        spec = parse_audio_path(
            request.path_params["bucket"],
            request.path_params["name"],
            request.query_params.get("duration_ms"),
        )
    except AudioPathError as exc:
        problem = str(exc)
    fmt = (step.audio_format if step else None) or (spec.format if spec else None)
    if step is not None and step.fault == "garbage":
        content_type = FORMATS[fmt].content_type if fmt else "audio/mpeg"
        return _finish(_body_response(_junk(step), step.status or 200, content_type), step)
    if step is not None and step.is_error:
        return _finish(_step_error(request, step), step)
    if spec is None or fmt is None:
        return _finish(_error(request, 404, f"Not Found: {problem}"), step)
    if spec.duration_ms > max_duration_ms(fmt):
        message = f"Not Found: {fmt} clips are at most {max_duration_ms(fmt)} ms"
        return _finish(_error(request, 404, message), step)

    status = step.status if step is not None and step.status is not None else 200
    content_type = FORMATS[fmt].content_type
    response: Response
    if step is not None and step.fault == "signature-junk":
        response = _body_response(_SIGNATURES[fmt] + _junk(step), status, content_type)
    elif step is not None and step.body is not NO_BODY and step.fault not in AUDIO_FAULTS:
        response = _body_response(step.body, status, content_type)
    elif request.method == "HEAD":
        response = Response(status_code=status, media_type=content_type)
        del response.headers["content-length"]
    else:
        cache: AudioCache = request.app.state.audio_cache
        ranged = not (step is not None and step.ignore_range) and _rangeable(spec, fmt)
        wanted = _byte_range(request.headers.get("range")) if ranged else None
        if wanted is not None and status == 200:
            clip = await anyio.to_thread.run_sync(_whole_clip, cache, spec.voice, spec.samples, fmt)
            response = _partial(clip, wanted, content_type)
        else:
            response = _audio_response(cache, spec.voice, spec.samples, fmt, status)
        if ranged:
            response.headers["accept-ranges"] = "bytes"
    return _finish(response, step)


# -- byte ranges: a cut download resumed -------------------------------------------------

#: Raw clips longer than this are served whole, whatever the ``Range``: a range is cut
#: from the whole encoded clip, held in memory.
_MAX_RANGED_BYTES = 64 * 1024 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]{1,15})\s*-\s*([0-9]{0,15})\s*$", re.ASCII)


def _rangeable(spec: AudioSpec, fmt: str) -> bool:
    # Compressed clips are at most 20 minutes long, so a few megabytes; raw ones can
    # reach a gigabyte, and are only ranged when that is not the case.
    return not FORMATS[fmt].raw or spec.samples * 2 <= _MAX_RANGED_BYTES


def _byte_range(header: str | None) -> tuple[int, int | None] | None:
    """``Range: bytes=first-[last]`` as ``(first, last)``; ``None`` for no header, or one
    the mock does not serve (several ranges, a suffix range): those get the whole clip,
    as RFC 9110 lets a server answer."""
    match = _RANGE.match(header or "")
    if match is None:
        return None
    first, last = int(match[1]), int(match[2]) if match[2] else None
    if last is not None and last < first:
        return None  # invalid: ignored
    return first, last


def _whole_clip(cache: AudioCache, voice: str, total: int, fmt: str) -> bytes:
    """The whole encoded clip (cached once made). Blocking: runs the encoder."""
    return b"".join(cache.iter_bytes(voice, total, fmt))


def _partial(clip: bytes, wanted: tuple[int, int | None], content_type: str) -> Response:
    """The 206 for ``wanted`` of ``clip``, or the 416 when it starts past the end."""
    first, last = wanted
    size = len(clip)
    if first >= size:
        return Response(
            status_code=416,
            headers={"content-range": f"bytes */{size}", "content-type": content_type},
        )
    last = size - 1 if last is None else min(last, size - 1)
    return Response(
        clip[first : last + 1],
        status_code=206,
        headers={"content-range": f"bytes {first}-{last}/{size}", "content-type": content_type},
    )


# -- faults ------------------------------------------------------------------------------


async def _await_disconnect(receive: Receive) -> None:
    # Returning only once the server has seen the connection go means it will
    # not try to send a 500 of its own for the reply we never started.
    with anyio.move_on_after(5):
        while (await receive())["type"] != "http.disconnect":
            pass


class _Reset(Response):
    """No reply at all: the connection is dropped."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(_TRANSPORT)
        if transport is None:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        transport.abort()
        await _await_disconnect(receive)


class _Faulty(Response):
    """A reply whose body is dribbled out slowly, cut short before the connection closes,
    or turns to junk half-way."""

    def __init__(self, inner: Response, step: Step) -> None:
        self.inner = inner
        self.fault = step.fault
        self.delay_ms = step.delay_ms
        self.junk = _junk(step)
        self.status_code = inner.status_code
        self.background = None

    async def _body(self) -> bytes:
        if isinstance(self.inner, StreamingResponse):
            chunks = [
                chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                async for chunk in self.inner.body_iterator
            ]
            return b"".join(chunks)
        return bytes(self.inner.body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._body()
        headers = [(k, v) for k, v in self.inner.raw_headers if k != b"content-length"]
        if self.fault == "truncated":
            await self._truncated(scope, receive, send, body, headers)
        elif self.fault == "junk-tail":
            await self._junk_tail(send, body, headers)
        else:
            await self._slow(send, body, headers)

    async def _truncated(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        sent = body[: len(body) // 2]
        announced = len(body) if len(body) > len(sent) else len(sent) + 1
        headers.append((b"content-length", str(announced).encode()))
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": sent, "more_body": True})
        await _drop(scope, receive, f"received {len(sent)} bytes, expected {announced}")

    async def _slow(self, send: Send, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        pieces = max(1, min(20, len(body)))
        size = -(-len(body) // pieces)
        for offset in range(0, len(body), size):
            await anyio.sleep(self.delay_ms / 1000 / pieces)
            await send(
                {
                    "type": "http.response.body",
                    "body": body[offset : offset + size],
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _junk_tail(self, send: Send, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        # No Content-Length, as the CDN's own audio replies: nothing but the bytes
        # themselves says that the second half is not audio.
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        good = body[: len(body) // 2]
        for offset in range(0, len(good), CHUNK_SIZE):
            piece = good[offset : offset + CHUNK_SIZE]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if self.delay_ms:
            await anyio.sleep(self.delay_ms / 1000)
        await send({"type": "http.response.body", "body": self.junk, "more_body": False})


class _Cut(Response):
    """A reply that goes out as usual (streamed, or with its length) until ``limit``
    bytes of its body are sent; then the connection drops."""

    def __init__(self, inner: Response, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.status_code = inner.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = self.inner
        start = {"type": "http.response.start", "status": inner.status_code}
        await send({**start, "headers": inner.raw_headers})
        left = self.limit
        if isinstance(inner, StreamingResponse):
            chunks: AsyncIterable[Any] = inner.body_iterator
        else:
            chunks = _one(bytes(inner.body))
        try:
            async for item in chunks:
                chunk = item.encode() if isinstance(item, str) else bytes(item)
                if len(chunk) >= left:
                    await send(
                        {"type": "http.response.body", "body": chunk[:left], "more_body": True}
                    )
                    await _drop(scope, receive, f"received {self.limit} bytes")
                    return
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()  # the encoder stops with the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _drop(scope: Scope, receive: Receive, sent: str) -> None:
    """Close the connection after what was written (the ``cut`` and ``truncated`` end)."""
    transport = scope.get(_TRANSPORT)
    if transport is None:
        raise httpx.RemoteProtocolError(
            f"peer closed connection without sending complete message body ({sent})"
        )
    transport.close()  # sends what was written, then closes
    await _await_disconnect(receive)


# -- control routes and errors -------------------------------------------------------------


async def _read_control_body(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_CONTROL_BODY_BYTES:
            raise ScenarioError("body too large")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ScenarioError(f"body is not JSON: {exc}") from None


async def _push_scenario(request: Request) -> Response:
    scenario: Scenario = request.app.state.scenario
    try:
        steps = parse_scenario(await _read_control_body(request))
        pending = scenario.push(steps)
    except ScenarioError as exc:
        return _error(request, 400, f"Invalid scenario: {exc}")
    return JSONResponse({"queued": len(steps), "pending": pending})


async def _show_scenario(request: Request) -> Response:
    scenario: Scenario = request.app.state.scenario
    return JSONResponse({"steps": [step.to_json() for step in scenario.pending()]})


async def _clear_scenario(request: Request) -> Response:
    request.app.state.scenario.clear()
    return JSONResponse({"steps": []})


async def _requests(request: Request) -> Response:
    journal: Journal = request.app.state.journal
    return JSONResponse({"requests": journal.entries()})


async def _reset(request: Request) -> Response:
    request.app.state.journal.clear()
    request.app.state.scenario.clear()
    return JSONResponse({"requests": [], "steps": []})


class _NotFound:
    """The catch-all route. An ASGI app rather than a function, so it takes every method."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = _error(request, 404, f"Cannot {request.method} {request.url.path}")
        await response(scope, receive, send)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _error(request, 500)
