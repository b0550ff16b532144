"""Fetching the audio from the CDN: redirects followed by hand, each hop through the
origin guard, and no credential ever sent.

A download is not billed, so its failures are worth retrying (before any byte has
reached the client), unlike the generation call's. One cut after audio bytes went
out is resumed from the same link instead (:func:`resume_headers`,
:func:`resumed`): ``Range: bytes=N-`` where the CDN honours it (a 206 whose
``Content-Range`` starts at N), else the whole file again with its first N bytes
skipped, after checking they are the ones already sent. Either way the reply must be
the same audio: same content type, same length and ``ETag`` where known (``If-Range``
asks the CDN to send the whole file if it changed); anything else fails the stream
rather than splice two different files.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from shim import errors
from shim.config import Origin, origin_of
from shim.errors import UpstreamError
from shim.upstream.clients import Proxies, describe, transport_error
from shim.upstream.stream import (
    Resumed,
    announced_length,
    download_error,
    empty_chunks,
    media_type,
)

__all__ = [
    "PEER",
    "Validators",
    "fetch_audio",
    "named_format",
    "resume_headers",
    "resumed",
]

PEER = "the audio CDN"
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_KNOWN_SUFFIXES = ("mp3", "opus", "aac", "flac", "wav", "pcm")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+([0-9]+)-([0-9]+)/([0-9]+|\*)\s*$", re.ASCII)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/([0-9]+)\s*$", re.ASCII)


async def fetch_audio(
    session: aiohttp.ClientSession,
    url: str,
    origins: frozenset[Origin],
    request_id: str | None,
    proxies: Proxies,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    """GET ``url`` (with ``headers``) and follow redirects within ``origins``; return
    the 2xx response (or a 416 to a ``Range``), its body unread."""
    # Parsed once: the origin guard checks the very URL object aiohttp connects to, so
    # no difference between two parsers can let a link past the guard.
    target = _parsed(url)
    for _ in range(_MAX_REDIRECTS + 1):
        checked = _check_origin(target, origins, request_id)
        try:
            response = await session.get(
                checked, allow_redirects=False, proxy=proxies.for_url(checked), headers=headers
            )
        except Exception as exc:
            raise transport_error(exc, PEER, retryable=True, request_id=request_id) from exc
        if response.status in _REDIRECTS and "location" in response.headers:
            response.release()
            target = _parsed(response.headers["location"], base=checked)
            continue
        if response.status >= 400 and not (response.status == 416 and headers):
            response.release()
            raise errors.audio_download_failed(
                f"The audio CDN answered {response.status} for the generated audio.",
                retryable=response.status in (408, 429) or response.status >= 500,
                request_id=request_id,
            )
        return response
    raise errors.audio_download_failed(
        "The audio CDN redirected too many times.", request_id=request_id
    )


def named_format(url: str) -> str | None:
    """The audio format the link's file name names (``.../1-a.pcm``), if any."""
    suffix = urlsplit(url).path.rsplit(".", 1)[-1].lower()
    return suffix if suffix in _KNOWN_SUFFIXES else None


def _parsed(link: str, base: URL | None = None) -> URL | None:
    """``link`` as aiohttp will use it (resolved against ``base``), or ``None`` if it is
    not a URL at all."""
    try:
        url = URL(link)
        return base.join(url) if base is not None else url
    except (ValueError, TypeError):
        return None


def _check_origin(url: URL | None, origins: frozenset[Origin], request_id: str | None) -> URL:
    origin = None if url is None else origin_of(url)
    if url is None or origin not in origins:
        shown = "not an http(s) URL" if origin is None else f"{origin[0]}://{origin[1]}:{origin[2]}"
        raise errors.audio_origin_not_allowed(
            "The AI/ML API pointed at audio on an origin this shim does not trust "
            f"({shown}). Add it with --audio-origin if it is legitimate.",
            request_id=request_id,
        )
    return url


# -- resuming a cut download -------------------------------------------------------------


