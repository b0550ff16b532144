"""Fetching the audio from the CDN: redirects followed by hand, each hop through the
origin guard, and no credential ever sent.

A download is not billed, so its failures are worth retrying (before any byte has
reached the client), unlike the generation call's.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from shim.config import Origin, origin_of
from shim.errors import APIError
from shim.upstream.clients import Proxies, transport_error

__all__ = ["PEER", "fetch_audio", "named_format"]

PEER = "the audio CDN"
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_KNOWN_SUFFIXES = ("mp3", "opus", "aac", "flac", "wav", "pcm")


async def fetch_audio(
    session: aiohttp.ClientSession,
    url: str,
    origins: frozenset[Origin],
    request_id: str | None,
    proxies: Proxies,
) -> aiohttp.ClientResponse:
    """GET ``url`` and follow redirects within ``origins``; return the 2xx response,
    its body unread."""
    # Parsed once: the origin guard checks the very URL object aiohttp connects to, so
    # no difference between two parsers can let a link past the guard.
    target = _parsed(url)
    for _ in range(_MAX_REDIRECTS + 1):
        checked = _check_origin(target, origins, request_id)
        try:
            response = await session.get(
                checked, allow_redirects=False, proxy=proxies.for_url(checked)
            )
        except Exception as exc:
            error = transport_error(exc, PEER, retryable=True)
            error.request_id = request_id
            raise error from exc
        if response.status in _REDIRECTS and "location" in response.headers:
            response.release()
            target = _parsed(response.headers["location"], base=checked)
            continue
        if response.status >= 400:
            response.release()
            raise APIError(
                502,
                f"The audio CDN answered {response.status} for the generated audio.",
                type="server_error",
                code="audio_download_failed",
                retryable=response.status in (408, 429) or response.status >= 500,
                request_id=request_id,
            )
        return response
    raise APIError(
        502,
        "The audio CDN redirected too many times.",
        type="server_error",
        code="audio_download_failed",
        request_id=request_id,
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
        raise APIError(
            502,
            "The AI/ML API pointed at audio on an origin this shim does not trust "
            f"({shown}). Add it with --audio-origin if it is legitimate.",
            type="server_error",
            code="audio_origin_not_allowed",
            request_id=request_id,
        )
    return url
