"""OpenAI's error envelope, and the translation of AI/ML API errors into it."""

from __future__ import annotations

import json
import math
import re
import reprlib
from typing import Any

from starlette.responses import JSONResponse

__all__ = [
    "MAX_RETRY_AFTER",
    "APIError",
    "clean_request_id",
    "from_upstream",
    "invalid",
    "shown",
    "type_name",
    "wrong_type",
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


class APIError(Exception):
    """An error the client sees as ``{"error": {message, type, param, code}}``.

    ``retryable`` decides ``x-should-retry``: the OpenAI SDK retries 408, 409, 429 and
    5xx unless told not to, and retrying after the billed call succeeded would bill the
    user again for audio they never received. ``billed`` marks a failed generation that
    may have been billed all the same (it reached the AI/ML API, and no error status
    came back): the key's usage counts it.
    """

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
        headers: dict[str, str] | None = None,
        billed: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        self.request_id = request_id
        self.headers = dict(headers or {})
        self.billed = billed

    @property
    def request_id(self) -> str | None:
        """The upstream's request id, when it is one that is safe to echo."""
        return self._request_id

    @request_id.setter
    def request_id(self, value: str | None) -> None:
        self._request_id = clean_request_id(value)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, request_id: str) -> JSONResponse:
        headers = dict(self.headers)
        headers["x-request-id"] = self.request_id or request_id
        if not self.retryable:
            headers["x-should-retry"] = "false"
        if self.retry_after is not None and "retry-after" not in headers:
            # RFC 9110 allows whole seconds only; the SDKs read the exact figure from
            # ``retry-after-ms``. Both are capped, whatever an upstream asked for.
            seconds = min(max(self.retry_after, 0.0), MAX_RETRY_AFTER)
            headers["retry-after"] = str(math.ceil(seconds))
            headers["retry-after-ms"] = str(round(seconds * 1000))
        return _ErrorResponse(self.body(), status_code=self.status, headers=headers)


def invalid(param: str | None, message: str, code: str | None = None) -> APIError:
    """A 400 about one request field, as OpenAI words them."""
    return APIError(400, message, param=param, code=code)


def type_name(value: Any) -> str:
    """The JSON-ish name of ``value``'s type, for messages."""
    return "null" if value is None else type(value).__name__


def wrong_type(param: str, expected: str, value: Any) -> APIError:
    """A 400 for a field of the wrong JSON type."""
    return invalid(
        param, f"Invalid type for '{param}': expected {expected}, got {type_name(value)}."
    )


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


def from_upstream(
    status: int,
    message: str | None,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """Translate an AI/ML API error reply, keeping its status (so the SDK raises the
    matching exception class) and its message."""
    text = (message or "").strip() or f"The AI/ML API answered with status {status}."
    default = (
        ("server_error", None, True) if status >= 500 else ("invalid_request_error", None, False)
    )
    type_, code, retryable = _BY_STATUS.get(status, default)
    lowered = text.lower()
    if status in (402, 403) and any(word in lowered for word in _CREDIT_WORDS):
        type_, code = "insufficient_quota", "insufficient_quota"
    elif status == 429 and "free-tier" in lowered:
        code = "rate_limit_exceeded"
    elif status == 404 and "model" in lowered:
        code = "model_not_found"
    return APIError(
        status,
        f"AI/ML API error {status}: {text}",
        type=type_,
        code=code,
        retryable=retryable,
        retry_after=retry_after if status in (429, 503) else None,
        request_id=request_id,
    )
