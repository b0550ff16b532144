"""The server's settings and its start-up line (which names the shim's own address,
not the embedded mock's)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import openai._constants

from shim.config import Config
from shim.server import _uvicorn_config, listening_line
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
