"""OpenAI side, chat completions: SDK code written for audio-output chat, end to end."""

from __future__ import annotations

import base64
from typing import Any

import openai
import pytest

from contract_tests.conftest import LIVE_TEXT, SDK, decode, delta_audio, sdk_at_least
from mockserver.audio import speech_duration
from shim.testing import ShimServer

TEXT = "The quick brown fox jumps over the lazy dog."
MESSAGES = [
    {"role": "system", "content": "You read aloud whatever you are given."},
    {"role": "user", "content": TEXT},
]
#: Chat format -> (format sent upstream, decoder names PyAV may report).
FORMATS = {
    "wav": ("wav", {"pcm_s16le"}),
    "mp3": ("mp3", {"mp3", "mp3float"}),
    "aac": ("aac", {"aac"}),
    "flac": ("flac", {"flac"}),
    "opus": ("opus", {"opus", "libopus"}),
    "pcm16": ("pcm", {"pcm_s16le"}),
}


def _params(fmt: str = "wav", voice: str = "coral", **more: Any) -> dict[str, Any]:
    return {
        "model": "tts-1-hd",
        "modalities": ["text", "audio"],
        "audio": {"voice": voice, "format": fmt},
        "messages": MESSAGES,
        **more,
    }


async def _stream(sdk: SDK, **params: Any) -> list[Any]:
    """Every chunk of a streamed chat completion, from either client."""
    stream = await sdk.call("chat.completions.create", stream=True, **params)
    if sdk.kind == "sync":
        return list(stream)
    return [chunk async for chunk in stream]


def _audio_deltas(chunks: list[Any]) -> list[Any]:
    deltas = [delta_audio(c.choices[0].delta) for c in chunks if c.choices]
    return [audio for audio in deltas if audio is not None]


def _check_length(data: bytes, fmt: str) -> None:
    codec, rate, seconds = decode(data, fmt)
    assert codec in FORMATS[fmt][1]
    assert rate == (48_000 if fmt == "opus" else 24_000)  # Opus always decodes at 48 kHz
    assert seconds == pytest.approx(speech_duration(TEXT), abs=0.15)
    if fmt == "pcm16":
        assert not data.startswith(b"RIFF")  # raw samples, no header
        assert len(data) % 2 == 0


# -- live: short, cheap, and true of the real API too ------------------------------------

LIVE_MESSAGES = [{"role": "user", "content": LIVE_TEXT}]


@pytest.mark.live(billed=1)
async def test_a_short_completion_speaks_the_message(sdk: SDK) -> None:
    completion = await sdk.call(
        "chat.completions.create", **_params(messages=LIVE_MESSAGES, voice="alloy")
    )

    assert completion.object == "chat.completion"
    (choice,) = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.content is None
    audio = choice.message.audio
    assert audio.id.startswith("audio_")
    assert audio.transcript == LIVE_TEXT
    data = base64.b64decode(audio.data, validate=True)
    assert data.startswith(b"RIFF")
    assert decode(data, "wav")[2] > 0


@pytest.mark.live(billed=1)
async def test_a_short_streamed_completion_sends_decodable_fragments(sdk: SDK) -> None:
    chunks = await _stream(
        sdk, **_params("mp3", messages=LIVE_MESSAGES, stream_options={"include_usage": True})
    )

    deltas = _audio_deltas(chunks)
    assert "".join(a.transcript for a in deltas if a.transcript) == LIVE_TEXT
    audio = b"".join(base64.b64decode(a.data, validate=True) for a in deltas if a.data)
    assert decode(audio, "mp3")[2] > 0
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == len(LIVE_TEXT)


# -- non-streamed ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_every_chat_format_decodes_at_the_right_length(
    sdk: SDK, journal: Any, fmt: str
) -> None:
    completion = await sdk.call("chat.completions.create", **_params(fmt))

    (call,) = journal("tts")
    assert call["json"]["response_format"] == FORMATS[fmt][0]
    audio = completion.choices[0].message.audio
    _check_length(base64.b64decode(audio.data, validate=True), fmt)


