"""Audio checked by decoding it in the format it claims, before it is relayed or cached.

A signature says what a file claims to be, not what it holds: ``ID3`` followed by an
HTML page starts like MP3, and a CDN's error page may come labelled as audio. So the
audio is decoded with FFmpeg (PyAV), in the format its signature names:

- before the first byte goes to the client, its first frames, from the bytes in hand
  (:func:`first_frames`, or :func:`check_whole` when all of the body is in hand);
- all of it when it is to be cached (``decode_all``), before the cache commit: a body
  in hand at once, a streamed one by a :class:`Verifier` that decodes every chunk in a
  thread of its own; the stream ends only once every byte has passed, so junk after
  good frames aborts it, and nothing is stored.

Decoding costs CPU in proportion to the audio (``bench/micro.py``), so audio that is
not being cached has its first frames decoded only; the checks below, which cost next
to nothing, still see every byte of it.

FFmpeg passes over some junk without a word, so the framing it does not report on is
checked on top:

- AAC (ADTS), when decoded to the end: the frames must follow one another to the last
  byte (FFmpeg ignores what follows the last frame).
- Opus (Ogg): the pages must follow one another to the last byte, each as long as its
  header says (FFmpeg's demuxer skips ahead to the next ``OggS``).
- FLAC, WAV and raw PCM must not hold text where frames or samples should be: FFmpeg's
  FLAC parser folds whatever follows the last frame into it, and samples can be any
  bytes at all. Text is 64 printable ASCII bytes in a row, which sound does not have:
  the low byte of a 16-bit sample is close to random, and 32 of them in a row all
  printable is a chance of about 1 in 10^13 (the mock's speech has at most 25
  printable bytes in a row). Random junk in raw samples cannot be told from sound.
- Raw PCM must end on a whole sample. It has no header to check, so it is accepted
  only from a reply that says it is audio (:func:`shim.upstream.stream.identify`).

PyAV is imported where it is used, so importing this module does not load FFmpeg.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread

from shim.audio import DEMUXERS

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.packet import Packet

__all__ = ["FIRST_FRAMES", "MAX_HEAD_BYTES", "BadAudio", "Verifier", "check_whole", "first_frames"]

#: Frames decoded before the first byte goes out (all of them, when there are fewer).
FIRST_FRAMES = 3
#: The most that may come before the first frame: an ID3 tag with cover art can be
#: large, but a body with no frame in this much is not audio.
MAX_HEAD_BYTES = 1024 * 1024

#: Formats FFmpeg decodes to the end; WAV's samples and raw PCM have nothing to decode.
_DECODED = frozenset({"mp3", "aac", "flac", "opus"})
#: Formats whose frames (after the header, whose tags may be text) are searched for text.
_TEXT_CHECKED = frozenset({"flac", "wav", "pcm"})
_TEXT_RUN = 64
_PRINTABLE = bytes(1 if byte in b"\t\n\r" or 0x20 <= byte <= 0x7E else 0 for byte in range(256))
_TEXT = b"\x01" * _TEXT_RUN
# Probe no further than the first packet: with FFmpeg's defaults the WAV demuxer reads
# about 200 KB before it returns, which would hold back the first byte.
_CONTAINER_OPTIONS = {"probesize": "32", "analyzeduration": "0"}
# A frame that does not decode fails the decode (instead of being logged and dropped),
# and FLAC's frame checksums are checked (FFmpeg checks them only when asked).
_DECODER_OPTIONS = {"err_detect": "crccheck+explode"}
_OGG_HEADER = 27  # an Ogg page header before its segment table


class BadAudio(Exception):
    """The audio is not what it claims to be; the message says how."""


class _NeedMore(Exception):
    """The bytes in hand end before a frame could be decoded."""


class _Aborted(Exception):
    """The stream was closed; unwind the decoding thread quietly."""


class _Source(Protocol):
    """What :func:`_decode` reads: a file FFmpeg cannot seek in, as a download is."""

    size: int  # bytes read so far

    def read(self, size: int) -> bytes: ...


async def first_frames(head: bytes, fmt: str) -> int | None:
    """Decode the first frames of ``head``, the start of a download claimed to be ``fmt``
    whose rest is still coming; return the offset of its first frame, or ``None`` when
    ``head`` ends before a frame could be decoded (read more and ask again).

    Raises :class:`BadAudio`. Raw PCM has no frames: its checks are the
    :class:`Verifier`'s.
    """
    if fmt == "pcm":
        return 0
    try:
        return await _decoding(head, fmt, FIRST_FRAMES, True)
    except _NeedMore:
        return None


async def check_whole(data: bytes, fmt: str, *, decode_all: bool) -> None:
    """Check ``data``, a whole body claimed to be ``fmt``: its first frames decoded, or
    all of them with ``decode_all``; raise :class:`BadAudio`."""
    start = 0
    if fmt != "pcm":
        frames = None if decode_all and fmt in _DECODED else FIRST_FRAMES
        start = await _decoding(data, fmt, frames, False)
    framing = _Framing(fmt, start)
    framing.feed(data)
    framing.finish()


class Verifier:
    """All of one download, checked as it streams: :meth:`feed` it every chunk in order,
    the first included, then :meth:`finish`; or :meth:`close` it to give up.

    ``start`` is the offset of the first frame (:func:`first_frames`). With
    ``decode_all`` every frame is decoded, in a thread of its own, a chunk behind:
    ``feed`` hands a chunk over once the thread is done with the one before, so what is
    wrong with a chunk is raised by the next ``feed`` or by ``finish``, and one chunk at
    most waits in memory. Without it, only the framing checks run (in the event loop).
    """

    def __init__(self, fmt: str, start: int, *, decode_all: bool) -> None:
        self._framing = _Framing(fmt, start)
        self._decoder = _DecodeThread(fmt) if decode_all and fmt in _DECODED else None

    async def feed(self, chunk: bytes) -> None:
        """Check ``chunk``, the next bytes of the download; raise :class:`BadAudio`."""
        self._framing.feed(chunk)
        if self._decoder is not None:
            await self._decoder.put(chunk)

    async def finish(self) -> None:
        """The download ended: wait for the rest to decode; raise :class:`BadAudio`."""
        self._framing.finish()
        if self._decoder is not None:
            await self._decoder.put(None)
            await self._decoder.result()

    def close(self) -> None:
        """Stop the decoding thread (idempotent)."""
        if self._decoder is not None:
            self._decoder.close()


# -- decoding ------------------------------------------------------------------------


class _Bytes:
    """Bytes in memory, read as FFmpeg reads a download: forward only."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.size = 0

    def read(self, size: int) -> bytes:
        chunk = bytes(self._data[self.size : self.size + size])
        self.size += len(chunk)
        return chunk


