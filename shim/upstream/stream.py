"""The audio as it arrives from upstream: checked, sniffed, decoded, size-capped.

Before the first byte goes to the client, enough of the audio is read to know what
it is: its signature names the format (upstreams label WAV as MP3 and worse, so the
signature decides), the content type must be one audio can have (a CDN's HTML error
page is not audio), and a body too short to be audio is refused. Raw PCM has no
signature, so it is accepted only when the reply says it is audio (an ``audio/*`` or
octet-stream content type) and names PCM (its content type, or the link's extension).
Then its first frames are decoded in that format (:mod:`shim.upstream.verifier`);
audio that is to be cached is decoded to its end as it streams, and the stream ends
only once all of it has: junk after good frames aborts it, and nothing is cached. The
size cap holds, and a body that ends before its announced length is an error, never a
short file passed off as complete, unless the download can be resumed
(:attr:`AudioStream.resume`, a CDN link): then the stream carries on from the first
byte it lacks, and the client (and the verifier) sees no seam.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import aiohttp

from shim import errors
from shim.errors import UpstreamError
from shim.upstream.clients import describe
from shim.upstream.verifier import MAX_HEAD_BYTES, BadAudio, Verifier, check_whole, first_frames

__all__ = [
    "MIN_AUDIO_BYTES",
    "AudioStream",
    "Resume",
    "Resumed",
    "UpstreamStats",
    "announced_length",
    "bad_audio",
    "empty_chunks",
    "identify",
    "inline_stream",
    "open_stream",
]

#: Smaller than any real audio file (a WAV header alone is 44 bytes; 128 bytes of
#: PCM are under 3 ms); read before the first byte is sent.
MIN_AUDIO_BYTES = 128
_PCM_TYPES = frozenset({"audio/pcm", "audio/l16", "audio/x-pcm", "audio/raw", "audio/basic"})
#: Content types that say "bytes", which audio may come under besides ``audio/*``.
_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
#: Content types that audio may come under, besides ``audio/*`` (and none at all).
_OPAQUE_TYPES = _BINARY_TYPES | {"application/ogg"}


@dataclass
class UpstreamStats:
    """Counters the health route reads; cheap to keep up to date."""

    tts_calls: int = 0
    audio_calls: int = 0
    open_streams: int = 0
    bytes_streamed: int = 0


class Resumed(NamedTuple):
    """A cut download picked up again: the reply, its body from the first byte the
    stream lacks, and the audio's whole length when the reply told it."""

    response: aiohttp.ClientResponse
    chunks: AsyncIterator[bytes]
    total: int | None


#: How a stream is resumed: ``resume(received, crc32 of those bytes, why it was cut)``;
#: raises an :class:`~shim.errors.UpstreamError` when it cannot be.
Resume = Callable[[int, int, str], Awaitable[Resumed]]


