"""Regressions for inputs and upstream replies that once crashed or leaked.

Each case here was a 500, a leaked upstream connection or a leaked key before the
reliability work; the fuzz tests look for more of the same at random.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.shim.conftest import CDN, FakeUpstream

SPEECH = "/v1/audio/speech"
CHAT = "/v1/chat/completions"


def _envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        (SPEECH, b'{"model": "tts-1", "input": "\\ud800 hi"}'),
        (SPEECH, b'{"model": "tts-1\\udfff", "input": "hi"}'),
        (SPEECH, b'{"model": "tts-1", "input": "hi", "voice": "\\udc00"}'),
        (CHAT, b'{"model": "tts-1", "messages": [{"role": "user", "content": "hi\\ud800"}]}'),
        (CHAT, b'{"model": "tts-1", "messages": [{"role": "\\ud800", "content": "x"}]}'),
    ],
)
async def test_lone_surrogates_are_a_400(
    shim: Any, upstream: FakeUpstream, path: str, raw: bytes
) -> None:
    response = await shim().post(path, content=raw)

    error = _envelope(response, 400)
    assert "surrogate" in error["message"]
    assert upstream.requests == []


async def test_escaped_surrogate_pairs_are_ordinary_text(shim: Any, upstream: FakeUpstream) -> None:
    raw = b'{"model": "tts-1", "input": "hi \\ud83d\\ude00"}'
    response = await shim().post(SPEECH, content=raw)

    assert response.status_code == 200
    assert upstream.bodies()[0]["text"] == "hi \U0001f600"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (SPEECH, {"model": "tts-1", "input": "hi", "response_format": []}, "response_format"),
        (SPEECH, {"model": "tts-1", "input": "hi", "response_format": {}}, "response_format"),
        (SPEECH, {"model": "tts-1", "input": "hi", "stream_format": ["sse"]}, "stream_format"),
        (
            CHAT,
            {"model": "tts-1", "messages": [{"role": "user", "content": "hi"}],
             "audio": {"format": ["wav"]}},
            "audio.format",
        ),
        (
            CHAT,
            {"model": "tts-1", "messages": [{"role": "user", "content": "hi"}], "n": {"a": 1}},
            "n",
        ),
    ],
)  # fmt: skip
async def test_unhashable_values_are_a_400_naming_the_field(
    shim: Any, path: str, body: dict[str, Any], param: str
) -> None:
    error = _envelope(await shim().post(path, json=body), 400)

    assert error["param"] == param


async def test_values_are_quoted_short_however_deep_or_long(shim: Any) -> None:
    deep: Any = "x"
    for _ in range(800):
        deep = [deep]
    body = {"model": "tts-1", "input": "hi", "response_format": deep}

    error = _envelope(await shim().post(SPEECH, json=body), 400)

    assert len(error["message"]) < 300


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "tts-1", "input": "hi", "speed": ' + b"9" * 5000 + b"}",
        b'{"model": "tts-1", "messages": [], "n": ' + b"9" * 4000 + b"}",
        b'{"model": "tts-1", "input": "hi", "speed": 1e400}',
        b'{"model": "tts-1", "input": "hi", "speed": NaN}',
        b"[" * 100_000,
        b'{"model": "tts-1", "input": "hi"} trailing',
        b"\xef\xbb\xbf{}",
        b'{"input": "\xff"}',
    ],
)
async def test_odd_numbers_and_broken_json_are_a_400(shim: Any, raw: bytes) -> None:
    _envelope(await shim().post(SPEECH, content=raw), 400)


@pytest.mark.parametrize("declared", ["\u00b2", "-1", "1e9", " 5"])
async def test_odd_content_lengths_are_no_crash(shim: Any, declared: str) -> None:
    client = shim()
    request = client.build_request("POST", SPEECH, content=b'{"model": "tts-1", "input": "hi"}')
    request.headers["content-length"] = declared.encode("latin-1").decode("latin-1")
    response = await client.send(request)

    assert response.status_code < 500


async def test_any_content_type_is_read_as_json(shim: Any) -> None:
    # As OpenAI does; ``curl -d`` sends application/x-www-form-urlencoded by default.
    response = await shim().post(
        SPEECH,
        content=json.dumps({"model": "tts-1", "input": "hi"}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 200


async def test_a_405_says_what_is_allowed(shim: Any) -> None:
    response = await shim().delete("/v1/models")

    _envelope(response, 405)
    assert "GET" in response.headers["allow"]


# -- upstream replies -------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_key", "client_token"),
    [("sk-server-echoed-0123456789", None), (None, "sk-passthrough-echoed-987654")],
)
async def test_an_upstream_that_echoes_the_key_does_not_leak_it(
    shim: Any, upstream: FakeUpstream, server_key: str | None, client_token: str | None
) -> None:
    key = server_key or client_token
    upstream.tts.append(
        httpx.Response(401, json={"message": f"Invalid API key: {key}", "statusCode": 401})
    )
    client = shim(upstream_key=server_key)
    if client_token:
        client.headers["authorization"] = f"Bearer {client_token}"

    response = await client.post(SPEECH, json={"model": "tts-1", "input": "hi"})

    error = _envelope(response, 401)
    assert str(key) not in response.text
    assert "[redacted]" in error["message"]


@pytest.mark.parametrize(
    "upstream_id",
    [b"\xc3\xa9" * 40, b"x" * 500, b"id with spaces", b"ok-id_1.2:3"],
)
async def test_only_token_like_upstream_request_ids_are_echoed(
    shim: Any, upstream: FakeUpstream, upstream_id: bytes
) -> None:
    upstream.tts.append(
        httpx.Response(
            201,
            headers=[(b"x-request-id", upstream_id)],
            json={"audio": {"url": f"{CDN}/generations/t/1-a.mp3"}},
        )
    )

    response = await shim().post(SPEECH, json={"model": "tts-1", "input": "hi"})

    assert response.status_code == 200
    echoed = response.headers["x-request-id"]
    assert echoed == "ok-id_1.2:3" if upstream_id == b"ok-id_1.2:3" else echoed.startswith("req_")


async def test_a_request_id_in_an_error_body_cannot_inject_headers(
    shim: Any, upstream: FakeUpstream
) -> None:
    upstream.tts.append(
        httpx.Response(400, json={"message": "bad", "requestId": "x\r\nset-cookie: a=b"})
    )

    response = await shim().post(SPEECH, json={"model": "tts-1", "input": "hi"})

    _envelope(response, 400)
    assert "set-cookie" not in response.headers
    assert response.headers["x-request-id"].startswith("req_")


class _TransportOwnError(Exception):
    """What a transport may raise that is not one of httpx's (aiohttp's protocol errors)."""


async def test_a_transports_own_exception_is_a_502_and_retried(
    shim: Any, upstream: FakeUpstream
) -> None:
    upstream.tts.extend([_TransportOwnError("400, message='Bad status line'")] * 2)

    response = await shim(tts_retries=1).post(SPEECH, json={"model": "tts-1", "input": "hi"})

    error = _envelope(response, 502)
    assert error["code"] == "upstream_unreachable"
    assert len(upstream.calls("/v1/tts")) == 2


class _Broken(httpx.AsyncByteStream):
    def __init__(self, body: bytes, error: Exception) -> None:
        self.body = body
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body
        raise self.error

    async def aclose(self) -> None:
        self.closed = True


async def test_a_generation_reply_that_breaks_off_is_a_502(
    shim: Any, upstream: FakeUpstream
) -> None:
    broken = _Broken(b'{"audio": {"url": "', httpx.RemoteProtocolError("peer closed"))
    upstream.tts.append(
        httpx.Response(201, headers={"content-type": "application/json"}, stream=broken)
    )

    response = await shim(tts_retries=0).post(SPEECH, json={"model": "tts-1", "input": "hi"})

    assert _envelope(response, 502)["code"] == "upstream_unreachable"
    assert broken.closed


async def test_audio_that_breaks_with_a_foreign_error_aborts_cleanly(
    shim: Any, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    audio = upstream.audio_for("mp3")
    broken = _Broken(audio[:500], _TransportOwnError("payload error"))
    upstream.cdn.append(httpx.Response(200, stream=broken))
    client = shim()
    client._transport.raise_app_exceptions = False  # type: ignore[attr-defined]
    state = client._transport.app.state.shim  # type: ignore[attr-defined]

    await client.post(SPEECH, json={"model": "tts-1", "input": "hi"})

    assert broken.closed
    assert state.upstream.stats.open_streams == 0
    assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]


class _Stalled(httpx.AsyncByteStream):
    """A CDN body whose first byte never comes."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await asyncio.sleep(3600)
        yield b""

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize("response_format", ["mp3", "flac"])  # flac: through the transcoder
async def test_the_deadline_closes_the_download_it_cut(
    shim: Any, upstream: FakeUpstream, response_format: str
) -> None:
    stalled = _Stalled()
    upstream.cdn.append(httpx.Response(200, stream=stalled))
    client = shim(deadline=0.2)
    state = client._transport.app.state.shim  # type: ignore[attr-defined]

    response = await client.post(
        SPEECH, json={"model": "tts-1", "input": "hi", "response_format": response_format}
    )

    assert _envelope(response, 504)["code"] == "timeout"
    assert stalled.closed
    assert state.upstream.stats.open_streams == 0
    assert state.capacity.in_flight == 0


def test_every_client_key_is_compared_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from starlette.datastructures import Headers

    from shim import Config
    from shim.keys import Keys

    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    keys = Keys(Config(client_keys=("key-one", "key-two", "key-three")))

    keys.check_client(Headers({"authorization": "Bearer key-one"}))

    assert compared == [b"key-one", b"key-two", b"key-three"]  # no early exit on a match
