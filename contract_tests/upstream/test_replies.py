"""AI/ML side, replies: every reply the documents describe, as the mock sends it and as
the shim copes with it.

The mock is held to ``aimlapi_tts.schema.json`` here (each success shape, each documented
error status and message), so it cannot drift from the documents unnoticed; the same
checks run against the real API with ``--live``. Then the shim is fed each documented
variant, including those the mock only sends when a scenario step writes the body.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from contract_tests.conftest import LIVE_TEXT, LOOPBACK_TLS, SDK, decode
from contract_tests.upstream.schema import ERROR_STATUSES, check_reply
from mockserver import RESPONSE_SHAPES
from mockserver.audio import speech_duration
from mockserver.errors import FREE_TIER_MESSAGE, MAINTENANCE_MESSAGE, SERVER_TROUBLE_MESSAGE
from shim.testing import MockUpstream, ShimServer

TEXT = "The quick brown fox jumps over the lazy dog."
BODY = {"model": "openai/tts-1-hd", "text": LIVE_TEXT, "voice": "alloy", "response_format": "mp3"}
#: How each format's bytes begin (MP3 may start with an ID3 tag or a frame sync).
SIGNATURES = {"mp3": (b"ID3", b"\xff\xf3", b"\xff\xfb", b"\xff\xf2"), "wav": (b"RIFF",)}


def _post(url: str, key: str | None, body: Any, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(timeout=60, verify=LOOPBACK_TLS) as http:
        return http.post(url + "/v1/tts", json=body, headers=headers, **kwargs)


def _audio_url(reply: Any) -> str | None:
    if isinstance(reply, dict) and isinstance(reply.get("audio"), dict):
        url: str = reply["audio"]["url"]
        return url
    if isinstance(reply, dict) and isinstance(reply.get("audio"), str):
        return str(reply["audio"])
    return None


def _check_error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = check_reply(response.status_code, response.headers, response.content)
    assert int(body["statusCode"]) == response.status_code
    assert body["path"] == "/v1/tts"
    assert body["requestId"]
    return body


# -- the API itself, offline (the mock) and with --live (the real one) -------------------


@pytest.mark.live(billed=1)
def test_a_short_request_gets_a_documented_reply_and_downloadable_audio(aimlapi: Any) -> None:
    response = _post(aimlapi.url, aimlapi.key, BODY)

    reply = check_reply(response.status_code, response.headers, response.content)
    url = _audio_url(reply)
    assert url is not None or isinstance(reply, bytes), "the reply has no audio to fetch"
    if url is not None:
        with httpx.Client(timeout=60, follow_redirects=True, verify=LOOPBACK_TLS) as http:
            audio = http.get(url)  # no key: the CDN serves by URL
        assert audio.status_code == 200
        assert audio.content.startswith(SIGNATURES["mp3"])


@pytest.mark.live(billed=0)
def test_a_bad_body_is_a_documented_400_naming_the_field(aimlapi: Any) -> None:
    response = _post(aimlapi.url, aimlapi.key, {**BODY, "voice": "marin"})

    assert response.status_code == 400
    assert "marin" in _check_error(response)["message"]  # "... received 'marin'"


@pytest.mark.live(billed=0)
def test_a_missing_key_is_a_documented_401(aimlapi: Any) -> None:
    response = _post(aimlapi.url, None, BODY)

    assert response.status_code == 401
    _check_error(response)


# -- the mock, held to the documents -----------------------------------------------------


@pytest.mark.parametrize("shape", [None, *RESPONSE_SHAPES])
def test_every_success_shape_the_mock_sends_is_documented(
    tts_mock: MockUpstream, shape: str | None
) -> None:
    if shape is not None:
        tts_mock.scenario([{"shape": shape}])
    response = _post(tts_mock.url, "sk-test-key-0000", {**BODY, "response_format": "wav"})

    reply = check_reply(response.status_code, response.headers, response.content)
    if shape == "binary":
        assert response.headers["content-type"] == "audio/wav"
        assert decode(reply, "wav")[2] > 0
    elif shape == "metadata-only":
        assert reply["metadata"]["request_id"] == response.headers["x-request-id"]
    else:
        url = _audio_url(reply)
        assert url is not None
        assert url.startswith(tts_mock.url + "/generations/")
        with httpx.Client(verify=LOOPBACK_TLS) as http:
            assert http.get(url).content.startswith(b"RIFF")


@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_every_documented_error_status_from_the_mock_matches_the_schema(
    tts_mock: MockUpstream, status: int
) -> None:
    tts_mock.scenario([{"status": status}])
    response = _post(tts_mock.url, "sk-test-key-0000", BODY)

    assert response.status_code == status
    body = _check_error(response)
    assert body["requestId"] == response.headers["x-request-id"]
    if status == 429:
        assert response.headers["retry-after"]


@pytest.mark.parametrize(
    ("status", "message"),
    [(429, FREE_TIER_MESSAGE), (500, SERVER_TROUBLE_MESSAGE), (500, MAINTENANCE_MESSAGE)],
)
def test_the_documented_message_variants_match_the_schema(
    tts_mock: MockUpstream, status: int, message: str
) -> None:
    tts_mock.scenario([{"status": status, "message": message}])
    response = _post(tts_mock.url, "sk-test-key-0000", BODY)

    assert _check_error(response)["message"] == message


@pytest.mark.parametrize(
    "body",
    [
        {"text": "Hi"},
        {**BODY, "text": ""},
        {**BODY, "text": "x" * 4097},
        {**BODY, "model": "openai/tts-2"},
        {**BODY, "speed": 9},
        {**BODY, "stream": True},
        {**BODY, "response_format": "ogg"},
        [BODY],
    ],
)
def test_the_mocks_own_validation_errors_are_documented_400s(
    tts_mock: MockUpstream, body: Any
) -> None:
    response = _post(tts_mock.url, "sk-test-key-0000", body)

    assert response.status_code == 400
    _check_error(response)


# -- the shim, coping with each documented reply -----------------------------------------


@pytest.mark.parametrize("shape", ["url-object", "url-string", "binary"])
@pytest.mark.parametrize("fmt", ["mp3", "wav"])
async def test_every_success_shape(tts_shim: ShimServer, sdk: SDK, shape: str, fmt: str) -> None:
    tts_shim.upstream.scenario([{"shape": shape}])

    response = await sdk.call(
        "audio.speech.create", model="tts-1", voice="echo", input=TEXT, response_format=fmt
    )
    assert (
        response.response.headers["content-type"] == {"mp3": "audio/mpeg", "wav": "audio/wav"}[fmt]
    )
    assert decode(response.content, fmt)[2] == pytest.approx(speech_duration(TEXT), abs=0.15)


def _variants(url: str) -> list[tuple[int, Any]]:
    """Documented replies the mock sends only when a step writes them out."""
    return [
        (200, {"audio": {"url": url}}),  # the doc page's example, under 200
        (200, {"audio": url}),
        (200, {"audio": url, "meta": None}),
        (200, {"audio": url, "meta": {"usage": None}}),
        (200, {"audio": url, "meta": {"usage": {"credits_used": 1800}}}),  # early 2026
    ]


@pytest.mark.parametrize("index", range(5))
async def test_every_documented_json_variant_is_played(
    tts_shim: ShimServer, sdk: SDK, index: int
) -> None:
    url = f"{tts_shim.upstream.url}/generations/coral/1700000000000-0.mp3?duration_ms=900"
    status, body = _variants(url)[index]
    check_reply(status, {"content-type": "application/json"}, json.dumps(body).encode())
    tts_shim.upstream.scenario([{"status": status, "body": body}])

    audio = await sdk.speech(input="Hi", response_format="mp3")

    assert decode(audio, "mp3")[2] == pytest.approx(0.9, abs=0.15)


@pytest.mark.parametrize(
    ("status", "exc_class"),
    [
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (503, openai.InternalServerError),
    ],
)
async def test_a_status_code_written_as_a_string_is_understood(
    tts_shim: ShimServer, sdk: SDK, journal: Any, status: int, exc_class: Any
) -> None:
    body = {
        "message": {401: "This request requires a valid API key.", 429: "Too Many Requests"}.get(
            status, "Service unavailable"
        ),
        "path": "/v1/tts",
        "requestId": "0b5d4d8e-2f3c-4c3a-9d55-5f0f2b1d3e4f",
        "statusCode": str(status),
        "timestamp": "2026-04-02T10:11:12.345Z",
    }
    check_reply(status, {"content-type": "application/json"}, json.dumps(body).encode())
    tts_shim.upstream.scenario([{"status": status, "body": body, "times": 2}])

    with pytest.raises(exc_class) as caught:
        await sdk.speech(input="Hi")

    assert caught.value.status_code == status
    assert body["message"] in caught.value.message
    # The mock's x-request-id (a real reply has the same id in both places).
    assert caught.value.request_id == journal("tts")[-1]["request_id"]


async def test_metadata_only_reply_is_a_clear_502(tts_shim: ShimServer, sdk: SDK) -> None:
    tts_shim.upstream.scenario([{"shape": "metadata-only"}])

    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.speech(input="Hi")
    assert caught.value.status_code == 502
    assert caught.value.code == "no_audio_in_reply"
    assert "no audio reference" in caught.value.message


async def test_upstream_ignoring_the_format_is_transcoded(tts_shim: ShimServer, sdk: SDK) -> None:
    tts_shim.upstream.scenario([{"audio_format": "wav"}])

    response = await sdk.call(
        "audio.speech.create", model="tts-1", voice="echo", input=TEXT, response_format="opus"
    )
    assert response.response.headers["content-type"] == "audio/opus"
    assert decode(response.content, "opus")[0] == "opus"


@pytest.mark.parametrize(
    "url", ["https://evil.example/a.mp3", "http://169.254.169.254/latest/meta-data"]
)
async def test_origin_guard(tts_shim: ShimServer, sdk: SDK, journal: Any, url: str) -> None:
    tts_shim.upstream.scenario([{"audio_url": url}])

    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.speech(input="Hi")
    assert caught.value.code == "audio_origin_not_allowed"
    assert journal("audio") == []


# -- faults: replies the documents do not promise, but networks deliver ------------------


@pytest.mark.parametrize("fault", ["reset", "garbage"])
async def test_generation_faults_after_the_request_went_out_are_final(
    tts_shim: ShimServer, sdk: SDK, journal: Any, fault: str
) -> None:
    # The generation may have been billed: one call, and the SDK is told not to retry.
    tts_shim.upstream.scenario([{"fault": fault, "times": 2}])

    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.speech(input="Hi")
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(journal("tts")) == 1


@pytest.mark.parametrize("fault", ["reset", "garbage"])
async def test_cdn_faults_are_retried_without_a_second_generation(
    tts_shim: ShimServer, sdk: SDK, journal: Any, fault: str
) -> None:
    tts_shim.upstream.scenario([{"route": "audio", "fault": fault}])

    audio = await sdk.speech(input="Hi", response_format="flac")
    assert decode(audio, "flac")[2] > 0
    assert len(journal("tts")) == 1
    assert len(journal("audio")) == 2


async def test_truncated_audio_is_never_passed_off_as_complete(
    tts_shim: ShimServer, sdk: SDK, journal: Any
) -> None:
    # The first half arrives and is relayed; then the CDN closes early. The shim
    # must abort the transfer so the SDK fails, rather than end it as if complete.
    # Cut every time: the first download and both resumptions (--audio-retries 2).
    tts_shim.upstream.scenario([{"route": "audio", "fault": "truncated", "times": 3}])

    with pytest.raises(openai.APIConnectionError):
        await sdk.speech(input=TEXT * 20, response_format="wav")
    assert len(journal("tts")) == 1
