"""A lean HTTP/1.1 client for the shim's two upstream calls (``--upstream-transport native``).

Why it exists: the shim makes two upstream requests per speech request, and a general
client spends far more CPU on each than the shim's own request costs. Measured on the
benchmark machine (docs/benchmarks.md), per upstream request: httpx over its own
transport ~600 us, httpx over aiohttp ~230 us, aiohttp alone ~110 us; this client
~25 us. It does only what the shim needs: HTTP/1.1 (TLS for https), keep-alive pools
per origin, responses parsed by httptools (the C parser uvicorn uses), the body
streamed with back-pressure, and timeouts on connect and between reads.

It hands back ordinary ``httpx.Response`` objects and raises ``httpx`` exceptions
(``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError``,
``LocalProtocolError``), so :class:`shim.upstream.Upstream` treats its replies exactly
like those of the httpx-based transports.

Not supported, because the shim never needs them: proxies, HTTP/2, request bodies
other than bytes, redirects (the shim follows them itself), content encodings (none
is asked for; httpx's decoders still apply if a server sends one anyway).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote, urlsplit

import httptools
import httpx

__all__ = ["WireClient", "raw_body"]

Key = tuple[str, str, int]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Stop reading from the socket while this much body is waiting for the consumer, and
# start again below the low mark: memory per stream stays bounded whatever its length.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_SAFE_TARGET = "/?&=%:@!$'()*+,;~-._#[]"


class _Conn(asyncio.Protocol):
    """One connection; one request at a time; parser callbacks fill in the reply."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.headers_done = False
        self.complete = False
        self.until_eof = False
        self.encoded = False
        self.keep_alive = False
        self.got_bytes = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP reply: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and self.until_eof and exc is None:
            self.complete = True  # a body delimited by the end of the connection
        elif not self.complete:
            if self.headers_done:
                message = "peer closed connection without sending complete message body"
            else:
                message = "Server disconnected without sending a response."
            self._fail(httpx.RemoteProtocolError(message))
        self._wake()

    def pause_writing(self) -> None:  # request bodies are small: nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        names = {name.lower() for name, _ in self.headers}
        framed = b"content-length" in names or b"transfer-encoding" in names
        self.encoded = b"content-encoding" in names
        self.until_eof = not framed and self.status >= 200 and self.status not in (204, 304)
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- used by the client -------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def wait(self, timeout: float, what: str) -> None:
        """Until a parser callback or the connection says something, or ``timeout``."""
        waiter = self.loop.create_future()
        self.waiter = waiter
        timer = self.loop.call_later(timeout, _expire, waiter, what, timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    async def read(self, timeout: float) -> bytes | None:
        """The next part of the body (all that is buffered), or ``None`` at its end."""
        while True:
            if self.body:
                chunk = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
                self.body.clear()
                self.buffered = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self.wait(timeout, "reading the response body")


def _expire(waiter: asyncio.Future[None], what: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no data for {timeout:g} s while {what}"))


class _Body(httpx.AsyncByteStream):
    """The response body; hands the connection back to the pool once it is all read."""

    def __init__(self, client: WireClient, key: Key, conn: _Conn, timeout: float) -> None:
        self._client = client
        self._key = key
        self._conn: _Conn | None = conn
        self._timeout = timeout
        self.encoded = conn.encoded

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            while (chunk := await conn.read(self._timeout)) is not None:
                yield chunk
        except BaseException:
            conn.close()
            raise
        self._client._release(self._key, conn, reusable=True)
        self._conn = None

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Unread body left: the connection cannot carry another request.
            self._client._release(self._key, conn, reusable=conn.complete and not conn.body)


def raw_body(response: httpx.Response) -> AsyncIterator[bytes] | None:
    """The body of a reply from :class:`WireClient` as it arrives, or ``None`` for any
    other reply or one with a content encoding (those need httpx's decoders).

    Used instead of ``response.aiter_bytes()``, which passes every chunk through
    httpx's decoder and chunker layers: ~10 us per response the shim does not need.
    """
    stream = response.stream
    if isinstance(stream, _Body) and not stream.encoded:
        return stream.__aiter__()
    return None


class WireClient:
    """Keep-alive connection pools, one per origin, for one kind of upstream call.

    ``headers`` go with every request (``user-agent``, say). ``read_timeout`` bounds
    the wait for the reply's head and each wait for more of its body.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 256,
        max_idle_per_origin: int = 64,
        keepalive_expiry: float = 4.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle_per_origin
        # Below the 5 s idle timeout of common servers (uvicorn's, for one), so a pooled
        # connection is not reused just as the server closes it.
        self.keepalive_expiry = keepalive_expiry
        _check_headers(headers or {})
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._idle: dict[Key, list[_Conn]] = {}
        self._busy: set[_Conn] = set()
        self._max_connections = max_connections
        self._slots: asyncio.Semaphore | None = None
        self._ssl: ssl.SSLContext | None = None
        # Parsed request targets of URLs seen recently (the API's is the same every time).
        self._targets: dict[str, tuple[Key, str, str]] = {}

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()
        self._busy.clear()

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send a request; the response's body is left to be streamed."""
        key, target, hostport = self._target(url)
        head = f"{method} {target} HTTP/1.1\r\nhost: {hostport}\r\n{self._fixed}"
        if headers:
            _check_headers(headers)
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if content is not None or method in ("POST", "PUT", "PATCH"):
            head += f"content-length: {len(content or b'')}\r\n"
        try:
            raw = (head + "\r\n").encode("latin-1") + (content or b"")
        except UnicodeEncodeError as exc:
            raise httpx.LocalProtocolError(f"header value is not Latin-1: {exc}") from exc

        slots = self._slots
        if slots is None:
            slots = self._slots = asyncio.Semaphore(self._max_connections)
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), self.connect_timeout)
            except asyncio.TimeoutError as exc:
                raise httpx.PoolTimeout("no upstream connection free in time") from exc
        else:
            await slots.acquire()
        try:
            conn = await self._exchange(key, raw, retry_stale=method == "GET")
        except BaseException:
            slots.release()
            raise
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self, key, conn, self.read_timeout),
        )

    async def _exchange(self, key: Key, raw: bytes, *, retry_stale: bool) -> _Conn:
        conn = self._pop_idle(key)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(key)
        self._busy.add(conn)
        conn._reset()
        assert conn.transport is not None
        conn.transport.write(raw)
        try:
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(self.read_timeout, "waiting for the response")
        except httpx.RemoteProtocolError:
            self._discard(conn)
            # A pooled connection the server closed while idle fails before any byte
            # comes back; an idempotent request is then safe to send again.
            if reused and retry_stale and not conn.got_bytes:
                return await self._exchange(key, raw, retry_stale=False)
            raise
        except BaseException:
            self._discard(conn)
            raise
        return conn

    def _target(self, url: str) -> tuple[Key, str, str]:
        cached = self._targets.get(url)
        if cached is not None:
            return cached
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"not an http(s) URL: {url!r}")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise httpx.UnsupportedProtocol(f"bad port in {url!r}") from exc
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not target.isascii() or not target.isprintable() or " " in target:
            target = quote(target, safe=_SAFE_TARGET)
        host = parts.hostname
        default = port == _DEFAULT_PORTS[scheme]
        shown = f"[{host}]" if ":" in host else host
        result = ((scheme, host, port), target, shown if default else f"{shown}:{port}")
        if len(self._targets) >= 64:
            self._targets.clear()  # CDN links are one-off; keep only a few
        self._targets[url] = result
        return result

    def _pop_idle(self, key: Key) -> _Conn | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_expiry:
                return conn
            conn.close()
        return None

    async def _connect(self, key: Key) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()  # the same trust store httpx uses
            context = self._ssl
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Conn(loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                ),
                self.connect_timeout,
            )
        except asyncio.TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return conn

    def _release(self, key: Key, conn: _Conn, *, reusable: bool) -> None:
        if conn not in self._busy:
            return
        self._busy.discard(conn)
        assert self._slots is not None
        self._slots.release()
        if not reusable or not conn.keep_alive or conn.closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle:
            conn.close()
            return
        idle.append(conn)

    def _discard(self, conn: _Conn) -> None:
        # The caller still holds its slot; only the connection goes.
        self._busy.discard(conn)
        conn.close()


def _check_headers(headers: Mapping[str, str]) -> None:
    """Refuse names or values that would split into more header lines than given."""
    for name, value in headers.items():
        for text in (name, value):
            if "\r" in text or "\n" in text or "\0" in text:
                raise httpx.LocalProtocolError(
                    "header names and values must not contain CR, LF or NUL"
                )
