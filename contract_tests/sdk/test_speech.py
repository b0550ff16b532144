"""OpenAI side, speech: what the SDK sends and accepts, end to end on loopback."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import anyio
import openai
import pytest

from contract_tests.conftest import SDK, decode
from mockserver.audio import speech_duration
from shim.plugin import ShimServer

CONTENT_TYPES = {
    "mp3": ("audio/mpeg", "mp3"),
    "opus": ("audio/opus", "opus"),
    "aac": ("audio/aac", "aac"),
    "flac": ("audio/flac", "flac"),
    "wav": ("audio/wav", "pcm_s16le"),
    "pcm": ("audio/pcm", "pcm_s16le"),
}
TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
async def test_every_format_decodes_at_the_right_length(sdk: SDK, fmt: str) -> None:
    response = await sdk.call(
        "audio.speech.create", model="tts-1-hd", voice="coral", input=TEXT, response_format=fmt
    )

    content_type, codec = CONTENT_TYPES[fmt]
    assert response.response.headers["content-type"] == content_type
    decoded_codec, rate, seconds = decode(response.content, fmt)
    assert decoded_codec.startswith(codec)
    assert rate == (48_000 if fmt == "opus" else 24_000)  # Opus always decodes at 48 kHz
    assert seconds == pytest.approx(speech_duration(TEXT, 1.0), abs=0.15)


async def test_speed_changes_the_length(sdk: SDK) -> None:
    slow = await sdk.speech(input=TEXT, response_format="wav", speed=0.5)
    fast = await sdk.speech(input=TEXT, response_format="wav", speed=2.0)

    assert decode(slow, "wav")[2] == pytest.approx(speech_duration(TEXT, 0.5), abs=0.15)
    assert decode(fast, "wav")[2] == pytest.approx(speech_duration(TEXT, 2.0), abs=0.15)


async def test_every_field_reaches_the_upstream_as_documented(sdk: SDK, journal: Any) -> None:
    await sdk.call(
        "audio.speech.create",
        model="gpt-4o-mini-tts",
        voice="ballad",
        input="Mapped.",
        instructions="Speak like a pirate.",
        response_format="aac",
        speed=1.25,
        extra_body={"unknown_future_field": 1},
    )

    (call,) = journal("tts")
    assert call["method"] == "POST"
    assert call["path"] == "/v1/tts"
    assert call["json"] == {
        "model": "openai/gpt-4o-mini-tts",
        "text": "Mapped.",
        "voice": "ballad",
        "style": "Speak like a pirate.",
        "response_format": "aac",
        "speed": 1.25,
    }


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"voice": "nobody"}, "voice"),
        ({"response_format": "ogg"}, "response_format"),
        ({"speed": 0.1}, "speed"),
        ({"speed": 4.5}, "speed"),
        ({"extra_body": {"stream_format": "chunks"}}, "stream_format"),
    ],
)
async def test_validation_errors_are_bad_requests_naming_the_param(
    sdk: SDK, journal: Any, params: dict[str, Any], param: str
) -> None:
    params = {"model": "tts-1-hd", "voice": "alloy", "input": "Hi", **params}
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.call("audio.speech.create", **params)

    assert caught.value.param == param
    assert caught.value.request_id
    assert journal() == []


async def test_unknown_model_is_not_found(sdk: SDK, journal: Any) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.call("audio.speech.create", model="tts-2", voice="alloy", input="Hi")

    assert caught.value.code == "model_not_found"
    assert journal() == []


ERRORS = [
    (400, openai.BadRequestError, None),
    (401, openai.AuthenticationError, "invalid_api_key"),
    (402, openai.APIStatusError, "insufficient_quota"),
    (403, openai.PermissionDeniedError, "insufficient_quota"),
    (404, openai.NotFoundError, None),
    (429, openai.RateLimitError, "rate_limit_exceeded"),
    (500, openai.InternalServerError, None),
    (502, openai.InternalServerError, None),
    (503, openai.InternalServerError, "service_unavailable"),
    (504, openai.InternalServerError, "timeout"),
]


@pytest.mark.parametrize(("status", "exc_class", "code"), ERRORS)
async def test_upstream_statuses_raise_the_matching_sdk_exception(
    sdk: SDK, tts_shim: ShimServer, journal: Any, status: int, exc_class: Any, code: Any
) -> None:
    tts_shim.upstream.scenario([{"status": status, "times": 2}])
    with pytest.raises(exc_class) as caught:
        await sdk.speech(input="Hi")

    error = caught.value
    assert error.status_code == status
    assert error.code == code
    assert error.request_id  # the upstream's requestId, passed on
    retried = status == 429 or status >= 500
    assert len(journal("tts")) == (2 if retried else 1)
    assert journal("audio") == []


async def test_sdk_does_not_retry_what_the_shim_marks_final(
    tts_shim: ShimServer, journal: Any
) -> None:
    tts_shim.upstream.scenario([{"status": 401}])
    client = openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-x", max_retries=2)

    with pytest.raises(openai.AuthenticationError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi")
    assert len(journal("tts")) == 1


async def test_rate_limit_retry_after_reaches_the_sdk(tts_shim: ShimServer, sdk: SDK) -> None:
    tts_shim.upstream.scenario([{"status": 429, "headers": {"retry-after": "42"}}])

    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.speech(input="Hi")
    assert caught.value.response.headers["retry-after"] == "42"


@pytest.mark.parametrize("fault", ["reset", "garbage"])
async def test_generation_faults_are_retried_once(
    tts_shim: ShimServer, sdk: SDK, journal: Any, fault: str
) -> None:
    tts_shim.upstream.scenario([{"fault": fault}])

    audio = await sdk.speech(input="Hi", response_format="wav")
    assert decode(audio, "wav")[2] > 0
    assert len(journal("tts")) == 2


@pytest.mark.parametrize("fault", ["reset", "garbage"])
async def test_persistent_generation_faults_are_502(
    tts_shim: ShimServer, sdk: SDK, fault: str
) -> None:
    tts_shim.upstream.scenario([{"fault": fault, "times": 2}])

    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.speech(input="Hi")
    assert caught.value.status_code == 502


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
    tts_shim.upstream.scenario([{"route": "audio", "fault": "truncated"}])

    with pytest.raises(openai.APIConnectionError):
        await sdk.speech(input=TEXT * 20, response_format="wav")
    assert len(journal("tts")) == 1


@pytest.mark.parametrize("shape", ["url-object", "url-string", "binary"])
@pytest.mark.parametrize("fmt", ["mp3", "wav"])
async def test_every_success_shape(tts_shim: ShimServer, sdk: SDK, shape: str, fmt: str) -> None:
    tts_shim.upstream.scenario([{"shape": shape}])

    response = await sdk.call(
        "audio.speech.create", model="tts-1", voice="echo", input=TEXT, response_format=fmt
    )
    assert response.response.headers["content-type"] == CONTENT_TYPES[fmt][0]
    assert decode(response.content, fmt)[2] == pytest.approx(speech_duration(TEXT), abs=0.15)


async def test_metadata_only_reply_is_a_clear_502(tts_shim: ShimServer, sdk: SDK) -> None:
    tts_shim.upstream.scenario([{"shape": "metadata-only"}])

    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.speech(input="Hi")
    assert caught.value.status_code == 502
    assert "no audio reference" in caught.value.message


async def test_upstream_ignoring_the_format_is_transcoded(tts_shim: ShimServer, sdk: SDK) -> None:
    tts_shim.upstream.scenario([{"audio_format": "wav"}])

    response = await sdk.call(
        "audio.speech.create", model="tts-1", voice="echo", input=TEXT, response_format="opus"
    )
    assert response.response.headers["content-type"] == "audio/opus"
    assert decode(response.content, "opus")[0] == "opus"


async def test_audio_streams_before_the_download_ends(tts_shim: ShimServer) -> None:
    # The CDN dribbles the audio over three seconds; a shim that buffered the file
    # could not deliver its first bytes until the end.
    tts_shim.upstream.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 3000}])
    client = openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-x", max_retries=0)

    started = time.monotonic()
    with client.audio.speech.with_streaming_response.create(
        model="tts-1-hd", voice="alloy", input=TEXT * 3, response_format="wav"
    ) as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        first_at = time.monotonic() - started
        rest = b"".join(chunks)
        done_at = time.monotonic() - started

    assert first.startswith(b"RIFF")
    assert done_at >= 2.5
    assert first_at < done_at / 2
    assert decode(first + rest, "wav")[2] == pytest.approx(speech_duration(TEXT * 3), abs=0.15)


async def test_client_disconnect_stops_the_download(tts_shim: ShimServer) -> None:
    tts_shim.upstream.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 60_000}])
    stats = tts_shim.app.state.shim.upstream.stats  # type: ignore[attr-defined]
    client = openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-x", max_retries=0)

    with client.audio.speech.with_streaming_response.create(
        model="tts-1-hd", voice="alloy", input=TEXT, response_format="wav"
    ) as response:
        next(response.iter_bytes())
        assert stats.open_streams >= 1  # ours, while we hold the response open
    # The shim runs in another thread, so poll its counter (bounded by fail_after).
    with anyio.fail_after(10):
        while stats.open_streams:  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def test_sse_stream_format(tts_shim: ShimServer) -> None:
    client = openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-x", max_retries=0)

    with client.audio.speech.with_streaming_response.create(
        model="tts-1-hd", voice="alloy", input=TEXT, response_format="wav", stream_format="sse"
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]

    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    assert events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_tokens"] == len(TEXT)
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert decode(audio, "wav")[2] == pytest.approx(speech_duration(TEXT), abs=0.15)


@pytest.mark.parametrize(
    "url", ["https://evil.example/a.mp3", "http://169.254.169.254/latest/meta-data"]
)
async def test_origin_guard(tts_shim: ShimServer, sdk: SDK, journal: Any, url: str) -> None:
    tts_shim.upstream.scenario([{"audio_url": url}])

    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.speech(input="Hi")
    assert caught.value.code == "audio_origin_not_allowed"
    assert journal("audio") == []


async def test_the_cdn_never_sees_a_key(sdk: SDK, journal: Any) -> None:
    await sdk.speech(input="Hi")

    (tts,) = journal("tts")
    (cdn,) = journal("audio")
    assert tts["headers"]["authorization"].endswith("0000")  # the SDK's key, passed through
    assert "authorization" not in cdn["headers"]
    assert "sk-test-key" not in json.dumps(cdn)


async def test_server_key_mode(tts_shim_factory: Any, journal: Any) -> None:
    shim = tts_shim_factory(upstream_key="aiml-server-key-4242")
    sdk = SDK("sync", shim, api_key="anything-the-client-says")

    await sdk.speech(input="Hi")
    (tts,) = journal("tts")
    assert tts["headers"]["authorization"] == "Bearer ****4242"
