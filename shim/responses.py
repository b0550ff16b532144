"""Streaming responses that end honestly.

If the audio fails after the status line went out, the only honest signal left is
to abort the chunked body, so the client sees a broken transfer rather than a
short file with a 200 it could trust. :class:`StreamAborted` does that; the log
filter below keeps uvicorn from printing a traceback for what is handled.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from shim.errors import APIError

__all__ = [
    "BODY_PIECE",
    "AudioResponse",
    "SendTimeout",
    "ShutdownCut",
    "StalledClient",
    "StreamAborted",
    "WholeAudio",
    "speech_events",
    "sse_event",
]

logger = logging.getLogger("tts_shim")


class StreamAborted(Exception):
    """Raised to make the server drop a response whose body cannot be completed."""


class _HideAborted(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamAborted))


logging.getLogger("uvicorn.error").addFilter(_HideAborted())


class AudioResponse(StreamingResponse):
    """A chunked response whose body iterator is always closed, and ``on_close``
    awaited, however it ends (finished, failed, client gone or cut), so the upstream
    download stops and the concurrency slot is freed the moment the client goes away.
    Streaming itself is Starlette's, as is the disconnect: under uvicorn's ASGI 2.3 it
    watches ``receive`` for ``http.disconnect`` beside the stream and cancels the stream
    when the client hangs up, even while no audio is arriving (on a server speaking 2.4,
    ``send`` raises and Starlette raises ``ClientDisconnect``, which the access log
    takes as the hang-up)."""

    def __init__(
        self,
        content: AsyncIterable[bytes],
        media_type: str,
        headers: Mapping[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        if media_type == "text/event-stream":
            # Events are news: no cache or proxy may keep them and replay them later.
            self.headers.setdefault("cache-control", "no-cache")
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except APIError as exc:
            logger.warning("aborting response after it started: %s", exc.message)
            raise StreamAborted(exc.message) from exc
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            if self._on_close is not None:
                await self._on_close()


class WholeAudio(Response):
    """Audio that is all in hand, sent as one chunk that ends the response.

    Framed as the streamed audio is (chunked, no ``Content-Length``, as OpenAI's speech
    replies are), with one socket write fewer than a stream's head, chunk and end, and
    nothing upstream to stop: the client's disconnect no longer stops anything. Large
    audio is handed to the server in pieces, each under ``--send-timeout``
    (:class:`SendTimeout`), as a stream's chunks are.
    """

    def __init__(self, audio: bytes, media_type: str, headers: Mapping[str, str]) -> None:
        super().__init__(audio, media_type=media_type, headers=headers)
        del self.headers["content-length"]


#: The most of a response body handed to the server in one message (uvicorn's
#: high-water mark for a connection's write buffer).
BODY_PIECE = 64 * 1024


class SendTimeout:
    """A ``send`` that cuts the response when one message waits ``seconds`` for a
    client that takes no data (uvicorn's ``send`` waits while the socket's buffers
    are full). The wait raises :class:`StalledClient`, so the response's ``finally``
    blocks run: the audio stream is closed and its concurrency slot freed.

    A body larger than :data:`BODY_PIECE` (audio sent in one piece, a chat answer) is
    handed on in pieces of that size, each under the same timer: uvicorn writes a
    message to the transport whole and waits only before the next one, so one big
    message would never wait, and would sit in memory for as long as its client
    kept the connection without reading.
    """

    __slots__ = ("_send", "seconds")

    def __init__(self, send: Send, seconds: float) -> None:
        self._send = send
        self.seconds = seconds

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            if len(body) > BODY_PIECE:
                more = message.get("more_body", False)
                for start in range(0, len(body), BODY_PIECE):
                    end = start + BODY_PIECE
                    await self._timed(
                        {
                            "type": "http.response.body",
                            "body": body[start:end],
                            "more_body": more or end < len(body),
                        }
                    )
                return
        await self._timed(message)

    async def _timed(self, message: Message) -> None:
        # anyio's scope, not asyncio.timeout (Python 3.11+): the send may run in the
        # task of Starlette's anyio task group, and a cancellation not ours passes on.
        with anyio.move_on_after(self.seconds) as scope:
            await self._send(message)
        if scope.cancelled_caught:
            logger.info("client took no data for %g s: response cut", self.seconds)
            raise StalledClient(self.seconds)


class StalledClient(StreamAborted):
    """The client took no data for ``--send-timeout`` seconds; its response is cut."""


class ShutdownCut(StreamAborted):
    """The server's ``--graceful-timeout`` ended while the response was in progress."""


def sse_event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def speech_events(audio: AsyncIterable[bytes], usage: dict[str, int]) -> AsyncIterator[bytes]:
    """OpenAI's ``stream_format: "sse"`` speech events around ``audio``."""
    try:
        async for chunk in audio:
            yield (
                b'data: {"type":"speech.audio.delta","audio":"'
                + base64.b64encode(chunk)
                + b'"}\n\n'
            )
    except APIError as exc:
        # Tell SSE clients why before the transfer is cut (see module docstring).
        yield sse_event({"type": "error", "error": exc.body()["error"]})
        raise
    yield sse_event({"type": "speech.audio.done", "usage": usage})
    yield b"data: [DONE]\n\n"
