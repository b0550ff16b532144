"""Reading request bodies: size-capped, and every failure an OpenAI-style 4xx."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import ClientDisconnect, Request

from shim import errors
from shim.errors import APIError

__all__ = ["CLIENT_CLOSED", "read_json"]

#: nginx's status for "the client closed the connection before the answer": never
#: sent to anyone, but it is what the access log shows.
CLIENT_CLOSED = 499

# A ``\uD800``-``\uDFFF`` escape: Python's parser turns an unpaired one into a lone
# surrogate, which no UTF-8 encoder (upstream request, response, log) accepts.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


async def read_json(request: Request, max_bytes: int) -> Any:
    """Decode the JSON body, refusing bodies over ``max_bytes`` without reading them."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            parts.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; the status is for the access log (one info line).
        raise errors.client_closed_request(
            CLIENT_CLOSED,
            "The client closed the connection before sending the whole request body.",
        ) from None
    raw = b"".join(parts)
    if not raw.strip():
        raise errors.invalid(None, "The request body is empty; send a JSON object.")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise errors.invalid(
            None, f"The request body is not valid UTF-8 (byte {exc.start})."
        ) from exc
    except RecursionError as exc:
        raise errors.invalid(None, "The request body is nested too deeply.") from exc
    except ValueError as exc:
        raise errors.invalid(
            None,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            f"aren't using your HTTP library correctly.) Parser said: {exc}.",
        ) from exc
    if _SURROGATE_ESCAPE.search(raw) and not _encodable(body):
        raise errors.invalid(
            None,
            "The request body holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF not "
            "in a pair), which is not a character; send valid Unicode text.",
        )
    return body


def _encodable(value: Any) -> bool:
    """Whether ``value`` (decoded JSON) can be written out as UTF-8 again."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):  # too deep to check: refuse, to be sure
        return False
    return True


def _too_large(max_bytes: int) -> APIError:
    return errors.request_too_large(
        f"The request body is larger than this shim accepts ({max_bytes} bytes)."
    )