@dataclass
class AudioStream:
    """Audio arriving from upstream, its format known from its first bytes.

    Iterate it once (or :meth:`aclose` it): it enforces the size cap, and turns a
    body that ends early into an error.
    """

    format: str
    request_id: str | None
    _head: bytes
    _rest: AsyncIterator[bytes] | None
    #: The reply the audio comes in (``None``: inline audio), released when done.
    _response: aiohttp.ClientResponse | None
    _max_bytes: int
    _expected: int | None
    _stats: UpstreamStats
    #: The first chunk (the bytes read to identify the audio) is all of it: the body
    #: had ended when they were read, so iterating ends without waiting for the network.
    complete: bool = False
    #: How to pick the download up where it was cut (``None``: it cannot be; a body
    #: that breaks off is then an error).
    resume: Resume | None = None
    #: Decodes the rest as it streams (``None``: all of it was checked already).
    _verifier: Verifier | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self._stats.open_streams += 1

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = len(self._head)
        # What went out, checksummed where a cut can be resumed: a CDN that ignores
        # ``Range`` sends those bytes again, and they must be the very same.
        crc = zlib.crc32(self._head) if self.resume is not None else 0
        verifier = self._verifier
        try:
            if self._head:
                yield self._head  # the verifier has it already
            while self._rest is not None:
                try:
                    async for chunk in self._rest:
                        received += len(chunk)
                        if received > self._max_bytes:
                            raise download_error(
                                f"the audio exceeded the {self._max_bytes}-byte size cap"
                            )
                        if self.resume is not None:
                            crc = zlib.crc32(chunk, crc)
                        self._stats.bytes_streamed += len(chunk)
                        if verifier is not None:
                            await verifier.feed(chunk)
                        yield chunk
                except (UpstreamError, BadAudio):
                    raise
                except Exception as exc:  # aiohttp's: reset, read timeout, bad framing
                    cut = f"the audio download broke off: {describe(exc)}"
                    if self.resume is None:
                        raise download_error(cut) from exc
                else:
                    if self._expected is None or received >= self._expected:
                        break
                    cut = f"the audio ended after {received} of {self._expected} announced bytes"
                    if self.resume is None:
                        raise download_error(cut)
                # Cut: carry on from the same link where it stopped (see download.py).
                self._drop_response()
                resumed = await self.resume(received, crc, cut)
                self._response, self._rest = resumed.response, resumed.chunks
                if resumed.total is not None:
                    self._expected = resumed.total
            if verifier is not None:
                await verifier.finish()  # before the end reaches the cache's commit
        except BadAudio as exc:
            raise bad_audio(str(exc), self.format, self.request_id) from exc
        finally:
            await self.aclose()

    def _drop_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stats.open_streams -= 1
        if self._verifier is not None:
            self._verifier.close()
        if self._response is not None:
            # Read to the end, its connection goes back to the pool; else it is closed.
            self._response.release()


def identify(head: bytes, content_type: str, named: str | None) -> str | None:
    """The format of audio starting with ``head``, or ``None`` if it is not audio.

    ``content_type`` is the reply's media type; ``named`` the format the reply itself
    named (the extension of the audio link), if any.
    """
    if content_type and not (content_type.startswith("audio/") or content_type in _OPAQUE_TYPES):
        return None
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
    # No signature to check: only a reply that says it is audio (or bytes) is taken.
    says_audio = content_type.startswith("audio/") or content_type in _BINARY_TYPES
    if says_audio and (content_type in _PCM_TYPES or named == "pcm"):
        return "pcm"
    return None


async def open_stream(
    response: aiohttp.ClientResponse,
    *,
    request_id: str | None,
    named: str | None,
    max_bytes: int,
    stats: UpstreamStats,
    decode_all: bool,
    retryable: bool = False,
) -> AudioStream:
    """Read the start of ``response``'s body, check it is audio, and hand it over.

    ``decode_all``: decode every frame, not just the first (the audio is to be cached).
    ``retryable`` marks failures here as worth fetching again (a CDN download is
    free; a binary generation reply is not)."""
    expected = announced_length(response)
    if expected is not None and expected > max_bytes:
        response.close()
        raise errors.audio_too_large(
            f"The generated audio is {expected} bytes, over the shim's {max_bytes}-byte cap.",
            request_id=request_id,
        )
    chunks: AsyncIterator[bytes] = response.content.iter_any()
    head = bytearray()
    fmt: str | None = None
    verifier: Verifier | None = None
    try:
        if await _read(chunks, head, MIN_AUDIO_BYTES, max_bytes):
            chunks = empty_chunks()
        content_type = media_type(response)
        fmt = identify(bytes(head[:MIN_AUDIO_BYTES]), content_type, named)
        if fmt is None or len(head) < MIN_AUDIO_BYTES:
            what = f"content type {content_type or 'missing'!r}, {len(head)} bytes"
            raise not_audio(what, request_id, retryable)
        complete = response.content.at_eof()
        # The first frames decode before the first byte is sent, reading on as far as
        # they need; a body that has all arrived by then is checked whole.
        while not complete:
            start = await first_frames(bytes(head), fmt)
            if start is not None:
                verifier = Verifier(fmt, start, decode_all=decode_all)
                await verifier.feed(bytes(head))
                break
            if len(head) >= MAX_HEAD_BYTES:
                raise BadAudio(f"no {fmt} frame decodes in its first {len(head)} bytes")
            if await _read(chunks, head, min(2 * len(head), MAX_HEAD_BYTES), max_bytes):
                chunks = empty_chunks()
            complete = response.content.at_eof()
        if complete:
            await check_whole(bytes(head), fmt, decode_all=decode_all)
    except BaseException as exc:  # cancellation (the deadline) included: never leak it
        response.close()
        if verifier is not None:
            verifier.close()
        if isinstance(exc, BadAudio):
            raise bad_audio(str(exc), fmt or "audio", request_id, retryable) from exc
        if isinstance(exc, Exception) and not isinstance(exc, UpstreamError):
            raise download_error(f"the audio download failed: {describe(exc)}", retryable) from exc
        raise
    return AudioStream(
        fmt,
        request_id,
        bytes(head),
        chunks,
        response,
        max_bytes,
        expected,
        stats,
        complete,
        _verifier=verifier,
    )


