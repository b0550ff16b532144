"""The server's settings and its start-up line (which names the shim's own address,
not the embedded mock's)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai._constants
import pytest

from mockserver import BackgroundServer
from shim import create_app
from shim.config import Config
from shim.server import (
    MAX_HEADER_BYTES,
    HeadCappedHttpTools,
    _bind,
    _uvicorn_config,
    listening_line,
)
from shim.testing import ShimServer


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


# -- the cap on the request head (HeadCappedHttpTools) -------------------------------


async def _read_then_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def capped() -> Iterator[int]:
    with BackgroundServer(_read_then_ok, http=HeadCappedHttpTools, lifespan="off") as server:
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
        while chunk := conn.recv(65536):
            data += chunk
    return [part.split(b"\r\n", 1)[0] for part in data.split(b"HTTP/1.1 ")[1:]]


def test_a_head_under_the_cap_arriving_in_many_reads_is_served(capped: int) -> None:
    pad = b"x-pad: " + b"a" * (MAX_HEADER_BYTES - 2048) + b"\r\n"
    head = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n" + pad + b"\r\n"
    pieces = [head[i : i + 1024] for i in range(0, len(head), 1024)]

    assert _exchange(capped, pieces) == [b"200 OK"]


def test_a_head_over_the_cap_is_refused_before_it_ends(capped: int) -> None:
    head = b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: "
    pieces = [head] + [b"a" * 1024] * (2 * MAX_HEADER_BYTES // 1024)  # never terminated

    assert _exchange(capped, pieces) == [b"400 Bad Request"]


def test_bodies_are_not_heads_and_pipelined_requests_are_served(capped: int) -> None:
    body = b"b" * (4 * MAX_HEADER_BYTES)
    first = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    second = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    # The second request's head arrives in the same write as the end of the first body.
    assert _exchange(capped, [first + second]) == [b"200 OK", b"200 OK"]


# -- Host: two headers, or a foreign host in the request line (real sockets) -----------


@pytest.fixture(params=[(), ("*",)], ids=["host-check", "no-host-check"])
def shim_port(request: pytest.FixtureRequest) -> Iterator[tuple[int, bool]]:
    """A shim app served as ``tts-shim serve`` serves it (this protocol), on loopback;
    its port and whether it checks ``Host``."""
    config = Config(cache=False, allowed_hosts=request.param)
    with BackgroundServer(create_app(config), http=HeadCappedHttpTools) as server:
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
