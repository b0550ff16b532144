"""The native upstream client (shim/wire.py) against scripted servers on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from shim import wire
from shim.wire import WireClient, raw_body

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return head, body


class Server:
    """A scripted HTTP server: ``handler`` gets each connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Server:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


def keep_alive(reply: bytes, server_box: list[Server]) -> Handler:
    """Answer every request on the connection with ``reply``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            server_box[0].requests.append(head + body)
            writer.write(reply)
            await writer.drain()

    return handle


@pytest.fixture
async def client() -> AsyncIterator[WireClient]:
    c = WireClient(connect_timeout=2, read_timeout=2, headers={"user-agent": "tts-shim"})
    yield c
    await c.aclose()


async def body_of(response: httpx.Response) -> bytes:
    chunks = raw_body(response)
    assert chunks is not None
    return b"".join([chunk async for chunk in chunks])


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def test_requests_share_one_keep_alive_connection(client: WireClient) -> None:
    box: list[Server] = []
    async with Server(keep_alive(OK, box)) as server:
        box.append(server)
        for _ in range(3):
            response = await client.request(
                "POST", server.url + "/v1/tts", {"authorization": "Bearer k"}, b'{"a":1}'
            )
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert await body_of(response) == b"{}"
        assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/tts HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in first
    assert b"\r\nuser-agent: tts-shim\r\n" in first
    assert b"\r\nauthorization: Bearer k\r\n" in first
    assert first.endswith(b'content-length: 7\r\n\r\n{"a":1}')


async def test_chunked_body_arrives_whole_and_httpx_api_works(client: WireClient) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    box: list[Server] = []
    async with Server(keep_alive(reply, box)) as server:
        box.append(server)
        response = await client.request("GET", server.url + "/a?b=c d")
        assert b"".join([c async for c in response.aiter_bytes()]) == b"hello world"
        await response.aclose()
    assert server.requests[0].startswith(b"GET /a?b=c%20d HTTP/1.1\r\n")


async def test_body_delimited_by_the_end_of_the_connection(client: WireClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\n\r\nRIFF")
        await writer.drain()
        writer.write(b"....WAVE")

    async with Server(handle) as server:
        response = await client.request("GET", server.url + "/clip.wav")
        assert await body_of(response) == b"RIFF....WAVE"


async def test_a_short_body_is_an_error_not_a_short_file(client: WireClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")

    async with Server(handle) as server:
        response = await client.request("GET", server.url + "/clip")
        with pytest.raises(httpx.RemoteProtocolError):
            await body_of(response)
        await response.aclose()


async def test_no_reply_at_all_is_a_protocol_error(client: WireClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with Server(handle) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.request("POST", server.url + "/v1/tts", None, b"{}")


async def test_garbage_is_a_protocol_error(client: WireClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"<html>not http</html>\r\n\r\n")
        await asyncio.sleep(1)

    async with Server(handle) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="invalid HTTP reply"):
            await client.request("GET", server.url + "/")


async def test_connection_refused_is_a_connect_error(client: WireClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await client.request("GET", f"http://127.0.0.1:{port}/")


async def test_silence_is_a_read_timeout() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await asyncio.sleep(5)

    c = WireClient(connect_timeout=1, read_timeout=0.2)
    async with Server(handle) as server:
        response = await c.request("GET", server.url + "/")
        with pytest.raises(httpx.ReadTimeout):
            await body_of(response)
        await response.aclose()
    await c.aclose()


async def test_a_pooled_connection_the_server_dropped_is_replaced_for_a_get(
    client: WireClient,
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        # Keep-alive was promised, but the connection goes before the next request.

    async with Server(handle) as server:
        for _ in range(2):
            response = await client.request("GET", server.url + "/")
            assert await body_of(response) == b"{}"
            await asyncio.sleep(0.05)
        assert server.connections == 2


async def test_header_values_cannot_smuggle_lines(client: WireClient) -> None:
    with pytest.raises(httpx.LocalProtocolError):
        await client.request("POST", "http://127.0.0.1:1/", {"authorization": "Bearer a\r\nx: y"})


async def test_unread_body_closes_the_connection_instead_of_pooling_it(
    client: WireClient,
) -> None:
    big = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 1_000_000
    box: list[Server] = []
    async with Server(keep_alive(big, box)) as server:
        box.append(server)
        response = await client.request("GET", server.url + "/")
        await response.aclose()
        response = await client.request("GET", server.url + "/")
        assert len(await body_of(response)) == 1_000_000
        assert server.connections == 2


async def test_a_slow_consumer_pauses_the_socket(client: WireClient) -> None:
    size = 8 * 1024 * 1024
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size
    box: list[Server] = []
    async with Server(keep_alive(reply, box)) as server:
        box.append(server)
        response = await client.request("GET", server.url + "/")
        chunks = raw_body(response)
        assert chunks is not None
        most = received = 0
        async for chunk in chunks:
            received += len(chunk)
            most = max(most, len(chunk))
            await asyncio.sleep(0.001)
        assert received == size
        # Buffered body never grows far past the high-water mark.
        assert most <= 2 * wire._HIGH_WATER
