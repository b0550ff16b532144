"""Bodies on a real socket: over the cap is a 413 long before the body would have
ended, and a client speaking broken HTTP does not hurt the next one."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Callable

import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import AUTH, CLIENT_TOKEN, read_head
from shim.testing import ShimServer
from tests.figures import record

CAP = 64 * 1024
PROMISED = 256 * 1024 * 1024  # what the client claims it will send


def _connect(shim: ShimServer) -> socket.socket:
    port = int(shim.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(shim: ShimServer, framing: str) -> bytes:
    host = shim.url.split("://", 1)[1]  # the shim answers to its own address only
    return (
        f"POST /v1/audio/speech HTTP/1.1\r\nhost: {host}\r\n"
        f"authorization: Bearer {CLIENT_TOKEN}\r\ncontent-type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()


def _send_until_answered(sock: socket.socket, piece: bytes, limit: int) -> int:
    """Send ``piece`` again and again until the server answers; return bytes sent."""
    sent = 0
    while sent < limit:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sent
        try:
            sock.sendall(piece)
        except OSError:  # the server closed its end after answering
            return sent
        sent += len(piece)
    return sent


def _status(sock: socket.socket) -> int:
    return int(read_head(sock).split(b" ", 2)[1])


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_endless_body_gets_a_413_without_being_read(
    tts_shim_factory: Callable[..., ShimServer], framing: str
) -> None:
    shim = tts_shim_factory(max_body_bytes=CAP)
    piece = b"x" * 16384
    with _connect(shim) as sock:
        if framing == "content-length":
            sock.sendall(_head(shim, f"content-length: {PROMISED}") + b"{")
            sent = _send_until_answered(sock, piece, PROMISED)
        else:
            sock.sendall(_head(shim, "transfer-encoding: chunked"))
            chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            sent = _send_until_answered(sock, chunk, PROMISED)
        status = _status(sock)

    assert status == 413
    # Answered once the cap was passed, not once the promised 256 MB arrived: what was
    # sent is the cap plus what the kernel's socket buffers took meanwhile.
    assert sent < 32 * 1024 * 1024
    assert httpx.get(shim.url + "/healthz", verify=LOOPBACK_TLS).status_code == 200
    record("body_cap", framing=framing, cap=CAP, promised=PROMISED, sent_before_413=sent)


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/audio/speech HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
        b"POST /v1/audio/speech HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
        b"POST /v1/audio/speech HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"GET /v1/models HTTP/1.1\r\nhost: a\r\nauthorization: Bearer \xff\xfe\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
    ],
)
def test_broken_http_is_refused_and_the_server_carries_on(
    tts_shim_factory: Callable[..., ShimServer], raw: bytes
) -> None:
    shim = tts_shim_factory()
    with _connect(shim) as sock:
        sock.sendall(raw)
        sock.settimeout(5)
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""

    assert not answer.startswith(b"HTTP/1.1 5")
    after = httpx.post(
        shim.url + "/v1/audio/speech",
        content=json.dumps({"model": "tts-1", "input": "Still here."}),
        headers=AUTH,
        verify=LOOPBACK_TLS,
    )
    assert after.status_code == 200
