"""Reading the AI/ML API's replies: where the audio is, and what an error says.

Every documented success shape is accepted (see ``shared/CONTRACT.md``):
``{"audio": {"url": ...}}`` (doc page), ``{"audio": "<url>", "meta": ...}`` (current
OpenAPI), ``{"audio_url": ...}``, and inline base64 or ``data:`` URIs (accepted by
AI/ML's own SDK). The old ``{"metadata": ...}`` reply holds no audio at all.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import aiohttp

from shim import errors
from shim.upstream.stream import AudioStream

__all__ = ["AudioRef", "error_message", "find_audio"]


@dataclass
class AudioRef:
    """Where the audio of one generation is, in whichever form the reply gave it."""

    request_id: str | None
    url: str | None = None
    inline: bytes | None = None
    #: A binary reply (the audio itself), its body still unread.
    response: aiohttp.ClientResponse | None = None
    #: That reply opened (its first bytes read): see :class:`shim.upstream.Upstream`.
    stream: AudioStream | None = None


def find_audio(payload: Any, request_id: str | None) -> AudioRef:
    """The audio reference in a decoded JSON success reply, or a 502 saying what the
    reply held instead."""
    if not isinstance(payload, dict):
        payload = {}
    metadata = payload.get("metadata")
    if isinstance(metadata, dict):
        request_id = request_id or _str_or_none(metadata.get("request_id"))
    ref = payload.get("audio")
    if isinstance(ref, dict):
        ref = ref.get("url")
    if ref is None:
        ref = payload.get("audio_url")
    if isinstance(ref, str) and ref:
        if "://" in ref[:16]:  # any URL; the origin guard decides whether to fetch it
            return AudioRef(request_id, url=ref)
        inline = _decode_inline(ref)
        if inline is not None:
            return AudioRef(request_id, inline=inline)
    keys = ", ".join(sorted(map(str, payload))) or "nothing"
    raise errors.no_audio_in_reply(
        "The AI/ML API reported success but its reply has no audio reference "
        f"(it held: {keys}; upstream request id {request_id or 'unknown'}). "
        "Nothing was streamed.",
        request_id=request_id,
    )


def error_message(payload: Any) -> tuple[str | None, str | None]:
    """``(message, request id)`` from an AI/ML error body, as far as it has them."""
    if not isinstance(payload, dict):
        return None, None
    message = payload.get("message")
    if isinstance(message, list):  # validation errors sometimes come as a list
        message = "; ".join(str(m) for m in message)
    if message is None and isinstance(payload.get("error"), dict):
        message = payload["error"].get("message")
    return _str_or_none(message), _str_or_none(payload.get("requestId"))


def _decode_inline(ref: str) -> bytes | None:
    data = ref.split(",", 1)[1] if ref.startswith("data:") and "," in ref else ref
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    return str(value) if value is not None else None