async def _decoding(data: bytes, fmt: str, frames: int | None, partial: bool) -> int:
    """:func:`_decode` of ``data``: the first frames in the event loop (a fraction of a
    millisecond, less than handing them to a thread costs; what junk is scanned before
    them is at most ``MAX_HEAD_BYTES``), all of them in a worker thread."""
    if frames is not None:
        return _decode(_Bytes(data), fmt, frames, partial)
    return await anyio.to_thread.run_sync(_decode, _Bytes(data), fmt, frames, partial)


def _decode(source: _Source, fmt: str, frames: int | None, partial: bool) -> int:
    """Decode ``source``, audio claimed to be ``fmt``; return the offset of its first frame.
    Blocking: it runs FFmpeg.

    ``frames``: stop once that many frames have decoded (``None``: decode to the end, and
    check that AAC's frames reach it). ``partial``: ``source`` ends where the download had
    got to, so its last packet may be cut short and is left undecoded, and what fails
    before the first frame has decoded is :class:`_NeedMore`.
    """
    import av

    decoded = 0

    def failed(what: str, exc: Exception | None = None) -> Exception:
        if partial and not decoded:
            return _NeedMore()
        return BadAudio(f"{what} ({_why(exc)})" if exc is not None else what)

    start: int | None = None
    end = 0  # where the last packet ended
    held: Packet[AudioStream] | None = None  # decoded once the next packet shows it is whole
    try:
        container = av.open(source, "r", format=DEMUXERS[fmt], container_options=_CONTAINER_OPTIONS)
    except _Aborted:
        raise
    except Exception as exc:  # FFmpeg errors come in many classes
        raise failed(f"FFmpeg cannot read it as {fmt}", exc) from exc
    with container:
        if not container.streams.audio:
            raise failed("it holds no audio stream")
        stream: AudioStream = container.streams.audio[0]
        stream.codec_context.options = dict(_DECODER_OPTIONS)
        try:
            for packet in container.demux(stream):
                if not packet.size:  # the flush packet at the end
                    continue
                pos = end if packet.pos is None else packet.pos  # unknown: take it as next
                if start is None:
                    start = pos
                elif fmt == "aac" and frames is None and pos != end:
                    raise BadAudio(f"{pos - end} bytes between two frames are not AAC")
                end = pos + packet.size
                if held is not None:
                    decoded += _decoded(held)
                    if frames is not None and decoded >= frames:
                        return start
                held = packet
        except (_Aborted, BadAudio):
            raise
        except Exception as exc:
            # The demuxer gave up: on junk, or where the bytes in hand were cut off.
            if partial and decoded:
                return start or 0
            raise failed(f"FFmpeg cannot read it as {fmt}", exc) from exc
        if partial:
            if not decoded:
                raise _NeedMore()
            return start or 0
        if held is not None:
            decoded += _decoded(held)
        decoded += _decoded(None, stream)
    if not decoded:
        raise BadAudio(f"no {fmt} frame in it decodes")
    if fmt == "aac" and frames is None and end != source.size:
        raise BadAudio(f"{source.size - end} bytes after the last frame are not AAC")
    return start or 0


