"""Transcoding audio to the client's format when upstream sent another.

Transcoding runs FFmpeg (through PyAV) in a worker thread, fed one upstream chunk at
a time, so the first encoded bytes leave while the download is still running and
memory stays flat however long the audio is. One transcoder can also take several
inputs in a row and encode them as one stream (see :mod:`shim.stitch`).

PyAV is imported where it is used, so importing this module does not load FFmpeg.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import aclosing
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from shim.catalog import FORMATS

if TYPE_CHECKING:
    from av.audio.frame import AudioFrame

__all__ = ["DEMUXERS", "SAMPLE_RATE", "TranscodeError", "convert", "transcode"]

#: OpenAI's speech output: 24 kHz mono.
SAMPLE_RATE = 24_000

#: The FFmpeg demuxer that reads each format the shim may receive.
DEMUXERS = {
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


async def convert(chunks: AsyncIterable[bytes], source: str, target: str) -> AsyncGenerator[bytes]:
    """Yield ``chunks`` (audio in ``source`` format) as ``target`` format audio."""
    if source == target:
        async for chunk in chunks:
            yield chunk
        return
    # aclosing: a consumer that stops early stops the worker thread now, not at GC.
    async with aclosing(transcode(_one(source, chunks), target)) as encoded_chunks:
        async for encoded in encoded_chunks:
            yield encoded


async def _one(
    source: str, chunks: AsyncIterable[bytes]
) -> AsyncGenerator[tuple[str, AsyncIterable[bytes]]]:
    yield source, chunks


async def transcode(
    inputs: AsyncIterable[tuple[str, AsyncIterable[bytes]]],
    target: str,
    *,
    muxer_options: dict[str, str] | None = None,
) -> AsyncGenerator[bytes]:
    """Decode each ``(format, chunks)`` input in turn; encode them all as one stream.

    One encoder and one muxer run across the inputs, so the output has one header
    and its timestamps run on, with no encoder delay or padding between inputs.
    Inputs are read strictly in order, each to its end before the next is asked
    for, and what is encoded is yielded at once. ``muxer_options`` go to FFmpeg's
    muxer. Raises :class:`TranscodeError` if an input cannot be decoded or holds
    no audio.
    """
    transcoder = _Transcoder(target, asyncio.get_running_loop(), muxer_options)
    try:
        async for source, chunks in inputs:
            async for encoded in transcoder.feed(_Input(source)):
                yield encoded
            async for chunk in chunks:
                async for encoded in transcoder.feed(chunk):
                    yield encoded
            async for encoded in transcoder.feed(None):
                yield encoded
        async for encoded in transcoder.feed(_FINISH):
            yield encoded
    finally:
        transcoder.abort()


# Messages from the worker thread to the event loop.
_NEED_INPUT = object()
_DONE = object()
# Messages from the event loop to the worker thread, besides chunks of bytes and
# ``b""`` (the end of the current input).
_ABORT = object()
_FINISH = object()  # no more inputs: flush the encoder, write the trailer


@dataclass(frozen=True)
class _Input:
    """The next input starts; its bytes are in ``source`` format."""

    source: str


class _Transcoder:
    """One FFmpeg encode pipeline in its own thread, fed one input after another.

    The loop hands over an :class:`_Input`, that input's chunks, ``None`` at its end,
    then the next :class:`_Input`, and so on, and :data:`_FINISH` after the last.
    Each input gets its own demuxer, decoder and resampler (inputs may differ in
    format and rate); all share one encoder and muxer, whose timestamps simply run
    on, so the output is one stream with no seam: no second header, no encoder
    delay or padding at the joins.

    A strict hand-shake keeps memory bounded: the thread asks for input only when
    its demuxer has run dry, and the event loop hands over one chunk per request,
    so at most one upstream chunk and the audio encoded from it are in flight.
    """

    def __init__(
        self,
        target: str,
        loop: asyncio.AbstractEventLoop,
        muxer_options: dict[str, str] | None = None,
    ) -> None:
        self._target = FORMATS[target]
        self._muxer_options = {"fflags": "+bitexact", **(muxer_options or {})}
        self._loop = loop
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._inbox: list[object] = []
        self._inbox_ready = threading.Condition()
        self._pending = b""
        self._eof = False
        self._started = False
        self._finished = False
        self._aborted = False
        #: Samples encoded so far: the next frame's timestamp.
        self.samples = 0
        self._thread = threading.Thread(target=self._run, name="tts-shim-transcode", daemon=True)

    async def feed(self, item: bytes | _Input | object | None) -> AsyncGenerator[bytes]:
        """Hand the thread ``item`` (a chunk, ``None`` at the end of an input, an
        :class:`_Input` or :data:`_FINISH`); yield what it encodes until it needs
        more input or is done."""
        self._give(item if item is not None else b"")
        if not self._started:
            self._started = True
            self._thread.start()
        while not self._finished:
            message = await self._outbox.get()
            if message is _NEED_INPUT:
                return
            if message is _DONE:
                self._finished = True
                return
            if isinstance(message, BaseException):
                self._finished = True
                raise TranscodeError(str(message)) from message
            yield message

    def abort(self) -> None:
        self._aborted = True
        self._give(_ABORT)

    def _give(self, item: object) -> None:
        with self._inbox_ready:
            self._inbox.append(item)
            self._inbox_ready.notify()

    # -- the worker thread ---------------------------------------------------------

    def _post(self, item: object) -> None:
        # Once the consumer has gone, what the thread writes while it unwinds (the
        # muxer's trailer) has no reader, and the loop may already be closed.
        if self._aborted:
            return
        try:
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, item)
        except RuntimeError:  # the loop closed without aborting us first
            self._aborted = True

    def _take(self) -> object:
        """The next message from the loop, asking for it if none is waiting."""
        with self._inbox_ready:
            if not self._inbox:
                self._post(_NEED_INPUT)
            while not self._inbox:
                self._inbox_ready.wait()
            item = self._inbox.pop(0)
        if item is _ABORT:
            raise _Aborted
        return item

    def read(self, size: int) -> bytes:
        """File-object ``read`` for FFmpeg: blocks until the loop hands over data."""
        while not self._pending:
            if self._eof:
                return b""
            item = self._take()
            if not isinstance(item, bytes):
                raise TypeError(f"expected audio bytes, received {item!r}")
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
        import av

        # bitexact: no encoder tag, so the header is the plain one OpenAI sends.
        with av.open(self, "w", format=self._target.muxer, options=self._muxer_options) as sink:
            stream = sink.add_stream(self._target.codec, rate=SAMPLE_RATE, layout="mono")
            codec_format = stream.codec_context.format
            sample_format = codec_format.name if codec_format else "s16"
            while isinstance(item := self._take(), _Input):
                resampler = av.AudioResampler(format=sample_format, layout="mono", rate=SAMPLE_RATE)
                before = self.samples
                options = _PCM_OPTIONS if item.source == "pcm" else {}
                with av.open(self, "r", format=DEMUXERS[item.source], options=options) as source:
                    for frame in source.decode(audio=0):
                        for resampled in resampler.resample(frame):
                            sink.mux(stream.encode(self._stamp(resampled)))
                for resampled in resampler.resample(None):
                    sink.mux(stream.encode(self._stamp(resampled)))
                self._skip_rest()
                if self.samples == before:
                    raise TranscodeError(f"an input in {item.source} format held no audio")
            if item is not _FINISH:
                raise TypeError(f"expected the next input or the end, received {item!r}")
            sink.mux(stream.encode(None))

    def _stamp(self, frame: AudioFrame) -> AudioFrame:
        """Number ``frame`` on from the frames before it, whichever input they came from."""
        frame.pts = self.samples
        frame.time_base = Fraction(1, SAMPLE_RATE)
        self.samples += frame.samples
        return frame

    def _skip_rest(self) -> None:
        """Discard what is left of an input FFmpeg stopped reading early (trailing junk)."""
        self._pending = b""
        while not self._eof:
            item = self._take()
            if item == b"":
                self._eof = True
        self._eof = False


class _Aborted(Exception):
    """The consumer went away; unwind the thread quietly."""
