"""The server's settings and its start-up line (which names the shim's own address,
not the embedded mock's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai._constants
import pytest

from mockserver import BackgroundServer
from shim import _http_guard, create_app
from shim._http_guard import MAX_HEADER_BYTES, guarded
from shim.config import Config
from shim.server import _bind, _raise_open_file_limit, _uvicorn_config, listening_line
from shim.testing import ShimServer

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def test_idle_connections_outlive_the_sdks_pool() -> None:
    # The Python SDK keeps an idle connection 5 s. Were the shim to close its end at the
    # same moment, a request sent on it that instant would fail (seen under load).
    sdk_keeps = openai._constants.DEFAULT_CONNECTION_LIMITS.keepalive_expiry
    assert sdk_keeps is not None
    assert _uvicorn_config(object(), Config()).timeout_keep_alive > sdk_keeps + 1
    assert httpx.Limits().keepalive_expiry == sdk_keeps


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    tts_shim_factory: Callable[..., ShimServer],
) -> None:
    shim = tts_shim_factory(keep_alive_timeout=0.2)
    port = int(shim.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert conn.recv(65536) == b""  # the shim closed the idle connection
        assert 0.1 < time.monotonic() - started < 4


def test_connections_accepted_by_the_shim_carry_the_send_timeout() -> None:
    # So the kernel drops a connection whose client takes nothing, even when what was
    # sent to it already sits in the socket buffers (contract_tests/reliability).
    with (
        _bind("127.0.0.1", 0, send_timeout=1.5) as listener,
        socket.create_connection(listener.getsockname()),
        listener.accept()[0] as accepted,
    ):
        timeout = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)

    assert timeout == 1500


def test_the_line_names_the_address_and_the_upstream() -> None:
    line = listening_line(Config(port=8000), 8000)

    assert line == "tts-shim listening on http://127.0.0.1:8000 (upstream: https://api.aimlapi.com)"


def test_the_bound_port_is_named_and_the_mock_is_called_so() -> None:
    config = Config(port=0, upstream_url="http://127.0.0.1:8100/v1")

    line = listening_line(config, 43123, mock=True)

    assert line == (
        "tts-shim listening on http://127.0.0.1:43123 "
        "(upstream: http://127.0.0.1:8100, the embedded mock)"
    )


def test_an_ipv6_address_is_bracketed() -> None:
    assert listening_line(Config(host="::1"), 9000).startswith(
        "tts-shim listening on http://[::1]:9000 "
    )


# -- the guard on the request head (shim._http_guard) --------------------------------


async def _read_then_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a uvicorn whose httptools protocol lacks a hook the guard uses."""
    monkeypatch.setattr(_http_guard, "uvicorn_has_hooks", lambda: False)
    monkeypatch.setattr(_http_guard, "_fallback_warned", False)


def _guarded_server(app: Any, head_timeout: float = 10.0, **options: Any) -> BackgroundServer:
    served, guard = guarded(app, head_timeout=head_timeout)
    return BackgroundServer(served, **guard, **options)


@pytest.fixture(params=["hooks", "fallback"])
def capped(request: pytest.FixtureRequest) -> Iterator[int]:
    """A server guarded as ``tts-shim serve`` guards it, both ways."""
    if request.param == "fallback":
        request.getfixturevalue("fallback")
    with _guarded_server(_read_then_ok, lifespan="off") as server:
        yield server.port


