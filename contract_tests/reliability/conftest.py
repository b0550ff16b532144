"""Helpers for the reliability tests: real sockets on loopback only.

* :func:`call` sends one request and reads the whole answer, telling a complete
  response from one whose transfer was cut.
* :class:`RawServer` is a scripted TCP peer, for upstream faults the mock (an ASGI
  app) cannot produce: a reply that is not HTTP, a body that stalls half-way.
* :class:`ServeProcess` runs ``tts-shim serve`` as a real process, for signals,
  start-up checks and the log it writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from shim.testing import MockUpstream, free_port

CLIENT_TOKEN = "sk-reliability-client-0001"
AUTH = {"authorization": f"Bearer {CLIENT_TOKEN}"}
SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Reliability."}
#: Timeouts short enough for tests, and a deadline every failure must beat.
FAST: dict[str, Any] = {
    "tts_retries": 1,
    "audio_retries": 2,
    "max_retry_wait": 0.05,
    "connect_timeout": 1.0,
    "generation_timeout": 0.5,
    "download_timeout": 0.5,
    "deadline": 2.0,
}
#: Slack on top of a deadline for scheduling on a loaded 2-core machine.
MARGIN = 1.0


@dataclass
class Outcome:
    status: int
    headers: httpx.Headers
    body: bytes
    #: False when the transfer was cut (an aborted chunked response).
    complete: bool
    elapsed: float
    error: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def envelope(self) -> dict[str, Any]:
        data = self.json()
        assert list(data) == ["error"], data
        error: dict[str, Any] = data["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        return error

    def events(self) -> list[Any]:
        """SSE ``data:`` payloads, decoded (``[DONE]`` kept as a string)."""
        out: list[Any] = []
        for line in self.body.decode().splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
        return out


def call(
    url: str,
    method: str = "POST",
    path: str = "/v1/audio/speech",
    *,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> Outcome:
    """One request on a fresh connection; the body read to its end or its cut."""
    started = time.monotonic()
    with (
        httpx.Client(timeout=timeout, verify=LOOPBACK_TLS) as client,
        client.stream(
            method, url + path, json=json_body, headers=AUTH if headers is None else headers
        ) as response,
    ):
        parts: list[bytes] = []
        complete, error = True, None
        try:
            for chunk in response.iter_raw():
                parts.append(chunk)
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            complete, error = False, repr(exc)
        return Outcome(
            response.status_code,
            response.headers,
            b"".join(parts),
            complete,
            time.monotonic() - started,
            error,
        )


def routes(mock: MockUpstream, route: str) -> list[dict[str, Any]]:
    """The mock's journal entries for ``route`` (``tts`` or ``audio``)."""
    return [entry for entry in mock.journal if entry["route"] == route]


# -- a scripted TCP peer ----------------------------------------------------------


Script = Callable[[socket.socket, int], None]


class RawServer:
    """Accepts connections on loopback and runs ``script(conn, n)`` for the n-th."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            thread = threading.Thread(
                target=self._serve, args=(conn, self.connections), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, number: int) -> None:
        with conn, contextlib.suppress(OSError):
            read_head(conn)
            self.script(conn, number)

    def stall(self, seconds: float) -> None:
        """Sleep in a script, but no longer than until :meth:`close`."""
        self._stop.wait(seconds)

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(2)
        for thread in self._threads:
            thread.join(2)
        self.sock.close()


def settle(state: Any, timeout: float = 5.0) -> None:
    """Wait, at most ``timeout`` seconds, until the shim (``app.state.shim``) has closed
    every upstream stream, freed every slot and finished its background work.

    The shim does that in its own thread just after the client read the last byte, so
    its counters read at once can be one step behind; a leak never settles, and the
    caller's assertions that they are 0 still fail.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        streams, slots = state.upstream.stats.open_streams, state.capacity.in_flight
        if streams == 0 and slots == 0 and len(state.background) == 0:
            return
        time.sleep(0.01)


def read_head(conn: socket.socket) -> bytes:
    """Read from ``conn`` until the end of an HTTP head (or EOF), within 5 s."""
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def reset(conn: socket.socket) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), not a clean FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


@pytest.fixture
def raw_server() -> Iterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    def start(script: Script) -> RawServer:
        server = RawServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# -- ``tts-shim serve`` as a process ----------------------------------------------


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """The log's JSON lines so far; a last line still being written is left out."""
        complete = self.log.split("\n")[:-1]
        return [json.loads(line) for line in complete if line.startswith("{")]

    def mock_url(self) -> str:
        """The embedded mock's root, from the start-up log line (``--mock`` only)."""
        for line in self.log_lines():
            message = line.get("message", "")
            if message.startswith("mock upstream on "):
                return str(message.split()[3])
        raise AssertionError(f"no mock URL in the log:\n{self.log}")

    def scenario(self, steps: list[dict[str, Any]]) -> None:
        url = self.mock_url() + "/__mock__/scenario"
        response = httpx.post(url, json={"steps": steps}, verify=LOOPBACK_TLS)
        response.raise_for_status()

    def mock_journal(self) -> list[dict[str, Any]]:
        url = self.mock_url() + "/__mock__/requests"
        entries: list[dict[str, Any]] = httpx.get(url, verify=LOOPBACK_TLS).json()["requests"]
        return entries

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIMLAPI_", "TTS_SHIM_"))}
    env.update(extra)
    return env


@pytest.fixture
def serve_process() -> Iterator[Callable[..., ServeProcess]]:
    """``serve_process(*args, env={...}, wait=True)`` starts ``tts-shim serve ARGS``."""
    started: list[ServeProcess] = []
    tmp = tempfile.TemporaryDirectory()

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> ServeProcess:
        port = free_port()
        log_path = Path(tmp.name) / f"serve-{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shim", "serve", "--port", str(port), *args],
                # Each process its own empty cache: nothing leaks between tests (unless a
                # test's env says otherwise).
                env=clean_env(
                    **{"TTS_SHIM_CACHE_DIR": str(Path(tmp.name, "cache")), **(env or {})}
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        served = ServeProcess(proc, port, log_path)
        started.append(served)
        if wait:
            deadline = time.monotonic() + 20
            # Ready once it says so: the socket is bound (and accepts) before the app
            # and its mock are up, so a connection alone would be too early.
            while "tts-shim listening on " not in served.log:
                if proc.poll() is not None:
                    raise AssertionError(f"serve exited with {proc.returncode}:\n{served.log}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"nothing listened on {port}:\n{served.log}")
                time.sleep(0.05)
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
        served.proc.wait(10)
    tmp.cleanup()
