"""Running the shim under uvicorn, alone or with the bundled mock upstream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shim.config import Config, StartupError, parse_origin
from shim.logs import QUIET
from shim.logs import configure as configure_logging

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = [
    "MAX_HEADER_BYTES",
    "HeadCappedHttpTools",
    "drop_stalled_connections",
    "listening_line",
    "run",
    "serve",
]

logger = logging.getLogger("tts_shim")

_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds between looks at a second Ctrl-C during ``--shutdown-delay``.
_TICK = 0.1

#: The key ``--mock`` sends upstream when none is set; the mock accepts any.
MOCK_KEY = "mock-key"

#: Largest request head (request line and headers) the shim reads before it answers
#: 400 and closes (give or take one read from the socket).
MAX_HEADER_BYTES = 64 * 1024


class HeadCappedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the request head.

    httptools is uvicorn's fastest parser (h11 cost ~270-300 µs more CPU a request in the
    last ``python3 bench/parsers.py``), but uvicorn sets it no limit: httptools gathers a
    header value by appending each piece to the last, so a 100 MB header cost 9 s of
    CPU and stalled ``/healthz`` for 4.8 s (``docs/reliability.md``). Here the bytes
    that arrive while a request's head is incomplete are counted, and past
    :data:`MAX_HEADER_BYTES` the connection gets a 400 and is closed. The read in which
    a request begins is not counted (it may hold the end of the previous request), so
    the cap is exceeded by one read at most.

    uvicorn is pinned to the minor release this is tested on (``pyproject.toml``).
    """

    _in_head = False
    _began = False
    _head_bytes = 0

    def data_received(self, data: bytes) -> None:
        self._began = False
        super().data_received(data)
        if not self._in_head or self._began or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEADER_BYTES:
            self.logger.warning("Request head over %d bytes: connection closed.", MAX_HEADER_BYTES)
            self.send_400_response("Request header fields too large.")

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, TimeoutError):
            # The kernel gave up on the client (see drop_stalled_connections).
            logger.info("client took no data for --send-timeout seconds: connection dropped")
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._in_head, self._began, self._head_bytes = True, True, 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.url[:1] != b"/":
            # An absolute-form target (``GET http://name/path``): uvicorn keeps only its
            # path, and the name would go unchecked. Rare, so imported only here.
            from shim.browsers import TARGET_HOST

            self.scope[TARGET_HOST] = _target_host(self.url)  # type: ignore[literal-required]
        super().on_headers_complete()


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


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the server it runs beside."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _ShimServer(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown, so the process
    dies by the signal; a sidecar that drained cleanly should exit 0 instead.

    On shutdown, with ``--shutdown-delay``, the shim first goes on serving for that
    long while ``/readyz`` answers 503 (a second Ctrl-C ends the pause). Then it is
    marked draining (new speech work is refused), and uvicorn stops accepting, closes
    idle connections, and gives in-flight responses ``--graceful-timeout`` seconds
    before cutting them.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette, listening: str = "") -> None:
        super().__init__(config)
        self.shim_app = app
        self.listening = listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        # Only now: the signal handlers are in place and requests are answered, so
        # whoever waits for this line may use the shim (or stop it) at once.
        if self.listening and self.started:
            logger.info(self.listening)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = self.shim_app.state.shim  # built by the lifespan, which has run
        delay = state.config.shutdown_delay
        if delay > 0:
            state.capacity.start_leaving()
            logger.info("shutting down in %g s: /readyz answers 503, requests are served", delay)
            for _ in range(math.ceil(delay / _TICK)):  # uvicorn's own tick
                if self.force_exit:
                    break
                await asyncio.sleep(_TICK)
        state.capacity.start_draining()
        logger.info(
            "draining: %d request(s) in flight, up to %g s to finish",
            state.capacity.in_flight,
            state.config.graceful_timeout,
        )
        await super().shutdown(sockets=sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _EXIT_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _bind(host: str, port: int, *, send_timeout: float | None = None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if send_timeout is not None:
            drop_stalled_connections(sock, send_timeout)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def drop_stalled_connections(sock: socket.socket, seconds: float) -> bool:
    """Have the kernel drop every connection accepted on ``sock`` whose client takes no
    data for ``seconds``: Linux's ``TCP_USER_TIMEOUT``, which accepted sockets inherit
    from the listening one, ends a connection once what was sent has stayed
    unacknowledged, or the client's receive window shut, that long. Returns whether the
    platform has it (elsewhere only :class:`shim.responses.SendTimeout` applies).

    The application can cut a response whose ``send`` waits, but not the connection:
    uvicorn closes one politely, after the bytes already written to it were taken, and
    a response written to the socket's buffers at once never waits at all. A client
    that never reads again would keep its descriptor and those buffers (megabytes of
    audio) for as long as it kept the socket open; ASGI gives an application no way to
    reset a connection, but the kernel can.
    """
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None:
        return False
    sock.setsockopt(socket.IPPROTO_TCP, option, min(max(round(seconds * 1000), 1), 2**31 - 1))
    return True


def listening_line(config: Config, port: int, *, mock: bool = False) -> str:
    """The start-up line that names the shim's own address (the SDK's ``base_url`` is
    this plus ``/v1``), so the embedded mock's address is not taken for it."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    upstream = config.upstream_root + (", the embedded mock" if mock else "")
    return f"tts-shim listening on http://{host}:{port} (upstream: {upstream})"


def _uvicorn_config(app: object, config: Config, **overrides: object) -> uvicorn.Config:
    options: dict[str, object] = {
        "log_level": config.log_level,
        "log_config": None,  # serve() applies shim.logs.log_config, for uvicorn's too
        "access_log": False,  # shim.logs writes the access log, without query strings
        "timeout_graceful_shutdown": config.graceful_timeout,
        "timeout_keep_alive": config.keep_alive_timeout,
        "server_header": False,
        "http": HeadCappedHttpTools,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


async def serve(config: Config, *, mock: bool = False, mock_port: int = 0) -> None:
    """Serve the shim until told to stop; with ``mock``, also serve the bundled
    mock upstream on loopback (``mock_port``; 0: a free port) and point the shim at it.

    Once bound, it logs one line with the address clients should use:
    ``tts-shim listening on http://HOST:PORT (upstream: ...)``.
    """
    config.check_exposure()  # before --mock swaps in its stand-in key
    configure_logging(config)
    mock_server: uvicorn.Server | None = None
    mock_socket: socket.socket | None = None
    # A start-up refused on the way closes the sockets it had bound; once the app is
    # built they are the servers' to close.
    with contextlib.ExitStack() as on_failure:
        if mock:
            from mockserver import create_app as create_mock_app

            mock_socket = _bind("127.0.0.1", mock_port)
            on_failure.callback(mock_socket.close)
            mock_url = f"http://127.0.0.1:{mock_socket.getsockname()[1]}"
            config = dataclasses.replace(
                config,
                upstream_url=mock_url,
                # With --upstream-key-header each client sends its own key, even to the mock.
                upstream_key=config.upstream_key
                or (None if config.upstream_key_header else MOCK_KEY),
                trusted_origins=(*config.trusted_origins, parse_origin(mock_url)),
            )
            mock_server = _QuietServer(
                _uvicorn_config(
                    create_mock_app(),
                    config,
                    log_level=None,
                    # Stopped only once the shim has drained, so nothing needs it any more.
                    timeout_graceful_shutdown=0.1,
                )
            )
        config.check_keys()  # after --mock, whose stand-in key pays for client-keyed calls
        # Imported once the settings passed their checks: a refused start-up answers at
        # once (0.2 s), without loading the app and its clients (another 0.5 s of CPU).
        from shim.app import create_app

        shim_socket = _bind(config.host, config.port, send_timeout=config.send_timeout)
        on_failure.callback(shim_socket.close)
        app = create_app(config)  # a keys file or cache directory it cannot use stops here
        on_failure.pop_all()
    if mock:
        # Only now, so a refused start-up says nothing but why.
        logger.info("mock upstream on %s (no key or network needed)", config.upstream_root)
    listening = listening_line(config, shim_socket.getsockname()[1], mock=mock)
    shim_server = _ShimServer(_uvicorn_config(app, config), app, listening)
    tasks = [asyncio.ensure_future(shim_server.serve(sockets=[shim_socket]))]
    if mock_server is not None and mock_socket is not None:
        quiet = QUIET.set(True)  # the task, and what it starts, inherit the flag
        try:
            tasks.append(asyncio.ensure_future(mock_server.serve(sockets=[mock_socket])))
        finally:
            QUIET.reset(quiet)
    try:
        await tasks[0]
    finally:
        if mock_server is not None:
            mock_server.should_exit = True
        await asyncio.gather(*tasks[1:], return_exceptions=True)


def run(config: Config, *, mock: bool = False, mock_port: int = 0) -> None:
    """Blocking entry point, like ``uvicorn.run``; uses uvloop where installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, mock=mock, mock_port=mock_port))
    else:
        uvloop.run(serve(config, mock=mock, mock_port=mock_port))