@dataclass(frozen=True)
class Validators:
    """What the first reply said about the audio, which a resumed one must match."""

    content_type: str
    total: int | None
    etag: str | None
    last_modified: str | None
    #: Content-encoded: ranges would count the compressed bytes, so none is asked for.
    encoded: bool

    @classmethod
    def of(cls, response: aiohttp.ClientResponse) -> Validators:
        headers = response.headers
        return cls(
            media_type(response),
            announced_length(response),
            headers.get("etag"),
            headers.get("last-modified"),
            "content-encoding" in headers,
        )


def resume_headers(offset: int, first: Validators) -> dict[str, str]:
    """The headers of a request for the audio from byte ``offset`` on."""
    if first.encoded:
        return {}
    headers = {"range": f"bytes={offset}-"}
    # If-Range: a CDN whose file changed sends all of the new one (200), never a range
    # of it; a weak ETag cannot be used there.
    validator = first.etag if first.etag and not first.etag.startswith("W/") else None
    validator = validator or first.last_modified
    if validator:
        headers["if-range"] = validator
    return headers


async def resumed(
    response: aiohttp.ClientResponse, offset: int, crc: int, first: Validators
) -> Resumed:
    """The reply to a resume request, checked: the audio from byte ``offset`` on.

    ``crc`` is the CRC-32 of the ``offset`` bytes already sent. A reply that is not the
    same audio raises a final 502; a transport error while skipping, a retryable one.
    """
    try:
        if response.status == 416:  # an error page, in whatever type the CDN likes
            # Nothing is left from ``offset`` on: all of it had arrived (the body's last
            # bytes were in, its end was not), if the length agrees.
            match = _UNSATISFIED_RANGE.match(response.headers.get("content-range", ""))
            if match is None or int(match[1]) != offset or first.total not in (None, offset):
                raise _not_the_same("the CDN says the range is past its end")
            return Resumed(response, empty_chunks(), offset)
        if media_type(response) != first.content_type:
            raise _not_the_same(f"its content type is now {media_type(response) or 'missing'!r}")
        etag = response.headers.get("etag")
        if first.etag and etag and etag != first.etag:
            raise _not_the_same("its ETag changed")
        if response.status == 206 and "content-encoding" not in response.headers:
            total = _range_total(response.headers.get("content-range", ""), offset, first.total)
            return Resumed(response, response.content.iter_any(), total)
        if response.status != 200:
            raise _not_the_same(f"the CDN answered {response.status}")
        total = announced_length(response)
        if None not in (total, first.total) and total != first.total:
            raise _not_the_same(f"it is now {total} bytes, not {first.total}")
        chunks = response.content.iter_any()
        return Resumed(response, await _skip(chunks, offset, crc), total)
    except BaseException:
        response.close()
        raise


def _range_total(header: str, offset: int, known: int | None) -> int | None:
    """The whole length a 206's ``Content-Range`` gives, once checked against the range
    asked for (from ``offset``) and the length known before."""
    match = _CONTENT_RANGE.match(header)
    if match is None:
        raise _not_the_same(f"its Content-Range {header[:80]!r} is not a byte range")
    first, last = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if first != offset:
        raise _not_the_same(f"the CDN sent bytes from {first}, not from {offset}")
    if total is not None and (last != total - 1 or known not in (None, total)):
        raise _not_the_same(f"it is now {total} bytes, not {known}")
    return total


async def _skip(chunks: AsyncIterator[bytes], offset: int, crc: int) -> AsyncIterator[bytes]:
    """``chunks`` past their first ``offset`` bytes, which must be those already sent."""
    seen = 0
    check = 0
    chunk = b""
    try:
        while seen < offset:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                raise _not_the_same(f"it ended after {seen} bytes, fewer than sent") from None
            take = min(len(chunk), offset - seen)
            check = zlib.crc32(chunk[:take], check)
            seen += take
            chunk = chunk[take:]
    except UpstreamError:
        raise
    except Exception as exc:  # aiohttp's: reset, read timeout, bad framing
        raise download_error(
            f"the resumed audio download broke off: {describe(exc)}", retryable=True
        ) from exc
    if check != crc:
        raise _not_the_same(f"its first {offset} bytes differ from those sent")
    return _then(chunk, chunks)


async def _then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


def _not_the_same(why: str) -> UpstreamError:
    """A resumed download that is not the rest of the audio already sent: final."""
    return download_error(f"the resumed download is not the same audio ({why})")