def _decoded(packet: Packet[AudioStream] | None, stream: AudioStream | None = None) -> int:
    """How many frames ``packet`` decodes to (``None``: the decoder's last, from
    ``stream``); a frame that does not decode is :class:`BadAudio`."""
    try:
        if packet is None:
            assert stream is not None
            return len(stream.codec_context.decode(None))
        return len(packet.decode())
    except _Aborted:
        raise
    except Exception as exc:
        raise BadAudio(f"a frame does not decode ({_why(exc)})") from exc


def _why(exc: BaseException | None) -> str:
    """FFmpeg's short reason (``Invalid data found when processing input``), or the
    error's class where FFmpeg has none (``Error number -50531338 occurred``)."""
    reason = getattr(exc, "strerror", None)
    if isinstance(reason, str) and reason and not reason.startswith("Error number"):
        return reason
    return type(exc).__name__


_ABORT = object()


class _DecodeThread:
    """:func:`_decode` of a whole download, in a thread, handed one chunk at a time."""

    def __init__(self, fmt: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        #: Set when the thread wants the next chunk, or has stopped.
        self._ready = asyncio.Event()
        self._stopped = False
        self._error: BadAudio | None = None
        # The thread's own: what is left of the chunk FFmpeg is reading.
        self._pending = b""
        self._eof = False
        self.size = 0
        thread = threading.Thread(target=self._run, args=(fmt,), name="tts-shim-verify")
        thread.daemon = True
        thread.start()

    async def put(self, chunk: bytes | None) -> None:
        """Hand over ``chunk`` (``None``: the end) once the thread wants it; raise what
        it found wrong so far."""
        await self._ready.wait()
        if self._error is not None:
            raise self._error
        if self._stopped:
            # Only the end of the input ends a decode: FFmpeg stopped reading early.
            raise BadAudio("bytes follow the end of the audio")
        self._ready.clear()
        self._inbox.put(chunk)

    async def result(self) -> None:
        """Wait for the decode to end (after ``put(None)``); raise what it found."""
        await self._ready.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._inbox.put(_ABORT)

    # -- the thread --------------------------------------------------------------------

    def _post(self, callback: Callable[..., Any], *args: Any) -> None:
        # A closed loop has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _stop(self, error: BadAudio | None) -> None:
        self._stopped = True
        self._error = error
        self._ready.set()

    def read(self, size: int) -> bytes:
        """File-object ``read`` for FFmpeg: blocks until the loop hands over a chunk."""
        while not self._pending:
            if self._eof:
                return b""  # FFmpeg may read again after the end: keep saying so
            self._post(self._ready.set)
            item = self._inbox.get()
            if item is _ABORT:
                raise _Aborted
            if item is None:
                self._eof = True
                return b""
            assert isinstance(item, bytes)
            self._pending = item
        data, self._pending = self._pending[:size], self._pending[size:]
        self.size += len(data)
        return data

    def _run(self, fmt: str) -> None:
        error: BadAudio | None = None
        try:
            _decode(self, fmt, None, False)
        except _Aborted:
            return
        except BadAudio as exc:
            error = exc
        except Exception as exc:  # not FFmpeg's: a bug here, but the audio is unchecked
            error = BadAudio(f"it could not be checked ({_why(exc)})")
        self._post(self._stop, error)


# -- framing FFmpeg does not check ---------------------------------------------------


class _Framing:
    """The checks FFmpeg does not make (see the module docstring), fed the bytes in order."""

    def __init__(self, fmt: str, start: int) -> None:
        self._fmt = fmt
        self._text = fmt in _TEXT_CHECKED
        self._skip = start  # the header, whose tags and comments may well be text
        self._tail = b""  # the end of what was searched, for text across two chunks
        self._pages = _OggPages() if fmt == "opus" else None
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._pages is not None:
            self._pages.feed(chunk)
        if self._text:
            if self._skip:
                skipped = min(self._skip, len(chunk))
                chunk, self._skip = chunk[skipped:], self._skip - skipped
            searched = self._tail + chunk
            if searched.translate(_PRINTABLE).find(_TEXT) >= 0:
                raise BadAudio(f"it holds text where {self._fmt} audio should be")
            self._tail = searched[-(_TEXT_RUN - 1) :]

    def finish(self) -> None:
        if self._pages is not None:
            self._pages.finish()
        if self._fmt == "pcm" and self.size % 2:
            raise BadAudio(f"it ends in the middle of a sample ({self.size} bytes)")


class _OggPages:
    """Ogg's framing: page after page to the last byte, each as long as its header says."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._body = 0  # bytes of the current page's body still to come
        self._offset = 0  # where the current page starts
        self._size = 0  # the current page's length, header included
        self.pages = 0

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._body:
                step = min(self._body, len(view))
                self._body -= step
                view = view[step:]
                if not self._body:
                    self._offset += self._size
                continue
            header = self._header
            wanted = _OGG_HEADER if len(header) < _OGG_HEADER else _OGG_HEADER + header[26]
            taken = view[: wanted - len(header)]
            header += taken
            view = view[len(taken) :]
            if len(header) == _OGG_HEADER and header[:5] != b"OggS\x00":
                raise BadAudio(f"the bytes at offset {self._offset} are not an Ogg page")
            if len(header) >= _OGG_HEADER and len(header) == _OGG_HEADER + header[26]:
                self._body = sum(header[_OGG_HEADER:])
                self._size = len(header) + self._body
                self.pages += 1
                header.clear()
                if not self._body:
                    self._offset += self._size

    def finish(self) -> None:
        if self._header or self._body:
            raise BadAudio(f"it ends inside the Ogg page at offset {self._offset}")
