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

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from shim.errors import APIError

__all__ = [
    "AudioResponse",
    "SendTimeout",
    "StalledClient",
    "StreamAborted",
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
    Streaming itself is Starlette's, as is (it watches for the disconnect)."""

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


class SendTimeout:
    """A ``send`` that cuts the response when one message waits ``seconds`` for a
    client that takes no data (uvicorn's ``send`` waits while the socket's buffers
    are full). The wait raises :class:`StalledClient`, so the response's ``finally``
    blocks run: the audio stream is closed and its concurrency slot freed.

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
