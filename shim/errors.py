"""Every error the client sees: one named constructor per error ``code``, OpenAI's
envelope (built here only), and the translation of upstream failures
(:class:`UpstreamError`, raised by :mod:`shim.upstream`) into it."""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from starlette.responses import JSONResponse

__all__ = [
    "MAX_RETRY_AFTER",
    "APIError",
    "UpstreamError",
    "audio_download_failed",
    "audio_origin_not_allowed",
    "audio_too_large",
    "bad_upstream_audio",
    "bad_upstream_response",
    "clean_request_id",
    "client_closed_request",
    "duplicate_host",
    "empty_string",
    "from_upstream",
    "host_not_allowed",
    "http_error",
    "insufficient_quota",
    "internal_error",
    "invalid",
    "invalid_api_key",
    "model_not_found",
    "no_audio_in_reply",
    "not_found",
    "origin_not_allowed",
    "rate_limit_exceeded",
    "request_header_fields_too_large",
    "request_too_large",
    "service_unavailable",
    "shown",
    "string_above_max_length",
    "timeout",
    "type_name",
    "upstream_timeout",
    "upstream_unreachable",
]

#: The longest ``Retry-After`` relayed to a client, seconds (the free tier's limit
#: is hourly).
MAX_RETRY_AFTER = 3600.0

# What an upstream request id may look like to be echoed in a header: ids are
# tokens, and anything else (CR/LF, non-Latin-1, kilobytes) is dropped, not sent.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# Client values quoted in messages: short, and shallow however deeply they nest.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel = 3
_SHOWN.maxstring = 60
_SHOWN.maxother = 60


def shown(value: Any) -> str:
    """``repr(value)`` cut short, safe for any decoded JSON (deep, huge or odd)."""
    try:
        return _SHOWN.repr(value)
    except (RecursionError, ValueError):  # ValueError: ints past str()'s digit limit
        return f"<{type_name(value)}>"


def clean_request_id(value: object) -> str | None:
    """``value`` if it is safe to send as ``x-request-id``, else ``None``."""
    if isinstance(value, str) and _REQUEST_ID.fullmatch(value):
        return value
    return None


