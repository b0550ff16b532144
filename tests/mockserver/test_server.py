"""BackgroundServer, and the faults that only mean something on a real socket."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from mockserver import BackgroundServer, create_app
from mockserver.audio import samples_for

from .conftest import AUTH, body


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest ASGI app: BackgroundServer is not tied to the mock."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_serves_any_asgi_app_on_a_free_port() -> None:
    with BackgroundServer(hello) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        assert server.running
        assert httpx.get(server.url).text == "hello"
    assert not server.running
    assert not port_is_open(server.port)


def test_start_and_stop_explicitly() -> None:
    server = BackgroundServer(hello).start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    finally:
        server.stop()
    server.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


def test_a_taken_port_fails_in_the_callers_thread() -> None:
    with BackgroundServer(hello) as first, pytest.raises(OSError, match="in use"):
        BackgroundServer(hello, port=first.port).start()


def test_a_failing_app_startup_is_reported() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no"})

    with pytest.raises(RuntimeError, match="failed to start"):
        BackgroundServer(broken, lifespan="on").start()


# -- the mock on a socket ----------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[{"http": "h11", "loop": "asyncio"}, {"http": "httptools"}],
    ids=["h11-asyncio", "httptools"],
)
def mock_server(request: pytest.FixtureRequest) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(), **request.param) as server:
        yield server


@pytest.fixture
def mock(mock_server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock_server.url) as client:
        client.post("/__mock__/reset").raise_for_status()
        yield client


@pytest.fixture
def server_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """uvicorn's warnings and errors: a fault must not look like a crash to the server."""
    caplog.set_level(logging.WARNING, logger="uvicorn.error")

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name.startswith("uvicorn")]

    return errors


def queue(client: httpx.Client, *steps: dict[str, Any]) -> None:
    client.post("/__mock__/scenario", json={"steps": list(steps)}).raise_for_status()


def drain(response: httpx.Response, into: bytearray) -> None:
    for chunk in response.iter_raw():
        into += chunk


def audio_url(client: httpx.Client, **overrides: Any) -> str:
    response = client.post("/v1/tts", json=body(**overrides), headers=AUTH)
    url: str = response.json()["audio"]["url"]
    return url


def test_links_point_back_at_the_server(mock: httpx.Client, mock_server: BackgroundServer) -> None:
    url = audio_url(mock)
    assert url.startswith(mock_server.url + "/generations/alloy/")
    response = mock.get(url)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"] == "audio/mpeg"


@pytest.mark.parametrize("route", ["tts", "audio"])
def test_reset_drops_the_connection_without_a_reply(
    mock: httpx.Client, server_errors: Callable[[], list[str]], route: str
) -> None:
    url = audio_url(mock)
    queue(mock, {"route": route, "fault": "reset"})
    if route == "tts":
        request = mock.build_request("POST", "/v1/tts", json=body(), headers=AUTH)
    else:
        request = mock.build_request("GET", url)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        mock.send(request)
    assert mock.get("/__mock__/requests").json()["requests"][-1]["status"] is None
    assert server_errors() == []


def test_reset_sends_not_a_single_byte(mock_server: BackgroundServer) -> None:
    with httpx.Client(base_url=mock_server.url) as client:
        queue(client, {"fault": "reset"})
    payload = json.dumps(body()).encode()
    request = (
        b"POST /v1/tts HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    with socket.create_connection(("127.0.0.1", mock_server.port), timeout=10) as sock:
        sock.sendall(request)
        try:
            received = sock.recv(65536)
        except ConnectionResetError:
            received = b""
    assert received == b""


@pytest.mark.parametrize("route", ["tts", "audio"])
def test_truncated_announces_more_than_it_sends(
    mock: httpx.Client, server_errors: Callable[[], list[str]], route: str
) -> None:
    url = audio_url(mock, response_format="wav")
    queue(mock, {"route": route, "fault": "truncated"})
    if route == "tts":
        request = mock.build_request("POST", "/v1/tts", json=body(), headers=AUTH)
    else:
        request = mock.build_request("GET", url)
    response = mock.send(request, stream=True)
    announced = int(response.headers["content-length"])
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError, match="peer closed connection"):
        drain(response, received)
    response.close()
    assert 0 < len(received) < announced
    # The status was sent; the journal (a follow-up request) saw it.
    last = mock.get("/__mock__/requests").json()["requests"][-1]
    assert last["status"] == (201 if route == "tts" else 200)
    assert server_errors() == []


