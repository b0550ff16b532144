"""Run any ASGI app on a real socket, under uvicorn, in a background thread.

For tests that need real connections (dropped connections, slow bodies, a
client in another process)::

    with BackgroundServer(create_app()) as server:
        httpx.post(server.url + "/v1/tts", ...)
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """An ASGI app served by uvicorn on ``host:port`` from a daemon thread.

    ``port=0`` (the default) picks a free port; :attr:`url` says which. Use it as
    a context manager, or call :meth:`start` and :meth:`stop`. Extra keyword
    arguments go to :class:`uvicorn.Config` (``http="h11"``, say).

    uvicorn's own logging setup is skipped (``log_config=None``) so the host
    process's logging is left alone; uvicorn's records reach the root logger
    (and pytest's ``caplog``).
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
        graceful_timeout: float = 1.0,
        **uvicorn_options: Any,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self._options: dict[str, Any] = {
            "log_level": log_level,
            "log_config": None,
            "lifespan": "auto",
            "timeout_graceful_shutdown": graceful_timeout,
            **uvicorn_options,
        }
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> BackgroundServer:
        """Bind, start serving, and return once the server accepts connections."""
        if self._server is not None:
            raise RuntimeError("the server is already running")
        # Binding here, not in the thread, makes the port known before we return
        # and turns "address in use" into an exception in the caller's thread.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(self.app, host=self.host, port=self.port, **self._options)
        )
        self._server = server
        self._error = None

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # SystemExit from a failed startup included
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            time.sleep(0.005)
            if not self._thread.is_alive():
                self._server = self._thread = None
                raise RuntimeError(f"the server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start in time")
        return self

    def stop(self) -> None:
        """Stop serving; connections still open get ``graceful_timeout`` seconds to finish.

        Through uvicorn's public ``should_exit``, which its main loop reads every 0.1 s,
        so an idle server takes about 0.2 s to stop (its shutdown waits 0.1 s too).
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True  # uvicorn looks at it every 0.1 s
        thread.join(self.shutdown_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self.shutdown_timeout)
        self._server = None
        self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
