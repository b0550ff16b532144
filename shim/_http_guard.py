"""The guard on request heads: a size cap and a time limit, before any app code runs.

uvicorn sets its fastest parser, httptools, no limit on the size of a request head, and
no server of uvicorn's bounds the time a client may take to send one (its keep-alive
timeout starts only after a response). Without the first, one client sending endless
headers costs seconds of CPU (httptools gathers a header value by appending each piece to
the last); without the second, a thousand connections that never finish a head hold every
descriptor the process may open, and ``/healthz`` stops answering.

This module is the one place that reaches into uvicorn's protocol. Where uvicorn's
httptools protocol offers the hooks used here (:func:`uvicorn_has_hooks`), it is
subclassed: the head is counted as it arrives and closed past :data:`MAX_HEADER_BYTES`,
and a connection that has not sent a whole head within ``head_timeout`` seconds is closed.
Otherwise the shim serves on uvicorn's h11 protocol with its public cap
(``h11_max_incomplete_event_size``), checks the same cap again on the head h11 read whole
(h11 counts only a head still arriving), and logs one warning: then no head timeout holds
but ``--keep-alive-timeout`` after a response. :func:`guarded` picks one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httptools

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
else:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
    except ImportError:  # moved or gone: the h11 fallback (uvicorn_has_hooks is False)
        _Base = asyncio.Protocol

__all__ = ["MAX_HEADER_BYTES", "guarded", "uvicorn_has_hooks"]

logger = logging.getLogger("tts_shim")

#: Largest request head (request line and headers) the shim reads; past it the
#: connection gets a 400 (431 on the fallback) and is closed.
MAX_HEADER_BYTES = 64 * 1024

#: The methods of uvicorn's httptools protocol this module overrides or calls: httptools'
#: parser callbacks, uvicorn's connection and response callbacks, its 400 answer.
_HOOKS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "send_400_response",
)

#: What a head holds besides its URL and header names and values: the method, the
#: version, the separators and line ends (a head's size is estimated from what the parser
#: hands over, give or take this).
_HEAD_FRAMING = 16

_fallback_warned = False


def uvicorn_has_hooks() -> bool:
    """Whether uvicorn's httptools protocol is there with every method the guard uses."""
    # When the import failed, _Base is asyncio.Protocol, which has none of the parser's.
    return all(callable(getattr(_Base, name, None)) for name in _HOOKS)


def guarded(app: ASGIApp, *, head_timeout: float) -> tuple[ASGIApp, dict[str, Any]]:
    """The app to serve and the :class:`uvicorn.Config` options that guard its request
    heads: the cap of :data:`MAX_HEADER_BYTES`, and ``head_timeout`` seconds to send one
    (from connecting, or from the end of the previous response; a head begun after a
    longer idle spell gets as long from its first byte)."""
    if uvicorn_has_hooks():
        protocol = type("HeadGuard", (_HeadGuard,), {"head_timeout": head_timeout})
        return app, {"http": protocol}
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        logger.warning(
            "this uvicorn's httptools protocol lacks what tts-shim's request-head guard "
            "uses: serving on h11 with its %d KiB head cap; --head-timeout is not "
            "enforced (only a connection idle after a response is closed, after "
            "--keep-alive-timeout)",
            MAX_HEADER_BYTES // 1024,
        )
    return _CheckedHead(app), {"http": "h11", "h11_max_incomplete_event_size": MAX_HEADER_BYTES}