@pytest.mark.parametrize("fmt", ["mp3", "wav"])
def test_cut_sends_exactly_its_bytes_then_drops_the_connection(
    mock: httpx.Client, server_errors: Callable[[], list[str]], fmt: str
) -> None:
    url = audio_url(mock, response_format=fmt)
    whole = mock.get(url).content
    queue(mock, {"route": "audio", "fault": "cut", "cut_after": 5000})
    received = bytearray()
    with mock.stream("GET", url) as response, pytest.raises(httpx.RemoteProtocolError):
        drain(response, received)
    assert bytes(received) == whole[:5000]  # as it streams: no length announced
    assert "content-length" not in response.headers
    assert server_errors() == []


def test_ranges_are_served_from_the_same_clip(mock: httpx.Client) -> None:
    url = audio_url(mock)
    whole = mock.get(url)
    assert whole.headers["accept-ranges"] == "bytes"
    size = len(whole.content)

    rest = mock.get(url, headers={"range": "bytes=1000-"})
    middle = mock.get(url, headers={"range": "bytes=10-19"})
    past = mock.get(url, headers={"range": f"bytes={size}-"})
    several = mock.get(url, headers={"range": "bytes=0-1,5-6"})  # not served: all of it

    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes 1000-{size - 1}/{size}"
    assert rest.content == whole.content[1000:]
    assert rest.headers["content-type"] == whole.headers["content-type"]
    assert (middle.status_code, middle.content) == (206, whole.content[10:20])
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"
    assert (several.status_code, several.content) == (200, whole.content)


def test_a_cut_range_and_a_range_ignored(mock: httpx.Client) -> None:
    url = audio_url(mock)
    whole = mock.get(url).content
    queue(
        mock,
        {"route": "audio", "fault": "cut", "cut_after": 300},
        {"route": "audio", "ignore_range": True},
    )
    received = bytearray()
    with mock.stream("GET", url, headers={"range": "bytes=100-"}) as response:
        announced = int(response.headers["content-length"])
        with pytest.raises(httpx.RemoteProtocolError):
            drain(response, received)
    ignored = mock.get(url, headers={"range": "bytes=100-"})

    assert (response.status_code, announced) == (206, len(whole) - 100)
    assert bytes(received) == whole[100:400]
    assert ignored.status_code == 200
    assert ignored.content == whole
    assert "accept-ranges" not in ignored.headers


def test_slow_body_arrives_piecewise_and_complete(
    mock: httpx.Client, server_errors: Callable[[], list[str]]
) -> None:
    url = audio_url(mock, response_format="pcm")
    whole = mock.get(url).content
    queue(mock, {"route": "audio", "fault": "slow-body", "delay_ms": 200})
    with mock.stream("GET", url) as response:
        pieces = list(response.iter_raw())
    assert b"".join(pieces) == whole
    assert len(pieces) > 1
    assert server_errors() == []


def test_garbage_on_a_socket(mock: httpx.Client) -> None:
    queue(mock, {"fault": "garbage"})
    response = mock.post("/v1/tts", json=body(), headers=AUTH)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_long_pcm_streams_in_chunks(mock: httpx.Client) -> None:
    ms = 5 * 60 * 1000  # five minutes: 14.4 MB
    with mock.stream("GET", f"/generations/nova/1-2.pcm?duration_ms={ms}") as response:
        assert "content-length" not in response.headers
        sizes = [len(chunk) for chunk in response.iter_raw()]
    assert sum(sizes) == 2 * samples_for(ms)
    assert len(sizes) > 10


def test_client_leaving_mid_stream_leaves_the_server_healthy(
    mock: httpx.Client, server_errors: Callable[[], list[str]]
) -> None:
    ms = 60 * 60 * 1000
    with mock.stream("GET", f"/generations/nova/1-2.wav?duration_ms={ms}") as response:
        first = next(response.iter_raw())
    assert first.startswith(b"RIFF")
    assert mock.post("/v1/tts", json=body(), headers=AUTH).status_code == 201
    assert server_errors() == []
