"""Audio formats: recognising what upstream sent, and transcoding when it differs.

Transcoding runs FFmpeg (through PyAV) in a worker thread, fed one upstream chunk at
a time, so the first encoded bytes leave while the download is still running and
memory stays flat however long the audio is.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

import av

from shim.catalog import FORMATS

__all__ = ["SAMPLE_RATE", "TranscodeError", "convert", "identify"]

#: OpenAI's speech output: 24 kHz mono.
SAMPLE_RATE = 24_000

_PCM_TYPES = {"audio/pcm", "audio/l16", "audio/x-pcm", "audio/raw"}
# How FFmpeg should read each format we may receive.
_DEMUXERS = {
    "mp3": "mp3",
    "opus": "ogg",
    "aac": "aac",
    "flac": "flac",
    "wav": "wav",
    "pcm": "s16le",
}
_PCM_OPTIONS = {"sample_rate": str(SAMPLE_RATE), "ch_layout": "mono"}


class TranscodeError(Exception):
    """FFmpeg could not read the upstream audio or write the requested format."""


def identify(head: bytes, content_type: str, requested: str) -> str | None:
    """Name the format of audio starting with ``head``, by its signature.

    The content type is not trusted (upstreams label WAV as MP3 and worse), except
    for raw PCM, which has no signature to check.
    """
    if head.startswith(b"ID3"):
        return "mp3"
    if head.startswith(b"OggS"):
        return "opus"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # 12-bit sync, layer 00: AAC in ADTS
            return "aac"
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06:  # MPEG audio frame, layer I-III
            return "mp3"
    if content_type in _PCM_TYPES or (requested == "pcm" and not content_type.startswith("audio/")):
        return "pcm"
    return None


async def convert(chunks: AsyncIterable[bytes], source: str, target: str) -> AsyncGenerator[bytes]:
    """Yield ``chunks`` (audio in ``source`` format) as ``target`` format audio."""
    if source == target:
        async for chunk in chunks:
            yield chunk
        return
    transcoder = _Transcoder(source, target, asyncio.get_running_loop())
    try:
        async for chunk in chunks:
            async for encoded in transcoder.feed(chunk):
                yield encoded
        async for encoded in transcoder.feed(None):
            yield encoded
    finally:
        transcoder.abort()


# Messages from the worker thread to the event loop.
_NEED_INPUT = object()
_DONE = object()
_ABORT = object()


class _Transcoder:
    """One FFmpeg decode/encode pipeline in its own thread.

    A strict hand-shake keeps memory bounded: the thread asks for input only when
    its demuxer has run dry, and the event loop hands over one chunk per request,
    so at most one upstream chunk and the audio encoded from it are in flight.
    """

    def __init__(self, source: str, target: str, loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._target = FORMATS[target]
        self._loop = loop
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._inbox: list[object] = []
        self._inbox_ready = threading.Condition()
        self._pending = b""
        self._eof = False
        self._started = False
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="tts-shim-transcode", daemon=True)

    async def feed(self, chunk: bytes | None) -> AsyncGenerator[bytes]:
        """Hand the thread ``chunk`` (``None`` at the end); yield what it encodes
        until it needs more input or is done."""
        self._give(chunk if chunk is not None else b"")
        if not self._started:
            self._started = True
            self._thread.start()
        while not self._finished:
            item = await self._outbox.get()
            if item is _NEED_INPUT:
                return
            if item is _DONE:
                self._finished = True
                return
            if isinstance(item, BaseException):
                self._finished = True
                raise TranscodeError(str(item)) from item
            yield item

    def abort(self) -> None:
        self._give(_ABORT)

    def _give(self, item: object) -> None:
        with self._inbox_ready:
            self._inbox.append(item)
            self._inbox_ready.notify()

    # -- the worker thread ---------------------------------------------------------

    def _post(self, item: object) -> None:
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, item)

    def read(self, size: int) -> bytes:
        """File-object ``read`` for FFmpeg: blocks until the loop hands over data."""
        while not self._pending:
            if self._eof:
                return b""
            with self._inbox_ready:
                if not self._inbox:
                    self._post(_NEED_INPUT)
                while not self._inbox:
                    self._inbox_ready.wait()
                item = self._inbox.pop(0)
            if item is _ABORT:
                raise _Aborted
            assert isinstance(item, bytes)
            if not item:
                self._eof = True  # FFmpeg may read again after the end: keep saying so
                return b""
            self._pending = item
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def write(self, data: bytes) -> int:
        self._post(bytes(data))
        return len(data)

    def _run(self) -> None:
        try:
            self._transcode()
        except _Aborted:
            return
        except Exception as exc:  # FFmpeg errors come in many classes
            self._post(exc)
            return
        self._post(_DONE)

    def _transcode(self) -> None:
        options = _PCM_OPTIONS if self._source == "pcm" else {}
        # bitexact: no encoder tag, so the header is the plain one OpenAI sends.
        with (
            av.open(self, "r", format=_DEMUXERS[self._source], options=options) as source,
            av.open(self, "w", format=self._target.muxer, options={"fflags": "+bitexact"}) as sink,
        ):
            stream = sink.add_stream(self._target.codec, rate=SAMPLE_RATE, layout="mono")
            codec_format = stream.codec_context.format
            resampler = av.AudioResampler(
                format=codec_format.name if codec_format else "s16",
                layout="mono",
                rate=SAMPLE_RATE,
            )
            for frame in source.decode(audio=0):
                for resampled in resampler.resample(frame):
                    sink.mux(stream.encode(resampled))
            for resampled in resampler.resample(None):
                sink.mux(stream.encode(resampled))
            sink.mux(stream.encode(None))


class _Aborted(Exception):
    """The consumer went away; unwind the thread quietly."""