async def test_the_completion_has_openais_audio_shape(sdk: SDK, journal: Any) -> None:
    completion = await sdk.call("chat.completions.create", **_params(voice="sage"))

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "tts-1-hd"
    (choice,) = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    message = choice.message
    assert message.role == "assistant"
    assert message.content is None
    assert message.refusal is None
    assert message.audio.id.startswith("audio_")
    assert message.audio.transcript == TEXT
    assert message.audio.expires_at > completion.created
    usage = completion.usage
    assert usage.prompt_tokens == len(TEXT)
    assert usage.completion_tokens == 0
    assert usage.total_tokens == len(TEXT)
    assert usage.completion_tokens_details.audio_tokens == 0
    (call,) = journal("tts")
    assert call["json"] == {
        "model": "openai/tts-1-hd",
        "text": TEXT,
        "voice": "sage",
        "response_format": "wav",
    }


async def test_the_plain_shape_without_audio_gets_wav_in_alloy(sdk: SDK, journal: Any) -> None:
    completion = await sdk.call(
        "chat.completions.create",
        model="openai/tts-1",
        messages=[{"role": "user", "content": TEXT}],
        temperature=0.3,
        max_tokens=50,
    )

    assert completion.model == "openai/tts-1"
    (call,) = journal("tts")
    assert call["json"]["voice"] == "alloy"
    assert call["json"]["model"] == "openai/tts-1"
    data = base64.b64decode(completion.choices[0].message.audio.data)
    assert data.startswith(b"RIFF")
    _check_length(data, "wav")


async def test_text_parts_of_the_last_user_message_are_spoken(sdk: SDK, journal: Any) -> None:
    messages = [
        {"role": "user", "content": "Not this one."},
        {"role": "assistant", "content": "Fine."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "The quick brown fox"},
                {"type": "text", "text": "jumps over the lazy dog."},
            ],
        },
    ]
    completion = await sdk.call("chat.completions.create", **_params(messages=messages))

    spoken = "The quick brown fox\njumps over the lazy dog."
    assert journal("tts")[0]["json"]["text"] == spoken
    assert completion.choices[0].message.audio.transcript == spoken


# -- streamed -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_streamed_fragments_each_decode_and_join_into_the_audio(sdk: SDK, fmt: str) -> None:
    chunks = await _stream(sdk, **_params(fmt))

    fragments = [a.data for a in _audio_deltas(chunks) if a.data]
    assert fragments
    pieces = [base64.b64decode(f, validate=True) for f in fragments]  # each on its own
    _check_length(b"".join(pieces), fmt)


async def test_the_stream_is_role_transcript_audio_stop(sdk: SDK) -> None:
    chunks = await _stream(sdk, **_params())

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    first_audio = delta_audio(chunks[1].choices[0].delta)
    assert first_audio.transcript == TEXT
    assert first_audio.id.startswith("audio_")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert [a.expires_at for a in _audio_deltas(chunks) if a.expires_at]  # sent once
    assert all(c.usage is None for c in chunks)  # no include_usage, no usage chunk


@sdk_at_least((3, 25, 0), "typed ChoiceDelta.audio")
async def test_audio_deltas_parse_into_the_sdks_own_type(sdk: SDK) -> None:
    from openai.types.chat.chat_completion_chunk import ChoiceDeltaAudio

    chunks = await _stream(sdk, **_params())

    audio = [c.choices[0].delta.audio for c in chunks if c.choices and c.choices[0].delta.audio]
    assert audio
    assert all(isinstance(a, ChoiceDeltaAudio) for a in audio)
    assert all(a.model_extra in (None, {}) for a in audio)  # nothing the SDK does not know


