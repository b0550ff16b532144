"""OpenAI side, speech: every field the SDK sends, and the replies and errors it accepts.

What the shim sends upstream for these calls is checked in ``upstream/``; streaming
and retries have files of their own.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from contract_tests.conftest import LIVE_TEXT, SDK, decode
from mockserver.audio import speech_duration
from shim.testing import ShimServer

CONTENT_TYPES = {
    "mp3": ("audio/mpeg", "mp3"),
    "opus": ("audio/opus", "opus"),
    "aac": ("audio/aac", "aac"),
    "flac": ("audio/flac", "flac"),
    "wav": ("audio/wav", "pcm_s16le"),
    "pcm": ("audio/pcm", "pcm_s16le"),
}
TEXT = "The quick brown fox jumps over the lazy dog."


def _check_audio(response: Any, fmt: str) -> float:
    """The reply is chunked audio of ``fmt`` at OpenAI's rate; returns its length."""
    content_type, codec = CONTENT_TYPES[fmt]
    assert response.response.headers["content-type"] == content_type
    assert "content-length" not in response.response.headers  # chunked, as OpenAI's
    decoded_codec, rate, seconds = decode(response.content, fmt)
    assert decoded_codec.startswith(codec)
    assert rate == (48_000 if fmt == "opus" else 24_000)  # Opus always decodes at 48 kHz
    assert seconds > 0
    return seconds


@pytest.mark.live(billed=1)
@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
def test_a_short_input_in_every_format(tts_shim: ShimServer, fmt: str) -> None:
    with openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-test-key-0000") as client:
        response = client.audio.speech.create(
            model="tts-1-hd", voice="alloy", input=LIVE_TEXT, response_format=fmt
        )

    _check_audio(response, fmt)


@pytest.mark.live(billed=1)
async def test_every_speech_field_is_accepted(sdk: SDK) -> None:
    response = await sdk.call(
        "audio.speech.create",
        model="tts-1-hd",
        voice="nova",
        input=LIVE_TEXT,
        instructions="Cheerfully.",
        response_format="wav",
        speed=1.25,
        stream_format="audio",
        extra_body={"unknown_future_field": 1},
    )

    _check_audio(response, "wav")
    assert response.content.startswith(b"RIFF")


@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
async def test_every_format_decodes_at_the_right_length(sdk: SDK, fmt: str) -> None:
    response = await sdk.call(
        "audio.speech.create", model="tts-1-hd", voice="coral", input=TEXT, response_format=fmt
    )

    seconds = _check_audio(response, fmt)
    assert seconds == pytest.approx(speech_duration(TEXT, 1.0), abs=0.15)


async def test_speed_changes_the_length(sdk: SDK) -> None:
    slow = await sdk.speech(input=TEXT, response_format="wav", speed=0.5)
    fast = await sdk.speech(input=TEXT, response_format="wav", speed=2.0)

    assert decode(slow, "wav")[2] == pytest.approx(speech_duration(TEXT, 0.5), abs=0.15)
    assert decode(fast, "wav")[2] == pytest.approx(speech_duration(TEXT, 2.0), abs=0.15)


@pytest.mark.live(billed=0)
@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": "x" * 100_001}, "input"),  # over --max-input-chars
        ({"voice": "nobody"}, "voice"),
        ({"voice": "marin"}, "voice"),  # OpenAI's, not offered by the AI/ML API
        ({"voice": {"id": "voice_1234"}}, "voice"),  # a custom voice id (newer SDKs)
        ({"response_format": "ogg"}, "response_format"),
        ({"speed": 0.1}, "speed"),
        ({"speed": 4.5}, "speed"),
        ({"instructions": "x" * 4097}, "instructions"),
        ({"extra_body": {"stream_format": "chunks"}}, "stream_format"),
    ],
)
async def test_validation_errors_are_bad_requests_naming_the_param(
    sdk: SDK, params: dict[str, Any], param: str
) -> None:
    # Checked before the billed call: the live-cost check sees no generation.
    params = {"model": "tts-1-hd", "voice": "alloy", "input": "Hi", **params}
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.call("audio.speech.create", **params)

    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    assert caught.value.request_id


@pytest.mark.live(billed=0)
async def test_unknown_model_is_not_found(sdk: SDK) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.call("audio.speech.create", model="tts-2", voice="alloy", input="Hi")

    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


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
    # The mock's 429 says Retry-After: 1, which the plugin's shim does not wait out;
    # "0" has it retry at once, as it retries 5xx.
    wait = {"headers": {"retry-after": "0"}} if status == 429 else {}
    tts_shim.upstream.scenario([{"status": status, "times": 2, **wait}])
    with pytest.raises(exc_class) as caught:
        await sdk.speech(input="Hi")

    error = caught.value
    assert type(error) is exc_class  # not merely a subclass: 402 is a plain APIStatusError
    assert error.status_code == status
    assert error.code == code
    assert error.request_id  # the upstream's requestId, passed on
    retried = status == 429 or status >= 500
    assert len(journal("tts")) == (2 if retried else 1)
    assert journal("audio") == []