def _exchange(port: int, pieces: list[bytes]) -> list[bytes]:
    """Send ``pieces``, one write each (the last request should say ``connection:
    close``); the status lines of the replies, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            for piece in pieces:
                conn.sendall(piece)
                time.sleep(0.001)  # each its own read on the server, as far as that goes
        except OSError:
            pass  # the server closed it: its answer is what counts
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                data += chunk
    return [part.split(b"\r\n", 1)[0] for part in data.split(b"HTTP/1.1 ")[1:]]


def test_the_hooks_are_there_on_the_uvicorn_the_suite_runs() -> None:
    # Were this false, every "hooks" case below would test the fallback twice.
    assert _http_guard.uvicorn_has_hooks()
    assert guarded(_read_then_ok, head_timeout=1.0)[1]["http"] is not None


def test_a_head_under_the_cap_arriving_in_many_reads_is_served(capped: int) -> None:
    pad = b"x-pad: " + b"a" * (MAX_HEADER_BYTES - 2048) + b"\r\n"
    head = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n" + pad + b"\r\n"
    pieces = [head[i : i + 1024] for i in range(0, len(head), 1024)]

    assert _exchange(capped, pieces) == [b"200 OK"]


def test_a_head_over_the_cap_is_refused_before_it_ends(capped: int) -> None:
    head = b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: "
    pieces = [head] + [b"a" * 1024] * (2 * MAX_HEADER_BYTES // 1024)  # never terminated

    assert _exchange(capped, pieces) == [b"400 Bad Request"]


def test_a_head_over_the_cap_in_one_write_is_refused(capped: int) -> None:
    # Before, the read in which a head began was not counted: 119 KB at once got a 200.
    pad = b"x-pad: " + b"a" * (119 * 1000) + b"\r\n"
    head = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n" + pad + b"\r\n"

    assert _exchange(capped, [head])[0] in (
        b"400 Bad Request",
        b"431 Request Header Fields Too Large",
    )


def test_an_unfinished_head_over_the_cap_in_one_write_is_refused(capped: int) -> None:
    head = b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * (2 * MAX_HEADER_BYTES)

    assert _exchange(capped, [head]) == [b"400 Bad Request"]


def test_bodies_are_not_heads_and_pipelined_requests_are_served(capped: int) -> None:
    body = b"b" * (4 * MAX_HEADER_BYTES)
    first = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    second = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    # The second request's head arrives in the same write as the end of the first body.
    assert _exchange(capped, [first + second]) == [b"200 OK", b"200 OK"]


def test_a_head_begun_after_a_body_in_the_same_read_is_counted_without_it() -> None:
    body = b"b" * (4 * MAX_HEADER_BYTES)
    first = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    second = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-pad: "
    rest = b"a" * 1024 + b"\r\n\r\n"
    with _guarded_server(_read_then_ok, lifespan="off") as server:
        # The body's end and the start of the next head in one write, the head's end later.
        assert _exchange(server.port, [first + second, rest]) == [b"200 OK", b"200 OK"]


def test_the_fallback_is_h11_with_its_cap_and_one_warning(
    fallback: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tts_shim"):
        first = guarded(_read_then_ok, head_timeout=1.0)
        guarded(_read_then_ok, head_timeout=1.0)

    assert first[1] == {"http": "h11", "h11_max_incomplete_event_size": MAX_HEADER_BYTES}
    warnings = [r.getMessage() for r in caplog.records if r.name == "tts_shim"]
    assert len(warnings) == 1
    assert "h11" in warnings[0]
    assert "--head-timeout" in warnings[0]


def test_the_fallback_refuses_a_whole_head_over_the_cap_with_an_envelope(fallback: None) -> None:
    config = Config(cache=False)
    pad = "a" * (MAX_HEADER_BYTES + 1024)
    with _guarded_server(create_app(config)) as server:
        response = httpx.get(server.url + "/healthz", headers={"x-pad": pad})
        served = httpx.get(server.url + "/healthz", headers={"x-pad": "a" * 1024})

    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_header_fields_too_large"
    assert served.status_code == 200


# -- the time limit on receiving a request head --------------------------------------
# A short limit, and sockets that wait far longer than it: what is asserted is whether
# the server closed the connection, not when.

HEAD_TIMEOUT = 0.3


@pytest.fixture
def timed() -> Iterator[int]:
    with _guarded_server(_read_then_ok, head_timeout=HEAD_TIMEOUT, lifespan="off") as server:
        yield server.port


def _closed(conn: socket.socket, trickle: bytes = b"") -> bool:
    """Whether the server closes ``conn`` within 10 s while ``trickle`` is sent a byte
    every 0.05 s (a slow client still making progress)."""
    deadline = time.monotonic() + 10
    conn.settimeout(0.05)
    sent = 0
    while time.monotonic() < deadline:
        try:
            if not conn.recv(65536):
                return True
        except TimeoutError:
            pass
        except ConnectionResetError:
            return True
        if sent < len(trickle):
            try:
                conn.sendall(trickle[sent : sent + 1])
            except OSError:
                return True
            sent += 1
    return False


def _get(conn: socket.socket) -> bytes:
    """One whole request on ``conn``, kept alive; the status line of the reply."""
    conn.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.settimeout(10)
    data = b""
    while not data.endswith(b"0\r\n\r\n"):  # the chunked body's end
        chunk = conn.recv(65536)
        assert chunk, data
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_a_connection_that_sends_nothing_is_closed(timed: int) -> None:
    with socket.create_connection(("127.0.0.1", timed)) as conn:
        assert _closed(conn)


def test_a_head_trickling_in_is_closed_however_it_progresses(timed: int) -> None:
    with socket.create_connection(("127.0.0.1", timed)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n")
        assert _closed(conn, trickle=b"x-slow: " + b"a" * 1000)


def test_a_half_sent_head_after_a_response_is_closed(timed: int) -> None:
    with socket.create_connection(("127.0.0.1", timed)) as conn:
        assert _get(conn) == b"HTTP/1.1 200 OK"
        conn.sendall(b"GET / HTTP/1.1\r\n")
        assert _closed(conn, trickle=b"x-slow: " + b"a" * 1000)


def test_line_ends_alone_after_an_idle_spell_do_not_hold_a_connection(timed: int) -> None:
    # Blank lines before a request line are skipped by the parser (no head begins), but
    # they stop the keep-alive timer.
    with socket.create_connection(("127.0.0.1", timed)) as conn:
        assert _get(conn) == b"HTTP/1.1 200 OK"
        time.sleep(3 * HEAD_TIMEOUT)
        conn.sendall(b"\r\n")
        assert _closed(conn)


def test_an_idle_kept_alive_connection_outlives_the_head_timeout(timed: int) -> None:
    # Idle after a response, it is the keep-alive timeout's (30 s here) to close; a head
    # begun later gets its own time.
    with socket.create_connection(("127.0.0.1", timed)) as conn:
        assert _get(conn) == b"HTTP/1.1 200 OK"
        time.sleep(3 * HEAD_TIMEOUT)
        assert _get(conn) == b"HTTP/1.1 200 OK"
        time.sleep(3 * HEAD_TIMEOUT)
        conn.sendall(b"GET / HTTP/1.1\r\n")
        assert _closed(conn)


def test_a_long_request_is_not_cut_by_the_head_timeout() -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(4 * HEAD_TIMEOUT)
        await _read_then_ok(scope, receive, send)

    with (
        _guarded_server(slow, head_timeout=HEAD_TIMEOUT, lifespan="off") as server,
        socket.create_connection(("127.0.0.1", server.port)) as conn,
    ):
        assert _get(conn) == b"HTTP/1.1 200 OK"


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(hard, 512)
    if lowered == hard:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        _raise_open_file_limit()
        raised = resource.getrlimit(resource.RLIMIT_NOFILE)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert raised == (hard, hard)


# -- Host: two headers, or a foreign host in the request line (real sockets) -----------


@pytest.fixture(params=[(), ("*",)], ids=["host-check", "no-host-check"])
def shim_port(request: pytest.FixtureRequest) -> Iterator[tuple[int, bool]]:
    """A shim app served as ``tts-shim serve`` serves it (this protocol), on loopback;
    its port and whether it checks ``Host``."""
    config = Config(cache=False, allowed_hosts=request.param)
    with _guarded_server(create_app(config)) as server:
        yield server.port, config.host_check


def _ask(port: int, head: str) -> tuple[int, dict[str, Any]]:
    """Send one request head (``{port}`` filled in) on a fresh connection; the status
    and the JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.format(port=port).encode() + b"connection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    return int(head_part.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize(
    "hosts",
    [
        "host: evil.test\r\nhost: 127.0.0.1:{port}\r\n",  # foreign first, ours last
        "host: 127.0.0.1:{port}\r\nhost: evil.test\r\n",
        "host: 127.0.0.1:{port}\r\nhost: 127.0.0.1:{port}\r\n",
    ],
    ids=["foreign-first", "ours-first", "ours-twice"],
)
def test_two_host_headers_are_a_400_envelope(shim_port: tuple[int, bool], hosts: str) -> None:
    port, _ = shim_port

    status, body = _ask(port, "GET /v1/models HTTP/1.1\r\n" + hosts)

    assert status == 400
    assert body["error"]["code"] == "duplicate_host"
    assert body["error"]["type"] == "invalid_request_error"


