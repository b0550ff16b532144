"""Streaming responses: always closed, and cut when the client takes no data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shim.config import Config
from shim.errors import APIError
from shim.keys import Keys
from shim.middleware import GateMiddleware
from shim.responses import (
    BODY_PIECE,
    AudioResponse,
    SendTimeout,
    StalledClient,
    StreamAborted,
    WholeAudio,
)


class Client:
    """ASGI receive/send for one response; ``stall`` makes every body send hang."""

    def __init__(self, *, stall_after: int | None = None, disconnect: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.stall_after = stall_after
        self.disconnect = disconnect
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.disconnect:
            return {"type": "http.disconnect"}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        bodies = sum(m["type"] == "http.response.body" for m in self.messages)
        if self.stall_after is not None and bodies >= self.stall_after:
            await asyncio.Event().wait()  # a full socket buffer that never drains
        self.messages.append(message)


SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


async def chunks(count: int, closed: list[str]) -> AsyncIterator[bytes]:
    try:
        for _ in range(count):
            yield b"x" * 10
            await asyncio.sleep(0)
    finally:
        closed.append("iterator")


def response(count: int, closed: list[str]) -> AudioResponse:
    async def on_close() -> None:
        closed.append("on_close")

    return AudioResponse(chunks(count, closed), "audio/mpeg", on_close=on_close)


async def test_a_whole_stream_is_sent_and_closed() -> None:
    closed: list[str] = []
    client = Client()

    await response(3, closed)(SCOPE, client.receive, client.send)

    bodies = [m for m in client.messages if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == b"x" * 30
    assert bodies[-1]["more_body"] is False
    assert closed == ["iterator", "on_close"]


async def test_a_client_that_left_closes_the_stream_quietly() -> None:
    closed: list[str] = []
    client = Client(disconnect=True)

    await response(10_000, closed)(SCOPE, client.receive, client.send)

    assert closed == ["iterator", "on_close"]
    assert client.messages[-1].get("more_body", True) is True  # never finished


async def test_an_error_after_the_start_aborts_the_transfer() -> None:
    closed: list[str] = []

    async def failing() -> AsyncIterator[bytes]:
        yield b"x"
        raise APIError(502, "the CDN broke off")

    client = Client()
    audio = AudioResponse(failing(), "audio/mpeg", on_close=lambda: _note(closed))

    with pytest.raises(StreamAborted):
        await audio(SCOPE, client.receive, client.send)
    assert closed == ["on_close"]


async def _note(closed: list[str]) -> None:
    closed.append("on_close")


async def test_a_client_that_takes_no_data_is_cut_and_the_stream_closed() -> None:
    closed: list[str] = []
    client = Client(stall_after=2)
    timed = SendTimeout(client.send, 0.05)

    with pytest.raises(StalledClient):
        await response(100, closed)(SCOPE, client.receive, timed)

    assert closed == ["iterator", "on_close"]
    assert sum(m["type"] == "http.response.body" for m in client.messages) == 2


async def test_a_slow_stream_is_not_cut_while_each_send_is_quick() -> None:
    client = Client()
    timed = SendTimeout(client.send, 0.05)

    for _ in range(3):
        await timed({"type": "http.response.body", "body": b"x", "more_body": True})
        await asyncio.sleep(0.06)  # the upstream is slow, not the client
    await timed({"type": "http.response.body", "body": b"", "more_body": False})

    assert len(client.messages) == 4


async def test_other_cancellations_pass_through() -> None:
    client = Client(stall_after=0)
    timed = SendTimeout(client.send, 10)
    task = asyncio.ensure_future(timed({"type": "http.response.body", "body": b"x"}))
    await asyncio.sleep(0.01)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("more_body", [False, True])
async def test_a_large_body_is_handed_on_in_pieces(more_body: bool) -> None:
    client = Client()
    timed = SendTimeout(client.send, 10)
    body = bytes(range(256)) * (BODY_PIECE // 100)  # 2.56 pieces

    await timed({"type": "http.response.body", "body": body, "more_body": more_body})

    assert [len(m["body"]) for m in client.messages] == [
        BODY_PIECE,
        BODY_PIECE,
        len(body) % BODY_PIECE,
    ]
    assert b"".join(m["body"] for m in client.messages) == body
    assert [m["more_body"] for m in client.messages] == [True, True, more_body]


async def test_a_body_of_one_piece_is_handed_on_as_it_is() -> None:
    client = Client()
    timed = SendTimeout(client.send, 10)
    message = {"type": "http.response.body", "body": b"x" * BODY_PIECE}

    await timed(message)

    assert client.messages == [message]
    assert client.messages[0] is message


async def test_whole_audio_to_a_client_that_takes_no_data_is_cut() -> None:
    # Before: sent as one message, which uvicorn writes to the transport whole and never
    # waits on, so it was held for as long as the client kept the connection.
    client = Client(stall_after=1)
    timed = SendTimeout(client.send, 0.05)
    whole = WholeAudio(b"x" * (3 * BODY_PIECE), "audio/wav", {})

    with pytest.raises(StalledClient):
        await whole(SCOPE, client.receive, timed)

    bodies = [m for m in client.messages if m["type"] == "http.response.body"]
    assert [len(m["body"]) for m in bodies] == [BODY_PIECE]


# -- the client's disconnect, under uvicorn's ASGI 2.3 (Starlette watches receive) ------


def gated(app: Any) -> GateMiddleware:
    return GateMiddleware(app, keys=Keys(Config()))


GATE_SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "method": "POST",
    "path": "/v1/audio/speech",
    "headers": [],
}


async def test_a_client_that_hangs_up_while_upstream_is_silent_ends_the_response() -> None:
    closed: list[str] = []
    upstream_silent = asyncio.Event()

    async def first_then_silence() -> AsyncIterator[bytes]:
        try:
            yield b"x" * 10
            await upstream_silent.wait()  # never set: no more audio is coming
            yield b"never sent"
        finally:
            closed.append("iterator")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await AudioResponse(first_then_silence(), "audio/mpeg", on_close=lambda: _note(closed))(
            scope, receive, send
        )

    client = Client()

    async def send(message: dict[str, Any]) -> None:
        await client.send(message)
        if message.get("body"):
            client.gone.set()  # the client hangs up once it has the first chunk

    async def request() -> int:
        await gated(app)(dict(GATE_SCOPE), client.receive, send)
        await asyncio.sleep(0)  # a stray cancellation would land here
        task = asyncio.current_task()
        return task.cancelling() if hasattr(task, "cancelling") else 0  # type: ignore[union-attr]

    task = asyncio.ensure_future(request())
    done, _ = await asyncio.wait({task}, timeout=5)  # not wait_for: it would cancel it
    if not done:
        task.cancel()
    assert done, "the response went on waiting for audio after the client left"
    cancelling = task.result()

    assert closed == ["iterator", "on_close"]
    assert [m.get("body") for m in client.messages[1:]] == [b"x" * 10]
    assert cancelling == 0


async def test_a_finished_response_is_not_cut_by_the_disconnect_that_follows() -> None:
    closed: list[str] = []
    client = Client()

    async def closing_upstream() -> None:
        await asyncio.sleep(0.01)  # closing the download takes a turn of the loop
        closed.append("on_close")

    async def send(message: dict[str, Any]) -> None:
        await client.send(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            client.gone.set()  # uvicorn answers receive() with a disconnect from now on

    after: list[str] = []

    async def request() -> None:
        audio = AudioResponse(chunks(3, closed), "audio/mpeg", on_close=closing_upstream)
        await gated(audio)(dict(GATE_SCOPE), client.receive, send)
        await asyncio.sleep(0.01)
        after.append("went on")

    await asyncio.wait_for(request(), 5)

    assert client.messages[-1]["more_body"] is False
    assert closed == ["iterator", "on_close"]
    assert after == ["went on"]