class _HeadGuard(_Base):
    """uvicorn's httptools protocol with a cap on the request head and a time limit on
    receiving it.

    The cap: the bytes of a head are counted as they arrive, in the read in which it
    begins too (less what went to the previous request's body and to heads completed in
    the same read), and a head that arrives whole is measured once parsed; past
    :data:`MAX_HEADER_BYTES` the client gets a 400 and the connection is closed. Bodies
    are never counted.

    The time limit: a deadline from the connection's opening, and from the end of each
    response, lifted when a head is complete. When it passes on a connection that sent
    nothing since a response, the connection is left to uvicorn's keep-alive timeout,
    and the first byte it sends later sets a deadline of its own.
    """

    head_timeout = 10.0

    _loop: asyncio.AbstractEventLoop | None = None
    _transport: asyncio.Transport | None = None
    #: When the head awaited must be complete; ``None``: none is awaited (a request is
    #: being answered, or the connection idles after a response past its deadline).
    _deadline: float | None = None
    #: Whether the deadline is one after a response (then an idle connection may stay).
    _idle_ok = False
    #: Whether bytes arrived since the last response ended.
    _stirred = False
    #: One timer at a time, re-armed when it fires before a deadline moved later: a
    #: kept-alive connection does not make and cancel a timer per request.
    _timer: asyncio.TimerHandle | None = None
    #: Requests whose head was read and whose response is not complete.
    _open = 0
    _refused = False
    _in_head = False
    #: The current head: its bytes counted so far, and its target (the URL).
    _head_bytes = 0
    _target = b""
    #: Bytes of the current read that belong to anything but a head still incomplete.
    _elsewhere = 0

    # -- the time limit ----------------------------------------------------------------

    def _await_head(self, *, idle_ok: bool) -> None:
        loop = self._loop
        if loop is None:
            return
        self._deadline = loop.time() + self.head_timeout
        self._idle_ok = idle_ok
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._check)

    def _check(self) -> None:
        self._timer = None
        deadline, loop, transport = self._deadline, self._loop, self._transport
        if deadline is None or loop is None or transport is None or transport.is_closing():
            return
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._check)
            return
        self._deadline = None
        if self._idle_ok and not (self._stirred or self._in_head):
            return  # idle since the response: the keep-alive timeout's to close
        logger.debug("no whole request head within %g s: connection closed", self.head_timeout)
        transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._loop = asyncio.get_running_loop()
        self._transport = transport  # type: ignore[assignment]
        self._await_head(idle_ok=False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if isinstance(exc, TimeoutError):
            # The kernel gave up on the client (shim.server.drop_stalled_connections).
            logger.info("client took no data for --send-timeout seconds: connection dropped")
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._open = max(self._open - 1, 0)
        super().on_response_complete()
        transport = self._transport
        if self._open == 0 and transport is not None and not transport.is_closing():
            self._stirred = False
            self._await_head(idle_ok=True)

    # -- the cap -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._stirred = True
        if self._deadline is None and self._open == 0:
            self._await_head(idle_ok=False)  # the first bytes after an idle spell
        self._elsewhere = 0
        super().data_received(data)
        transport = self._transport
        if not self._in_head or self._refused or transport is None or transport.is_closing():
            return
        self._head_bytes += len(data) - self._elsewhere
        if self._head_bytes > MAX_HEADER_BYTES:
            self._refuse()

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._target = b""
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._target += url
        super().on_url(url)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._deadline = None
        self._in_head = False
        size = len(self._target) + _HEAD_FRAMING
        # The scope's headers are complete by now; 4: ": " and CRLF.
        size += sum(len(name) + len(value) + 4 for name, value in self.scope["headers"])
        # What of this read the head took; the rest of a head still arriving is counted.
        self._elsewhere += max(size - self._head_bytes, 0)
        if size > MAX_HEADER_BYTES:
            self._refuse()
            return
        self._open += 1
        if self._target[:1] != b"/":
            # An absolute-form target (``GET http://name/path``): uvicorn keeps only its
            # path, and the name would go unchecked. Rare, so imported only here.
            from shim.browsers import TARGET_HOST

            self.scope[TARGET_HOST] = _target_host(self._target)  # type: ignore[literal-required]
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._elsewhere += len(body)
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _refuse(self) -> None:
        """Answer 400 and close; the rest of what was read is parsed for nothing."""
        self._refused = True
        self._deadline = None
        logger.warning("Request head over %d bytes: connection closed.", MAX_HEADER_BYTES)
        self.send_400_response("Request header fields too large.")


class _CheckedHead:
    """The fallback's pure ASGI wrapper: the cap on a head that h11 read whole (h11 caps
    only a head still arriving), a 431 envelope; and an absolute-form target's host put
    where :class:`shim.browsers.BrowserGate` checks it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            from shim import errors
            from shim.browsers import TARGET_HOST
            from shim.context import context_of

            target: bytes = scope.get("raw_path") or b""
            size = len(target) + len(scope.get("query_string", b"")) + _HEAD_FRAMING
            size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > MAX_HEADER_BYTES:
                logger.warning("Request head over %d bytes: refused.", MAX_HEADER_BYTES)
                error = errors.request_header_fields_too_large(
                    f"The request head (request line and headers) is over "
                    f"{MAX_HEADER_BYTES // 1024} KiB."
                )
                await error.response(context_of(scope).request_id)(scope, receive, send)
                return
            if target[:1] not in (b"/", b""):
                scope[TARGET_HOST] = _target_host(target)
        await self.app(scope, receive, send)


def _target_host(url: bytes) -> str | None:
    """``host[:port]`` of an absolute-form request target, as a ``Host`` header has it;
    ``None`` when it names none (``*``, or no URL at all: uvicorn answers that 400)."""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        return None
    if not parsed.host:
        return None
    host = parsed.host.decode("latin-1")
    if ":" in host:
        host = f"[{host}]"
    return host if parsed.port is None else f"{host}:{parsed.port}"
