"""Streaming responses that end honestly.

If the audio fails after the status line went out, the only honest signal left is
to abort the chunked body, so the client sees a broken transfer rather than a
short file with a 200 it could trust. :class:`StreamAborted` does that; the log
filter below keeps uvicorn from printing a traceback for what is handled.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from shim.errors import APIError

__all__ = [
    "BODY_PIECE",
    "AudioResponse",
    "ClientWatch",
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
    Streaming itself is Starlette's, as is (:class:`ClientWatch` tells it of the disconnect)."""

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


#: The ASGI HTTP spec versions before 2.4 (a server that says none speaks 2.0).
_BEFORE_2_4 = frozenset({"2.0", "2.1", "2.2", "2.3"})


class ClientWatch:
    """ASGI 2.4's promise on uvicorn, which speaks 2.3: once the client has gone, ``send``
    raises :class:`OSError` and the response stops at once.

    Under 2.3 a server drops what is sent after the client left, so Starlette watches
    ``receive`` for the disconnect in an anyio task group around every streaming
    response (~140 µs a response, ``python3 bench/micro.py``); told the server speaks
    2.4 it streams plainly. This keeps 2.4's promise with one asyncio task per streamed
    response, started with its first chunk (its request body has been read by then):
    when the client hangs up mid-stream, the task cancels the response, so the upstream
    download stops and the slot is freed even while no audio is arriving; the owner of
    the watch (:class:`shim.middleware.GateMiddleware`) then ends the request quietly.
    Call :meth:`close` when the app has returned.
    """

    __slots__ = ("_done", "_owner", "_receive", "_send", "_watcher", "gone")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._watcher: asyncio.Task[None] | None = None
        self._owner: asyncio.Task[Any] | None = None
        self._done = False
        #: The client hung up before the response was complete.
        self.gone = False

    @staticmethod
    def needed(scope: Scope) -> bool:
        """Whether the server speaks ASGI below 2.4 (uvicorn: 2.3)."""
        return scope.get("asgi", {}).get("spec_version", "2.0") in _BEFORE_2_4

    @staticmethod
    def promise(scope: Scope) -> None:
        """Tell the app (through ``scope``, in place: the outer middleware read what the
        router adds to it) that the server speaks 2.4."""
        scope["asgi"] = {**scope.get("asgi", {}), "spec_version": "2.4"}

    async def send(self, message: Message) -> None:
        if self.gone:
            raise OSError("the client disconnected")
        if message["type"] == "http.response.body":
            if not message.get("more_body", False):
                self._done = True  # from here on a disconnect is the end, not a hang-up
            elif self._watcher is None:
                self._owner = asyncio.current_task()
                self._watcher = asyncio.get_running_loop().create_task(self._watch())
        await self._send(message)

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass  # the rest of a request body nobody read
        if not self._done and self._owner is not None:
            self.gone = True
            # The owner is suspended inside the app (this task exists only from its first
            # chunk until the app returns): the cancellation lands there.
            self._owner.cancel()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def forget_cancel(self) -> None:
        """The response was cancelled by :meth:`_watch`: take the cancellation back, so
        the task goes on as if nothing happened (Python 3.11+ counts them)."""
        uncancel = getattr(self._owner, "uncancel", None)
        if uncancel is not None:
            uncancel()


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

    One timer a response, armed at the first message and re-armed only when it
    fires, instead of a timeout scope around every message (~4 us each, measured).
    Call :meth:`close` when the response is over.
    """

    __slots__ = ("_fired", "_send", "_since", "_task", "_timer", "seconds")

    def __init__(self, send: Send, seconds: float) -> None:
        self._send = send
        self.seconds = seconds
        self._since = 0.0
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fired = False

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
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        self._task = asyncio.current_task()
        if self._timer is None:
            self._timer = loop.call_at(self._since + self.seconds, self._check)
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if not self._fired:
                raise
            self._fired = False
            uncancel = getattr(self._task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
            raise StalledClient(self.seconds) from None
        finally:
            self._task = None

    def _check(self) -> None:
        self._timer = None
        task = self._task
        if task is None:  # between messages: the next one re-arms
            return
        loop = asyncio.get_running_loop()
        due = self._since + self.seconds
        if loop.time() < due:
            self._timer = loop.call_at(due, self._check)
            return
        # The task is suspended inside ``await self._send``: the cancellation lands there.
        logger.info("client took no data for %g s: response cut", self.seconds)
        self._fired = True
        task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


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