class _ErrorResponse(JSONResponse):
    """The envelope, even when a message holds what UTF-8 cannot encode (a lone
    surrogate from a client or an upstream): then it is sent ASCII-escaped."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


_E = TypeVar("_E", bound="APIError")


class APIError(Exception):
    """An error the client sees as ``{"error": {message, type, param, code}}``.

    Made by this module's named constructors (one per ``code``), and immutable once
    made: :meth:`with_` returns a changed copy, to be raised in its place.

    ``retryable`` decides ``x-should-retry``: the OpenAI SDK retries 408, 409, 429 and
    5xx unless told not to, and retrying after the billed call succeeded would bill the
    user again for audio they never received. ``billed`` marks a failed generation that
    may have been billed all the same (it reached the AI/ML API, and no error status
    came back): the key's usage counts it.
    """

    status: int
    message: str
    type: str
    param: str | None
    code: str | None
    retryable: bool
    retry_after: float | None
    #: The upstream's request id, when it is one that is safe to echo.
    request_id: str | None
    headers: Mapping[str, str]
    billed: bool

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        billed: bool = False,
    ) -> None:
        super().__init__(message)
        fields = {
            "status": status,
            "message": message,
            "type": type,
            "param": param,
            "code": code,
            "retryable": retryable,
            "retry_after": retry_after,
            "request_id": clean_request_id(request_id),
            "headers": MappingProxyType(dict(headers or {})),
            "billed": billed,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        # Dunders (``__cause__``, ``__context__``, ``__notes__``) are Python's own.
        if name.startswith("__"):
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"errors are immutable: raise error.with_({name}=...) instead")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled and copied field by field: ``__init__``'s arguments are not ``args``.
        return (_rebuilt, (type(self), {**self.__dict__, "headers": dict(self.headers)}))

    def with_(
        self: _E,
        *,
        retryable: bool | None = None,
        request_id: str | None = None,
        billed: bool | None = None,
    ) -> _E:
        """A copy with what is given changed (``request_id``: set only if it had none)."""
        changed = dict(self.__dict__)
        if retryable is not None:
            changed["retryable"] = retryable
        if request_id is not None and self.request_id is None:
            changed["request_id"] = clean_request_id(request_id)
        if billed is not None:
            changed["billed"] = billed
        return _rebuilt(type(self), changed)

    def body(self) -> dict[str, Any]:
        """The envelope: the one place it is built."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, request_id: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        """The envelope as a response; ``headers`` are added (``Allow`` on a 405, say)."""
        sent = {**self.headers, **(headers or {})}
        sent["x-request-id"] = self.request_id or request_id
        if not self.retryable:
            sent["x-should-retry"] = "false"
        if self.retry_after is not None and "retry-after" not in sent:
            # RFC 9110 allows whole seconds only; the SDKs read the exact figure from
            # ``retry-after-ms``. Both are capped, whatever an upstream asked for.
            seconds = min(max(self.retry_after, 0.0), MAX_RETRY_AFTER)
            sent["retry-after"] = str(math.ceil(seconds))
            sent["retry-after-ms"] = str(round(seconds * 1000))
        return _ErrorResponse(self.body(), status_code=self.status, headers=sent)


class UpstreamError(APIError):
    """What the upstream layer (:mod:`shim.upstream`) raises: a failed exchange with the
    AI/ML API or its CDN, as facts (``kind``, the upstream's ``upstream_status``,
    ``retry_after``, ``request_id``, ``billed``, ``retryable``). The retry policy reads
    ``retryable`` and ``retry_after``, the bill ``billed``; the envelope the client
    sees is made from ``kind`` here, in :func:`_upstream_envelope`, and nowhere else."""

    kind: str
    upstream_status: int | None

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        upstream_status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        request_id: str | None = None,
        billed: bool = False,
    ) -> None:
        status, type_, code = _upstream_envelope(kind, upstream_status, message)
        super().__init__(
            status,
            message,
            type=type_,
            code=code,
            retryable=retryable,
            retry_after=retry_after,
            request_id=request_id,
            billed=billed,
        )
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "upstream_status", upstream_status)


def _rebuilt(cls: type[_E], fields: dict[str, Any]) -> _E:
    error = cls.__new__(cls)
    Exception.__init__(error, fields["message"])
    for name, value in fields.items():
        object.__setattr__(error, name, value)
    object.__setattr__(error, "headers", MappingProxyType(dict(fields["headers"])))
    return error


# -- the client's request -----------------------------------------------------------------


def invalid(param: str | None, message: str) -> APIError:
    """A 400 about the request (one field of it, ``param``), as OpenAI words them."""
    return APIError(400, message, param=param)


def type_name(value: Any) -> str:
    """The JSON-ish name of ``value``'s type, for messages."""
    return "null" if value is None else type(value).__name__


def string_above_max_length(param: str | None, message: str) -> APIError:
    """A 400 for a string field that is too long."""
    return APIError(400, message, param=param, code="string_above_max_length")


def empty_string(param: str | None, message: str) -> APIError:
    """A 400 for a string field that must not be empty."""
    return APIError(400, message, param=param, code="empty_string")


def model_not_found(message: str, param: str | None = "model") -> APIError:
    """The 404 OpenAI sends for a model it does not serve."""
    return APIError(404, message, param=param, code="model_not_found")


def request_too_large(message: str) -> APIError:
    """A 413 for a request body over the cap."""
    return APIError(413, message, code="request_too_large")


def request_header_fields_too_large(message: str) -> APIError:
    """A 431 for a request head over the cap."""
    return APIError(431, message, code="request_header_fields_too_large")


