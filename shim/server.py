"""Running the shim under uvicorn, alone or with the bundled mock upstream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from shim._http_guard import guarded
from shim.config import Config, StartupError, parse_origin
from shim.logs import QUIET
from shim.logs import configure as configure_logging

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp

__all__ = ["drop_stalled_connections", "listening_line", "run", "serve"]

logger = logging.getLogger("tts_shim")

_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: uvicorn's own tick; start-up is watched ten times as often.
_TICK = 0.1

#: The key ``--mock`` sends upstream when none is set; the mock accepts any.
MOCK_KEY = "mock-key"


class _Exit:
    """SIGINT/SIGTERM for the shim, through uvicorn's public ``should_exit`` and
    ``force_exit``: uvicorn's own handlers would re-raise the signal once it has shut
    down, so the process dies by it; a sidecar that drained cleanly should exit 0.

    On the first signal, with ``--shutdown-delay``, the shim goes on serving for that
    long while ``/readyz`` answers 503 (a second Ctrl-C ends the pause). Then it is
    marked draining (new speech work is refused) and uvicorn is told to exit: it stops
    accepting, closes idle connections, and gives in-flight responses
    ``--graceful-timeout`` seconds before cutting them (a second Ctrl-C cuts at once).
    Only the main thread gets signals; elsewhere this does nothing.
    """

    def __init__(self, server: uvicorn.Server, app: Starlette) -> None:
        self.server = server
        self.app = app
        self._loop = asyncio.get_running_loop()
        self._leaving: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()
        self._previous: dict[int, object] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Own the exit signals for the block; what held them before gets them back.

        Installed before ``serve()`` too, so that a signal uvicorn caught during
        start-up, which it raises again once stopped, lands here and is not fatal.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._previous = {sig: signal.getsignal(sig) for sig in _EXIT_SIGNALS}
        self.take_over()
        try:
            yield
        finally:
            for sig, handler in self._previous.items():
                if handler is not None:  # None: not set from Python, nothing to put back
                    signal.signal(sig, handler)  # type: ignore[arg-type]

    def take_over(self) -> None:
        """(Re)install the handlers: uvicorn's ``serve()`` puts its own in first."""
        if self._previous:
            for sig in _EXIT_SIGNALS:
                signal.signal(sig, self._handle)

    def _handle(self, sig: int, frame: object) -> None:
        # A signal handler runs between any two bytecodes, loop internals included:
        # hand the work to the loop, which may already be closed.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        if self._leaving is None and self.server.started and not self.server.should_exit:
            self._leaving = self._loop.create_task(self._leave())
        elif self._leaving is not None and sig == signal.SIGINT:
            self._hurry.set()  # ends the --shutdown-delay pause, and
            self.server.force_exit = True  # uvicorn's wait for open connections
        else:  # starting, or stopping already: nothing to drain
            self.server.should_exit = True

    async def _leave(self) -> None:
        state = self.app.state.shim  # built by the lifespan, which has run
        delay = state.config.shutdown_delay
        if delay > 0:
            state.capacity.start_leaving()
            logger.info("shutting down in %g s: /readyz answers 503, requests are served", delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), delay)
        state.capacity.start_draining()
        logger.info(
            "draining: %d request(s) in flight, up to %g s to finish",
            state.capacity.in_flight,
            state.config.graceful_timeout,
        )
        self.server.should_exit = True


async def _until_started(server: uvicorn.Server, serving: asyncio.Future[None]) -> bool:
    """Wait for ``server.started`` (uvicorn sets it once it answers on its sockets);
    ``False`` if ``serving`` ended first (a start-up that failed)."""
    while not server.started:
        if serving.done():
            return False
        await asyncio.sleep(_TICK / 10)
    return True


def _raise_open_file_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit.

    Every client connection is a descriptor, and a soft limit of 1,024 (a common
    default) lets a thousand connections that send nothing take every one, ``/healthz``
    included, until their head timeout closes them. Harmless where the limit cannot
    move (no ``resource`` module on Windows; a hard limit the system will not grant).
    """
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        logger.debug("open-file limit left at %d (hard limit %d: %s)", soft, hard, exc)
        return
    logger.debug("open-file limit raised from %d to %d", soft, hard)


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


def _uvicorn_config(app: ASGIApp, config: Config, **overrides: object) -> uvicorn.Config:
    # The request-head cap and time limit: uvicorn's protocol, reached only there.
    app, guard = guarded(app, head_timeout=config.head_timeout)
    options: dict[str, object] = {
        "log_level": config.log_level,
        "log_config": None,  # serve() applies shim.logs.log_config, for uvicorn's too
        "access_log": False,  # shim.logs writes the access log, without query strings
        "timeout_graceful_shutdown": config.graceful_timeout,
        "timeout_keep_alive": config.keep_alive_timeout,
        "server_header": False,
        **guard,
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
    _raise_open_file_limit()
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
            mock_server = uvicorn.Server(
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
    shim_server = uvicorn.Server(_uvicorn_config(app, config))
    exit_signals = _Exit(shim_server, app)
    with exit_signals.installed():
        tasks: list[asyncio.Future[None]] = []
        if mock_server is not None and mock_socket is not None:
            # Started first, so that uvicorn's signal handlers nest: the shim's, put in
            # last, are taken out first.
            quiet = QUIET.set(True)  # the task, and what it starts, inherit the flag
            try:
                tasks.append(asyncio.ensure_future(mock_server.serve(sockets=[mock_socket])))
            finally:
                QUIET.reset(quiet)
        serving = asyncio.ensure_future(shim_server.serve(sockets=[shim_socket]))
        try:
            if await _until_started(shim_server, serving):
                # Only now: requests are answered, so whoever waits for this line may
                # use the shim (or stop it) at once.
                exit_signals.take_over()
                logger.info(listening)
            await serving
        finally:
            if mock_server is not None:
                mock_server.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)


def run(config: Config, *, mock: bool = False, mock_port: int = 0) -> None:
    """Blocking entry point, like ``uvicorn.run``; uses uvloop where installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, mock=mock, mock_port=mock_port))
    else:
        uvloop.run(serve(config, mock=mock, mock_port=mock_port))
