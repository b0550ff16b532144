"""The AI/ML side: reply shapes, error mapping, retries, the origin guard, keys."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.shim.conftest import CDN, FakeUpstream, decode

BODY = {"model": "tts-1-hd", "input": "Shapes.", "voice": "nova", "response_format": "wav"}


def _ok(upstream: FakeUpstream, response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.content == upstream.audio_for("wav")


# -- success shapes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"audio": {"url": f"{CDN}/generations/hedgehog/1760948051400-99effd93.wav"}},
        {"audio": f"{CDN}/g/1.wav", "meta": {"usage": {"credits_used": 3, "usd_spent": 0.1}}},
        {"audio": f"{CDN}/g/1.wav", "meta": None},
        {"audio": f"{CDN}/g/1.wav", "meta": {"usage": None}},
        {"audio_url": f"{CDN}/g/1.wav"},
    ],
)
@pytest.mark.parametrize("status", [200, 201])
async def test_every_documented_url_shape(
    shim: Any, upstream: FakeUpstream, payload: dict[str, Any], status: int
) -> None:
    upstream.tts.append(httpx.Response(status, json=payload))
    _ok(upstream, await shim().post("/v1/audio/speech", json=BODY))
    assert [r.method for r in upstream.requests] == ["POST", "GET"]


async def test_binary_reply_is_streamed_without_a_cdn(shim: Any, upstream: FakeUpstream) -> None:
    audio = upstream.audio_for("wav")
    upstream.tts.append(httpx.Response(200, content=audio, headers={"content-type": "audio/wav"}))

    _ok(upstream, await shim().post("/v1/audio/speech", json=BODY))
    assert len(upstream.requests) == 1


async def test_binary_wav_reply_is_transcoded_to_the_requested_format(
    shim: Any, upstream: FakeUpstream
) -> None:
    audio = upstream.audio_for("wav")
    upstream.tts.append(httpx.Response(200, content=audio, headers={"content-type": "audio/wav"}))

    response = await shim().post("/v1/audio/speech", json={**BODY, "response_format": "mp3"})

    assert response.headers["content-type"] == "audio/mpeg"
    assert decode(response.content, "mp3")[0] == "mp3float"


@pytest.mark.parametrize("prefix", ["", "data:audio/wav;base64,"])
async def test_inline_base64_audio(shim: Any, upstream: FakeUpstream, prefix: str) -> None:
    encoded = base64.b64encode(upstream.audio_for("wav")).decode()
    upstream.tts.append(httpx.Response(200, json={"audio": prefix + encoded}))

    _ok(upstream, await shim().post("/v1/audio/speech", json=BODY))


async def test_metadata_only_reply_is_a_502_naming_the_request(
    shim: Any, upstream: FakeUpstream
) -> None:
    upstream.tts.append(
        httpx.Response(201, json={"metadata": {"request_id": "dg-123", "duration": 1.2}})
    )
    response = await shim().post("/v1/audio/speech", json=BODY)

    assert response.status_code == 502
    error = response.json()["error"]
    assert "no audio reference" in error["message"]
    assert "dg-123" in error["message"]
    assert error["code"] == "no_audio_in_reply"
    assert response.headers["x-request-id"] == "dg-123"
    assert response.headers["x-should-retry"] == "false"  # it was billed
    assert len(upstream.calls("/v1/tts")) == 1


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, content=b"<html>oops</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, json={"audio": 42}),
        httpx.Response(200, json=["not", "an", "object"]),
    ],
)
async def test_garbage_replies_are_502(
    shim: Any, upstream: FakeUpstream, reply: httpx.Response
) -> None:
    upstream.tts.extend([reply, reply])
    response = await shim().post("/v1/audio/speech", json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["type"] == "server_error"


async def test_audio_that_is_not_audio_is_502(shim: Any, upstream: FakeUpstream) -> None:
    upstream.cdn.extend([httpx.Response(200, content=b"\x00\x01garbage" * 50)] * 3)
    response = await shim().post("/v1/audio/speech", json={**BODY, "response_format": "mp3"})

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "bad_upstream_audio"


# -- errors -------------------------------------------------------------------------


def _aiml_error(status: int, message: str, **headers: str) -> httpx.Response:
    body = {
        "message": message,
        "path": "/v1/tts",
        "requestId": f"aiml-{status}",
        "statusCode": status,
        "timestamp": "2026-11-21T12:00:00.000Z",
    }
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "message", "code", "retryable"),
    [
        (400, "Body validation error! Invalid enum value.", None, False),
        (401, "This request requires a valid API key.", "invalid_api_key", False),
        (402, "Insufficient credits.", "insufficient_quota", False),
        (403, "You've run out of credits.", "insufficient_quota", False),
        (404, "Model not found", "model_not_found", False),
        (429, "Too Many Requests", "rate_limit_exceeded", True),
        (500, "Internal server error", None, True),
        (502, "Bad Gateway", None, True),
        (503, "Service unavailable", "service_unavailable", True),
        (504, "Generation timeout", "timeout", True),
    ],
)
async def test_upstream_errors_keep_their_status(
    shim: Any, upstream: FakeUpstream, status: int, message: str, code: Any, retryable: bool
) -> None:
    upstream.tts.extend([_aiml_error(status, message)] * 2)
    response = await shim(tts_retries=1).post("/v1/audio/speech", json=BODY)

    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"]
    assert error["code"] == code
    assert response.headers["x-request-id"] == f"aiml-{status}"
    assert ("x-should-retry" in response.headers) is not retryable
    assert len(upstream.calls("/v1/tts")) == (2 if retryable else 1)


async def test_retry_after_within_the_cap_is_waited_out(shim: Any, upstream: FakeUpstream) -> None:
    upstream.tts.append(_aiml_error(429, "Too Many Requests", **{"retry-after": "0"}))
    _ok(upstream, await shim(tts_retries=1).post("/v1/audio/speech", json=BODY))
    assert len(upstream.calls("/v1/tts")) == 2


async def test_long_retry_after_goes_to_the_client(shim: Any, upstream: FakeUpstream) -> None:
    upstream.tts.append(_aiml_error(429, "Free-tier limit: wait.", **{"retry-after": "30"}))
    response = await shim(tts_retries=3, max_retry_wait=1).post("/v1/audio/speech", json=BODY)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert len(upstream.calls("/v1/tts")) == 1


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_billed_call_retry_count_is_configurable(
    shim: Any, upstream: FakeUpstream, retries: int
) -> None:
    upstream.tts.extend([_aiml_error(500, "Internal server error")] * 5)
    response = await shim(tts_retries=retries).post("/v1/audio/speech", json=BODY)

    assert response.status_code == 500
    assert len(upstream.calls("/v1/tts")) == retries + 1


async def test_cdn_download_is_retried_without_billing_again(
    shim: Any, upstream: FakeUpstream
) -> None:
    upstream.cdn.extend([httpx.Response(503), httpx.ConnectError("reset by peer")])
    _ok(upstream, await shim(audio_retries=2).post("/v1/audio/speech", json=BODY))
    assert len(upstream.calls("/v1/tts")) == 1
    assert len(upstream.calls("/generations")) == 3


async def test_cdn_failure_after_retries_is_a_non_retryable_502(
    shim: Any, upstream: FakeUpstream
) -> None:
    upstream.cdn.extend([httpx.Response(500)] * 3)
    response = await shim(audio_retries=2).post("/v1/audio/speech", json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "audio_download_failed"
    assert response.headers["x-should-retry"] == "false"


async def test_unreachable_upstream_is_502(shim: Any, upstream: FakeUpstream) -> None:
    upstream.tts.extend([httpx.ConnectError("connection refused")] * 2)
    response = await shim().post("/v1/audio/speech", json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"


async def test_upstream_timeout_is_504(shim: Any, upstream: FakeUpstream) -> None:
    upstream.tts.extend([httpx.ReadTimeout("slow")] * 2)
    response = await shim().post("/v1/audio/speech", json=BODY)

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


async def test_declared_oversize_audio_is_refused(shim: Any, upstream: FakeUpstream) -> None:
    response = await shim(max_audio_bytes=100).post("/v1/audio/speech", json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "audio_too_large"


# -- the origin guard ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/a.wav",
        "http://cdn.aimlapi.com/a.wav",  # scheme matters
        "https://cdn.aimlapi.com:8443/a.wav",  # port matters
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
    ],
)
async def test_audio_from_untrusted_origins_is_never_fetched(
    shim: Any, upstream: FakeUpstream, url: str
) -> None:
    upstream.tts.append(httpx.Response(200, json={"audio": {"url": url}}))
    response = await shim().post("/v1/audio/speech", json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "audio_origin_not_allowed"
    assert len(upstream.requests) == 1


async def test_extra_audio_origins_can_be_allowed(shim: Any, upstream: FakeUpstream) -> None:
    upstream.tts.append(httpx.Response(200, json={"audio": "https://media.example:8443/a.wav"}))
    client = shim(audio_origins=("https://media.example:8443",))
    _ok(upstream, await client.post("/v1/audio/speech", json=BODY))


async def test_redirect_to_another_origin_is_not_followed(
    shim: Any, upstream: FakeUpstream
) -> None:
    upstream.cdn.append(httpx.Response(302, headers={"location": "https://evil.example/x.wav"}))
    response = await shim().post("/v1/audio/speech", json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "audio_origin_not_allowed"
    assert [r.url.host for r in upstream.requests[1:]] == ["cdn.aimlapi.com"]


async def test_redirect_within_allowed_origins_is_followed(
    shim: Any, upstream: FakeUpstream
) -> None:
    upstream.cdn.append(httpx.Response(301, headers={"location": "/generations/moved/2.wav"}))
    _ok(upstream, await shim().post("/v1/audio/speech", json=BODY))
    assert upstream.requests[-1].url.path == "/generations/moved/2.wav"


# -- keys ---------------------------------------------------------------------------


async def test_client_token_is_passed_through_without_a_server_key(
    shim: Any, upstream: FakeUpstream
) -> None:
    await shim().post("/v1/audio/speech", json=BODY)

    assert upstream.requests[0].headers["authorization"] == "Bearer sk-client-key-1234"


async def test_server_key_replaces_the_client_token(shim: Any, upstream: FakeUpstream) -> None:
    await shim(upstream_key="aiml-server-key").post("/v1/audio/speech", json=BODY)

    assert upstream.requests[0].headers["authorization"] == "Bearer aiml-server-key"


async def test_no_key_and_no_token_is_401(shim: Any, upstream: FakeUpstream) -> None:
    client = shim()
    del client.headers["authorization"]
    response = await client.post("/v1/audio/speech", json=BODY)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert upstream.requests == []


async def test_the_cdn_never_sees_a_key_or_client_headers(
    shim: Any, upstream: FakeUpstream
) -> None:
    client = shim(upstream_key="aiml-server-key")
    await client.post("/v1/audio/speech", json=BODY, headers={"x-secret": "s", "cookie": "c=1"})

    cdn = upstream.requests[1]
    assert cdn.url.host == "cdn.aimlapi.com"
    assert not {"authorization", "x-secret", "cookie"} & set(cdn.headers)
    assert "aiml-server-key" not in str(cdn.headers.raw)


@pytest.mark.parametrize(
    ("token", "status"), [("shim-key-a", 200), ("shim-key-b", 200), ("wrong", 401), (None, 401)]
)
async def test_client_keys_guard_every_v1_route(
    shim: Any, upstream: FakeUpstream, token: Any, status: int
) -> None:
    client = shim(client_keys=("shim-key-a", "shim-key-b"), upstream_key="aiml-server-key")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    client.headers.pop("authorization")
    response = await client.post("/v1/audio/speech", json=BODY, headers=headers)

    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert upstream.requests == []
    else:
        assert upstream.requests[0].headers["authorization"] == "Bearer aiml-server-key"