async def test_include_usage_adds_a_final_usage_chunk(sdk: SDK) -> None:
    chunks = await _stream(sdk, **_params(stream_options={"include_usage": True}))

    last = chunks[-1]
    assert last.choices == []
    assert last.usage.prompt_tokens == len(TEXT)
    assert last.usage.total_tokens == len(TEXT)
    assert last.usage.completion_tokens_details.audio_tokens == 0
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


async def test_include_usage_false_sends_no_usage_chunk(sdk: SDK) -> None:
    chunks = await _stream(sdk, **_params(stream_options={"include_usage": False}))

    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_the_sdk_stream_helper_assembles_playable_audio(tts_shim: ShimServer) -> None:
    # ``chat.completions.stream`` joins the ``data`` strings: that must still decode.
    client = openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-test-key-0000")
    # openai<1.92.0 has the helper under ``beta`` only.
    completions = client.chat.completions
    helper = getattr(completions, "stream", None) or client.beta.chat.completions.stream
    with helper(**_params("mp3")) as stream:
        final = stream.get_final_completion()
    client.close()

    audio = final.choices[0].message.audio
    assert audio is not None
    assert audio.transcript == TEXT
    assert audio.id.startswith("audio_")
    _check_length(base64.b64decode(audio.data, validate=True), "mp3")


async def test_a_download_that_breaks_mid_stream_raises_in_the_sdk(
    sdk: SDK, tts_shim: ShimServer, journal: Any
) -> None:
    # Cut every time: the first download and both resumptions (--audio-retries 2).
    tts_shim.upstream.scenario([{"route": "audio", "fault": "truncated", "times": 3}])

    with pytest.raises(openai.APIError) as caught:
        await _stream(sdk, **_params())

    assert "audio" in caught.value.message
    assert len(journal("tts")) == 1  # billed once, never retried


# -- errors ---------------------------------------------------------------------------


@pytest.mark.live(billed=0)
@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"messages": [{"role": "system", "content": "Only a system prompt."}]}, "messages"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x" * 100_001}]}, "messages"),
        ({"audio": {"voice": "nobody", "format": "wav"}}, "audio.voice"),
        ({"audio": {"voice": "alloy", "format": "pcm"}}, "audio.format"),
        ({"modalities": ["text"]}, "modalities"),
        ({"n": 3}, "n"),
    ],
)
async def test_validation_errors_are_bad_requests_naming_the_param(
    sdk: SDK, params: dict[str, Any], param: str
) -> None:
    # Checked before the billed call: the live-cost check sees no generation.
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.call("chat.completions.create", **{**_params(), **params})

    assert caught.value.param == param
    assert caught.value.request_id


@pytest.mark.live(billed=0)
async def test_a_chat_model_is_not_found(sdk: SDK) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.call("chat.completions.create", **_params(model="gpt-4o"))

    assert caught.value.code == "model_not_found"
    assert "speech models" in caught.value.message


@pytest.mark.parametrize(
    ("status", "exc_class", "code"),
    [
        (401, openai.AuthenticationError, "invalid_api_key"),
        (403, openai.PermissionDeniedError, "insufficient_quota"),
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (503, openai.InternalServerError, "service_unavailable"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_raise_as_for_speech(
    sdk: SDK,
    tts_shim: ShimServer,
    journal: Any,
    status: int,
    exc_class: Any,
    code: str,
    stream: bool,
) -> None:
    tts_shim.upstream.scenario([{"status": status, "times": 4}])
    with pytest.raises(exc_class) as caught:
        await sdk.speech(input=TEXT)
    speech_error = caught.value
    speech_calls = len(journal("tts"))

    with pytest.raises(exc_class) as caught:
        await (
            _stream(sdk, **_params())
            if stream
            else sdk.call("chat.completions.create", **_params())
        )

    assert caught.value.status_code == speech_error.status_code == status
    assert caught.value.code == speech_error.code == code
    assert caught.value.request_id
    assert len(journal("tts")) == 2 * speech_calls  # the same retries
    assert journal("audio") == []