def client_closed_request(status: int, message: str) -> APIError:
    """The client left before its request was read (``status``: nginx's 499, for the
    access log; nobody reads the answer)."""
    return APIError(status, message, code="client_closed_request")


def not_found(message: str) -> APIError:
    """A 404 for a URL the shim does not serve."""
    return APIError(404, message)


def http_error(status: int, message: str) -> APIError:
    """Any other HTTP error Starlette's routing raises (405, say)."""
    return APIError(status, message)


def invalid_api_key(message: str) -> APIError:
    """A 401: the key is missing or wrong."""
    return APIError(401, message, code="invalid_api_key")


def origin_not_allowed(message: str) -> APIError:
    """A 403 for a browser page's origin that is not allowed."""
    return APIError(403, message, code="origin_not_allowed")


def duplicate_host(message: str) -> APIError:
    """A 400 for a request with more than one ``Host`` header."""
    return APIError(400, message, code="duplicate_host")


def host_not_allowed(status: int, message: str) -> APIError:
    """A refused host name: 400 for one in the request line, 421 for the ``Host``."""
    return APIError(status, message, code="host_not_allowed")


# -- the shim's own limits and state ---------------------------------------------------------


def rate_limit_exceeded(message: str, *, retry_after: float | None = None) -> APIError:
    """A 429 for a request over a rate (retryable when it says when)."""
    retryable = retry_after is not None
    return APIError(
        429,
        message,
        type="requests",
        code="rate_limit_exceeded",
        retryable=retryable,
        retry_after=retry_after,
    )


def insufficient_quota(message: str, *, resets_in: int) -> APIError:
    """A 429 for a key whose budget is spent, until it resets in ``resets_in`` s."""
    return APIError(
        429,
        message,
        type="insufficient_quota",
        code="insufficient_quota",
        # Sent as headers, not as ``retry_after``: the envelope caps that at an hour,
        # and a budget frees only when its window turns.
        headers={"retry-after": str(resets_in), "retry-after-ms": str(resets_in * 1000)},
    )


def service_unavailable(message: str, *, retry_after: float) -> APIError:
    """A 503 worth retrying after ``retry_after`` seconds."""
    return APIError(
        503,
        message,
        type="server_error",
        code="service_unavailable",
        retryable=True,
        retry_after=retry_after,
    )


def internal_error(message: str, *, retryable: bool = False) -> APIError:
    """A 500: the shim itself (or its set-up) is at fault."""
    return APIError(500, message, type="server_error", retryable=retryable)


def timeout(message: str, *, request_id: str | None = None) -> APIError:
    """A 504 for audio that did not come within the shim's deadline (final: the
    generation request was out, and may have been billed)."""
    return APIError(504, message, type="server_error", code="timeout", request_id=request_id)


# -- upstream -----------------------------------------------------------------------------

#: An :class:`UpstreamError`'s ``kind`` -> the envelope's (status, type, code). The kinds
#: are the codes; ``"status"`` is an error status the AI/ML API answered with.
_UPSTREAM: dict[str, tuple[int, str, str]] = {
    kind: (504 if kind == "timeout" else 502, "server_error", kind)
    for kind in (
        "timeout",
        "upstream_unreachable",
        "bad_upstream_response",
        "no_audio_in_reply",
        "audio_origin_not_allowed",
        "audio_download_failed",
        "audio_too_large",
        "bad_upstream_audio",
    )
}


def upstream_timeout(
    message: str, *, retryable: bool = False, request_id: str | None = None
) -> UpstreamError:
    """A 504: an upstream peer did not answer in time."""
    return UpstreamError("timeout", message, retryable=retryable, request_id=request_id)


def upstream_unreachable(
    message: str, *, retryable: bool = False, request_id: str | None = None
) -> UpstreamError:
    """A 502: an upstream peer could not be reached, or its connection failed."""
    return UpstreamError(
        "upstream_unreachable", message, retryable=retryable, request_id=request_id
    )


