"""The billed call: ``POST /v1/tts``, and what its reply means.

Every generation costs money, so this module decides what may be sent again. A
failure is marked retryable only when the request provably never reached the AI/ML
API (connection refused, connect or pool timeout) or when the API answered 429 or
5xx with a status line. Anything else (a read timeout after the request went out, a
2xx whose body is garbage, empty, too large or cut off) may have been billed: it is
final, for the shim and, through ``x-should-retry: false``, for the client, and
marked ``billed``, so the key's usage counts it.
"""

from __future__ import annotations

import json
import math
import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from shim import errors
from shim.errors import UpstreamError, clean_request_id
from shim.upstream.clients import never_sent, transport_error
from shim.upstream.replies import AudioRef, error_message, find_audio
from shim.upstream.stream import media_type

__all__ = ["PEER", "post_generation", "retry_after", "safe_request_id"]

PEER = "the AI/ML API"
_MAX_JSON_REPLY = 4 * 1024 * 1024  # inline base64 audio can make the reply large
_MAX_ERROR_BODY = 64 * 1024
_AUDIO_TYPES = ("audio/", "application/octet-stream")
#: UTF-8 as it is, not \u escapes: the text is most of the body. Built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


async def post_generation(
    session: aiohttp.ClientSession, url: URL, body: dict[str, Any], key: str, proxy: str | None
) -> AudioRef:
    """Send one generation request; return where its audio is."""
    try:
        response = await session.post(
            url,
            data=_ENCODER.encode(body).encode(),
            headers={
                "authorization": f"Bearer {key}",
                "content-type": "application/json",
                "accept": "application/json, audio/*",
            },
            allow_redirects=False,
            proxy=proxy,
        )
    except Exception as exc:
        sent = not never_sent(exc)
        raise transport_error(exc, PEER, retryable=not sent).with_(billed=sent) from exc
    request_id = safe_request_id(response.headers.get("x-request-id"), key)
    if response.status >= 400:
        raise await _upstream_error(response, request_id, key)  # billed nothing
    try:
        return await _accepted(response, request_id)
    except UpstreamError as exc:
        # A 2xx: the generation was made (and billed), whatever came with it; a
        # redirect (never followed) made nothing.
        raise exc.with_(billed=response.status < 300) from exc.__cause__


async def _accepted(response: aiohttp.ClientResponse, request_id: str | None) -> AudioRef:
    """Where the audio of a 2xx reply is."""
    if media_type(response).startswith(_AUDIO_TYPES):
        return AudioRef(request_id, response=response)
    try:
        raw = await _read_capped(response, _MAX_JSON_REPLY)
    except Exception as exc:  # broke off or stalled mid-body, after the status line
        raise transport_error(exc, PEER, retryable=False, request_id=request_id) from exc
    try:
        payload = json.loads(raw) if raw is not None else None
    except ValueError:
        payload = None
    if payload is None:
        raise errors.bad_upstream_response(
            "The AI/ML API answered the generation request with a body that is neither "
            f"JSON nor audio (content type {media_type(response) or 'missing'!r}, "
            f"{'over the size cap' if raw is None else f'{len(raw)} bytes'}).",
            request_id=request_id,
        )
    return find_audio(payload, request_id)


def safe_request_id(value: str | None, key: str) -> str | None:
    """An upstream request id that is safe to relay: a short token, never the key."""
    cleaned = clean_request_id(value)
    if cleaned is None or (key and key in cleaned):
        return None
    return cleaned


def retry_after(headers: CIMultiDictProxy[str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date);
    ``None`` when absent or not a finite, non-negative time."""
    if ms := headers.get("retry-after-ms"):
        seconds = _finite(ms)
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return seconds
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _finite(text: str) -> float | None:
    if len(text) > 32:  # no real delay needs 32 digits; a 301-digit one is hostile
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


async def _upstream_error(
    response: aiohttp.ClientResponse, request_id: str | None, key: str
) -> UpstreamError:
    try:
        raw = await _read_capped(response, _MAX_ERROR_BODY) or b""
    except Exception:  # broken off: the status alone will do
        raw = b""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    message, body_id = error_message(payload)
    if message is None and raw and not isinstance(payload, dict):
        message = raw[:500].decode("utf-8", "replace")
    if message and key and key in message:
        # An upstream that echoes the key must not hand it to the client (or the log).
        message = message.replace(key, "[redacted]")
    return errors.from_upstream(
        response.status,
        message,
        request_id=request_id or safe_request_id(body_id, key),
        retry_after=retry_after(response.headers),
    )


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The whole body, or ``None`` when it is over ``cap`` bytes."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > cap:
                response.close()  # the rest is not worth reading: drop the connection
                return None
            parts.append(chunk)
    except BaseException:
        response.close()
        raise
    response.release()
    return b"".join(parts)
