"""The AI/ML API's error replies: documented statuses, messages and body shape."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from starlette.responses import Response

__all__ = [
    "DOCUMENTED_MESSAGES",
    "FREE_TIER_MESSAGE",
    "MAINTENANCE_MESSAGE",
    "SERVER_TROUBLE_MESSAGE",
    "error_body",
    "error_response",
    "message_for",
    "timestamp",
]

#: The message the AI/ML documents give for each status they list. 402 comes from
#: the second gateway that resells ``openai/tts-1-hd`` (``insufficient_credits``).
DOCUMENTED_MESSAGES: Mapping[int, str] = {
    400: "Body validation error!",
    401: (
        "This request requires a valid API key. You can create a new API key on the "
        "Billing page: https://aimlapi.com/app/keys"
    ),
    402: "Insufficient credits",
    403: (
        "You've run out of credits. Please top up your balance or update your payment "
        "method to continue: https://aimlapi.com/app/billing/"
    ),
    404: "Not Found",
    413: "request entity too large",
    429: "Too Many Requests",
    500: "Internal server error",
    502: "Bad Gateway",
    503: "Service unavailable",
    504: "Generation timeout",
}

# Documented alternatives, for scenario steps that set ``message``.
FREE_TIER_MESSAGE = (
    "Free-tier limit: You've reached your free limit for the hour. Get AI/ML "
    "Subscription to use API, visit https://aimlapi.com/app/billing/ !"
)
SERVER_TROUBLE_MESSAGE = "Something wrong with the server. Please, try again later."
# The published page obfuscates the e-mail address at the end, so it is left out here.
MAINTENANCE_MESSAGE = "The model is under maintenance, please contact us."


def message_for(status: int) -> str:
    """The documented message for ``status``, else the HTTP reason phrase."""
    if status in DOCUMENTED_MESSAGES:
        return DOCUMENTED_MESSAGES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def timestamp() -> str:
    """Now, as ISO-8601 with milliseconds and a ``Z``, as the AI/ML API writes it."""
    now = datetime.now(timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_body(
    status: int, path: str, request_id: str, message: str | None = None
) -> dict[str, Any]:
    """``{"message", "path", "requestId", "statusCode", "timestamp"}``.

    The documents show ``statusCode`` both as a number and as a string; the mock
    sends the number, as the framework behind the real service does by default.
    """
    return {
        "message": message if message is not None else message_for(status),
        "path": path,
        "requestId": request_id,
        "statusCode": status,
        "timestamp": timestamp(),
    }


def error_response(
    status: int,
    path: str,
    request_id: str,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An AI/ML error reply; 429 carries ``Retry-After`` unless ``headers`` set one."""
    merged = {"content-type": "application/json; charset=utf-8"}
    if status == 429:
        merged["retry-after"] = "1"
    merged.update({name.lower(): value for name, value in (headers or {}).items()})
    content = json.dumps(error_body(status, path, request_id, message)).encode()
    return Response(content, status_code=status, headers=merged)