def bad_upstream_response(message: str, *, request_id: str | None = None) -> UpstreamError:
    """A 502: the AI/ML API's success reply is neither JSON nor audio."""
    return UpstreamError("bad_upstream_response", message, request_id=request_id)


def no_audio_in_reply(message: str, *, request_id: str | None = None) -> UpstreamError:
    """A 502: the AI/ML API reported success with no audio in its reply."""
    return UpstreamError("no_audio_in_reply", message, request_id=request_id)


def audio_origin_not_allowed(message: str, *, request_id: str | None = None) -> UpstreamError:
    """A 502: the audio link points at an origin the shim does not trust."""
    return UpstreamError("audio_origin_not_allowed", message, request_id=request_id)


def audio_download_failed(
    message: str, *, retryable: bool = False, request_id: str | None = None
) -> UpstreamError:
    """A 502: the audio could not be fetched or streamed whole."""
    return UpstreamError(
        "audio_download_failed", message, retryable=retryable, request_id=request_id
    )


def audio_too_large(message: str, *, request_id: str | None = None) -> UpstreamError:
    """A 502: the audio is over a size cap."""
    return UpstreamError("audio_too_large", message, request_id=request_id)


def bad_upstream_audio(
    message: str, *, retryable: bool = False, request_id: str | None = None
) -> UpstreamError:
    """A 502: the upstream audio is not audio, or does not decode (or convert)."""
    return UpstreamError("bad_upstream_audio", message, retryable=retryable, request_id=request_id)


# status -> (type, code, whether the SDK may retry). Codes are OpenAI's own where one
# exists, so code that switches on ``err.code`` keeps working.
_BY_STATUS: dict[int, tuple[str, str | None, bool]] = {
    400: ("invalid_request_error", None, False),
    401: ("invalid_request_error", "invalid_api_key", False),
    402: ("insufficient_quota", "insufficient_quota", False),
    403: ("permission_denied", None, False),
    404: ("invalid_request_error", None, False),
    408: ("server_error", "timeout", True),
    422: ("invalid_request_error", None, False),
    429: ("requests", "rate_limit_exceeded", True),
    500: ("server_error", None, True),
    502: ("server_error", None, True),
    503: ("server_error", "service_unavailable", True),
    504: ("server_error", "timeout", True),
}

_CREDIT_WORDS = ("credit", "quota", "balance", "payment")


def _by_status(status: int) -> tuple[str, str | None, bool]:
    default = (
        ("server_error", None, True) if status >= 500 else ("invalid_request_error", None, False)
    )
    return _BY_STATUS.get(status, default)


def _upstream_envelope(
    kind: str, upstream_status: int | None, message: str
) -> tuple[int, str, str | None]:
    """The (status, type, code) the client sees for an :class:`UpstreamError`."""
    if kind != "status":
        return _UPSTREAM[kind]
    assert upstream_status is not None
    # The upstream's status is kept, so the SDK raises the matching exception class.
    type_, code, _ = _by_status(upstream_status)
    lowered = message.lower()
    if upstream_status in (402, 403) and any(word in lowered for word in _CREDIT_WORDS):
        type_, code = "insufficient_quota", "insufficient_quota"
    elif upstream_status == 429 and "free-tier" in lowered:
        code = "rate_limit_exceeded"
    elif upstream_status == 404 and "model" in lowered:
        code = "model_not_found"
    return upstream_status, type_, code


def from_upstream(
    status: int,
    message: str | None,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> UpstreamError:
    """An AI/ML API error reply (``status``, its ``message``): billed nothing, retried
    where the status says it may be."""
    text = (message or "").strip() or f"The AI/ML API answered with status {status}."
    return UpstreamError(
        "status",
        f"AI/ML API error {status}: {text}",
        upstream_status=status,
        retryable=_by_status(status)[2],
        retry_after=retry_after if status in (429, 503) else None,
        request_id=request_id,
    )
