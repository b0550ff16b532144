"""The one per-request context: what a request is, and what its stages did.

Made once per HTTP request by the outermost middleware (the access log,
:class:`shim.logs.AccessLogMiddleware`) and kept in ``scope["state"]`` under one key;
every part reaches it through :func:`context_of`, from the scope or the request. The
gate writes the request id and the client on it, the handlers the model, size and
:class:`~shim.quota.Bill`, the data path its timings, cache results and upstream
attempts; when the request ends, the access log, the metrics and the billing read it.
The bill is reached through the context, not through a middleware's local, so nothing
depends on the order the middleware run in. App-wide state is not here: it is
``app.state.shim`` (:class:`shim.state.State`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from shim.bodies import CLIENT_CLOSED
from shim.clients import ANONYMOUS_CLIENT, Client

if TYPE_CHECKING:
    from shim.quota import Bill

__all__ = ["Calls", "RequestContext", "context_of", "new_request_id"]

#: ``(kind, outcome)`` per upstream attempt: kind ``generation`` or ``download``,
#: outcome ``ok`` or the error's code.
Calls = list[tuple[str, str]]

_KEY = "tts_shim"


def new_request_id() -> str:
    return f"req_{secrets.token_hex(16)}"  # uuid4's 122 random bits and more, for less


@dataclass
class RequestContext:
    """One request: its id, client and bill, and what the access log and the metrics
    say about it."""

    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    #: Echoed as ``x-request-id`` (unless the upstream's is) and in every error body.
    request_id: str = field(default_factory=new_request_id)
    #: The route template, set by the access log when the request ends.
    route: str | None = None
    #: Who sent it (shim/clients.py): the anonymous client unless a client key named it.
    client: Client = ANONYMOUS_CLIENT
    #: What it may spend and has spent (:func:`shim.operations.admit` opens it).
    bill: Bill | None = None
    #: The code of the 429 that refused it before a bill was opened (a rate limit).
    refused: str | None = None

    # What the response was: written by the access log as the messages go out.
    status: int | None = None
    bytes: int = 0
    complete: bool = False
    #: The client hung up before the response was complete.
    client_closed: bool = False
    upstream_request_id: str | None = None
    #: ``time.perf_counter()`` when the first body byte was sent.
    first_byte: float | None = None

    # What the stages did.
    #: The validated request's model and size.
    model: str | None = None
    characters: int = 0
    queued_ms: float | None = None
    upstream_ms: float | None = None
    #: ``HIT``, ``MISS`` or ``BYPASS``: where the audio came from (its first piece's).
    cache: str | None = None
    #: How many pieces the text was generated in (above 1: split).
    pieces: int | None = None
    upstream_calls: Calls = field(default_factory=list)
    cache_hits: int = 0
    cache_misses: int = 0
    #: Characters served from the cache: generations not paid for.
    cache_hit_characters: int = 0

    @property
    def shown_status(self) -> int | None:
        """The status the log shows: nginx's 499 when the client hung up first."""
        return CLIENT_CLOSED if self.client_closed else self.status

    @property
    def refusal(self) -> str | None:
        """Why the request was refused (a 429's code), if it was: by a rate limit, or
        by its bill's budget."""
        if self.refused is None and self.bill is not None:
            return self.bill.refused
        return self.refused

    def cache_result(self, hit: bool, characters: int) -> None:
        """Note one cache look-up of a piece of ``characters``."""
        if hit:
            self.cache_hits += 1
            self.cache_hit_characters += characters
        else:
            self.cache_misses += 1

    def fields(self) -> dict[str, Any]:
        """What the access line shows."""
        upstream_id = self.upstream_request_id
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "status": self.shown_status,
            "bytes": self.bytes,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
        }
        if self.queued_ms is not None:
            data["queued_ms"] = round(self.queued_ms, 2)
        if self.upstream_ms is not None:
            data["upstream_ms"] = round(self.upstream_ms, 2)
        if upstream_id is not None and upstream_id != self.request_id:
            data["upstream_request_id"] = upstream_id
        if self.cache is not None:
            data["cache"] = self.cache
        if self.pieces is not None:
            data["pieces"] = self.pieces
        if self.client_closed:
            data["client_closed"] = True
        elif not self.complete:
            # The response was cut after it started, or never started.
            data["aborted"] = True
        return data


def context_of(where: HTTPConnection | MutableMapping[str, Any]) -> RequestContext:
    """The request's context, from its scope or its :class:`~starlette.requests.Request`.

    The outermost middleware makes it; a part run without that middleware (in a test,
    or mounted on its own) gets one made here, on first use."""
    scope = where.scope if isinstance(where, HTTPConnection) else where
    state = scope.setdefault("state", {})
    context = state.get(_KEY)
    if not isinstance(context, RequestContext):
        context = state[_KEY] = RequestContext(scope.get("method", ""), scope.get("path", ""))
    return context