def test_a_foreign_host_in_the_request_line_is_a_400_when_hosts_are_checked(
    shim_port: tuple[int, bool],
) -> None:
    port, checked = shim_port

    status, body = _ask(
        port, "GET http://evil.test/v1/models HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
    )

    if checked:
        assert status == 400
        assert body["error"]["code"] == "host_not_allowed"
        assert "evil.test" in body["error"]["message"]
    else:
        assert status == 200
        assert body["object"] == "list"


def test_the_shim_named_in_the_request_line_is_served(shim_port: tuple[int, bool]) -> None:
    port, _ = shim_port

    status, body = _ask(
        port, "GET http://127.0.0.1:{port}/v1/models HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
    )

    assert status == 200
    assert body["object"] == "list"


_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("package", ["uvicorn", "starlette", "httpx", "anyio"])
def test_the_servers_have_a_floor_no_ceiling_and_tox_runs_the_floor(package: str) -> None:
    pyproject = tomllib.loads((_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (spec,) = [d for d in pyproject["project"]["dependencies"] if re.match(f"{package}[>=<]", d)]
    match = re.fullmatch(rf"{package}>=([0-9.]+)", spec)
    assert match, spec  # a lower bound and nothing else
    oldest = match.group(1)
    pinned = f"{package}=={oldest}" + ".0" * (2 - oldest.count("."))
    tox = (_ROOT / "tox.ini").read_text(encoding="utf-8")
    assert pinned in tox.split("[testenv:oldest-servers]")[1].split("[testenv:")[0]
    assert "[testenv:newest-servers]" in tox