async def _read(chunks: AsyncIterator[bytes], head: bytearray, size: int, cap: int) -> bool:
    """Read ``chunks`` onto ``head`` until it holds ``size`` bytes; ``True`` if the body
    ended first."""
    while len(head) < size:
        try:
            head += await chunks.__anext__()
        except StopAsyncIteration:
            return True
        if len(head) > cap:
            raise download_error(f"the audio exceeded the {cap}-byte size cap")
    return False


async def inline_stream(
    data: bytes,
    *,
    request_id: str | None,
    max_bytes: int,
    stats: UpstreamStats,
    decode_all: bool,
) -> AudioStream:
    """Audio the generation reply carried inline (base64), checked at once."""
    fmt = identify(data[:MIN_AUDIO_BYTES], "", None)
    if fmt is None or len(data) < MIN_AUDIO_BYTES:
        raise not_audio(f"inline, {len(data)} bytes", request_id)
    if len(data) > max_bytes:
        raise errors.audio_too_large(
            f"The generated audio is {len(data)} bytes, over the shim's {max_bytes}-byte cap.",
            request_id=request_id,
        )
    try:
        await check_whole(data, fmt, decode_all=decode_all)
    except BadAudio as exc:
        raise bad_audio(str(exc), fmt, request_id) from exc
    return AudioStream(fmt, request_id, data, None, None, max_bytes, None, stats, True)


def announced_length(response: aiohttp.ClientResponse) -> int | None:
    """The body's length as its ``Content-Length`` announces it, if it does (not for a
    content-encoded body: then the length is not the audio's)."""
    declared = response.headers.get("content-length", "")
    encoded = "content-encoding" in response.headers
    sized = declared.isascii() and declared.isdigit() and not encoded
    return int(declared) if sized else None


def media_type(response: aiohttp.ClientResponse) -> str:
    """The reply's media type, lower case, without parameters."""
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower()


def not_audio(what: str, request_id: str | None, retryable: bool = False) -> UpstreamError:
    """The 502 for a reply that is not audio in any format the shim knows."""
    return errors.bad_upstream_audio(
        f"The upstream audio is empty, too short, or in no format the shim recognises ({what}).",
        retryable=retryable,
        request_id=request_id,
    )


def bad_audio(
    problem: str, fmt: str, request_id: str | None, retryable: bool = False
) -> UpstreamError:
    """The 502 for audio that does not decode as the format it claims to be."""
    return errors.bad_upstream_audio(
        f"The upstream audio is not valid {fmt}: {problem}.",
        retryable=retryable,
        request_id=request_id,
    )


def download_error(message: str, retryable: bool = False) -> UpstreamError:
    """The 502 for audio that could not be fetched or streamed whole."""
    return errors.audio_download_failed(
        f"The audio could not be delivered: {message}.", retryable=retryable
    )


async def empty_chunks() -> AsyncIterator[bytes]:
    """A body with nothing (more) in it."""
    return
    yield  # pragma: no cover
