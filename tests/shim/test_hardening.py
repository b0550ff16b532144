"""Regressions for inputs and upstream replies that once crashed or leaked.

Each case here was a 500, a leaked upstream connection or a leaked key before the
reliability work; the fuzz tests look for more of the same at random.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shim.testing import MockUpstream
from tests.shim.conftest import state_of

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
    shim: Any, upstream: MockUpstream, path: str, raw: bytes
) -> None:
    response = await shim().post(path, content=raw)

    error = _envelope(response, 400)
    assert "surrogate" in error["message"]
    assert upstream.journal == []


async def test_escaped_surrogate_pairs_are_ordinary_text(shim: Any, upstream: MockUpstream) -> None:
    raw = b'{"model": "tts-1", "input": "hi \\ud83d\\ude00"}'
    response = await shim().post(SPEECH, content=raw)

    assert response.status_code == 200
    assert upstream.requests[0]["json"]["text"] == "hi \U0001f600"


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
    shim: Any, upstream: MockUpstream, server_key: str | None, client_token: str | None
) -> None:
    key = server_key or client_token
    upstream.scenario([{"status": 401, "message": f"Invalid API key: {key}"}])
    client = shim(upstream_key=server_key)
    if client_token:
        client.headers["authorization"] = f"Bearer {client_token}"

    response = await client.post(SPEECH, json={"model": "tts-1", "input": "hi"})

    error = _envelope(response, 401)
    assert str(key) not in response.text
    assert "[redacted]" in error["message"]


@pytest.mark.parametrize("response_format", ["mp3", "flac"])  # flac: through the transcoder
async def test_the_deadline_closes_the_download_it_cut(
    shim: Any, upstream: MockUpstream, response_format: str
) -> None:
    upstream.scenario([{"route": "audio", "delay_ms": 60_000}])
    client = shim(deadline=0.2)

    response = await client.post(
        SPEECH, json={"model": "tts-1", "input": "hi", "response_format": response_format}
    )

    assert _envelope(response, 504)["code"] == "timeout"
    assert response.headers["x-should-retry"] == "false"  # the generation was billed
    state = state_of(client)
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
