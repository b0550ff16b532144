"""``/v1/chat/completions``: the spoken text, both answer shapes, defaults (the validation
rules are unit-tested in ``test_contract.py``)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from mockserver import speech_duration
from shim.chat import AUDIO_LIFETIME, CHAT_FORMATS, FRAGMENT_ALIGNMENT, _whole_samples
from shim.testing import MockUpstream, ShimServer, decode_audio
from tests.shim.conftest import sent_bodies

USER = [{"role": "user", "content": "Hello there."}]
GOOD: dict[str, Any] = {
    "model": "tts-1-hd",
    "modalities": ["text", "audio"],
    "audio": {"voice": "coral", "format": "wav"},
    "messages": USER,
}
_DROP = object()
#: How long the mock's audio for "Hello there." lasts.
SPOKEN_SECONDS = speech_duration("Hello there.")
#: The names PyAV's decoders report for each chat format.
DECODERS = {
    "wav": {"pcm_s16le"},
    "pcm16": {"pcm_s16le"},
    "mp3": {"mp3", "mp3float"},
    "aac": {"aac"},
    "flac": {"flac"},
    "opus": {"opus", "libopus"},
}


def _with(**changes: Any) -> dict[str, Any]:
    body = {**GOOD, **changes}
    return {k: v for k, v in body.items() if v is not _DROP}


def _user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def _events(body: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded except ``[DONE]``."""
    assert body.endswith("\n\n")
    events: list[Any] = []
    for block in body.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def _fragments(events: list[Any]) -> list[str]:
    return [
        e["choices"][0]["delta"]["audio"]["data"]
        for e in events
        if isinstance(e, dict)
        and e.get("choices")
        and "data" in e["choices"][0]["delta"].get("audio", {})
    ]


class _Chunked(httpx.AsyncByteStream):
    """A CDN body that arrives in the given pieces, then optionally breaks."""

    def __init__(self, pieces: list[bytes], fail: bool = False) -> None:
        self.pieces = pieces
        self.fail = fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        if self.fail:
            raise httpx.ReadError("connection reset by peer")


# -- the spoken text ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "spoken"),
    [
        (_user("Plain string."), "Plain string."),
        (
            _user([{"type": "text", "text": "First part."}, {"type": "text", "text": "Second."}]),
            "First part.\nSecond.",
        ),
        (
            _user(
                [
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "text", "text": "Only text is spoken."},
                    {"type": "text", "text": ""},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                ]
            ),
            "Only text is spoken.",
        ),
        (
            [
                {"role": "system", "content": "You are a narrator."},
                {"role": "user", "content": "Earlier question."},
                {"role": "assistant", "content": "Earlier answer."},
                {"role": "user", "content": "The last one."},
                {"role": "assistant", "content": None, "audio": {"id": "audio_1"}},
            ],
            "The last one.",
        ),
        (
            [
                {"role": "developer", "content": "Speak slowly."},
                {"role": "user", "content": [{"type": "text", "text": " Spaces kept. "}]},
            ],
            " Spaces kept. ",
        ),
    ],
)
async def test_the_last_user_message_is_spoken_and_transcribed(
    shim: Any, upstream: MockUpstream, messages: list[dict[str, Any]], spoken: str
) -> None:
    response = await shim().post("/v1/chat/completions", json=_with(messages=messages))

    assert response.status_code == 200, response.text
    assert sent_bodies(upstream)[0]["text"] == spoken
    assert response.json()["choices"][0]["message"]["audio"]["transcript"] == spoken


# -- the non-streamed answer ----------------------------------------------------------


async def test_the_completion_has_openais_audio_shape(shim: Any, upstream: MockUpstream) -> None:
    response = await shim().post("/v1/chat/completions", json=GOOD)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    completion = response.json()
    assert completion["id"].startswith("chatcmpl-")
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "tts-1-hd"
    assert isinstance(completion["created"], int)
    [choice] = completion["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] is None
    assert message["refusal"] is None
    audio = message["audio"]
    assert set(audio) == {"id", "expires_at", "data", "transcript"}
    assert audio["id"].startswith("audio_")
    assert audio["expires_at"] == completion["created"] + AUDIO_LIFETIME
    assert audio["transcript"] == "Hello there."
    decoded = decode_audio(base64.b64decode(audio["data"], validate=True), "wav")
    assert decoded.codec == "pcm_s16le"
    assert decoded.seconds == pytest.approx(SPOKEN_SECONDS, abs=0.01)


async def test_usage_counts_the_characters_spoken(shim: Any) -> None:
    text = "Twenty-six characters ok."
    response = await shim().post("/v1/chat/completions", json=_with(messages=_user(text)))

    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == len(text)
    assert usage["completion_tokens"] == 0
    assert usage["total_tokens"] == len(text)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["audio_tokens"] == 0


@pytest.mark.parametrize("model", ["tts-1", "openai/tts-1", "gpt-4o-mini-tts"])
async def test_the_model_is_echoed_as_sent_and_sent_upstream_prefixed(
    shim: Any, upstream: MockUpstream, model: str
) -> None:
    response = await shim().post("/v1/chat/completions", json=_with(model=model))

    assert response.json()["model"] == model
    assert sent_bodies(upstream)[0]["model"] == "openai/" + model.removeprefix("openai/")


async def test_the_upstream_body_carries_voice_and_format(
    shim: Any, upstream: MockUpstream
) -> None:
    await shim().post("/v1/chat/completions", json=_with(audio={"voice": "sage", "format": "flac"}))

    assert sent_bodies(upstream) == [
        {
            "model": "openai/tts-1-hd",
            "text": "Hello there.",
            "voice": "sage",
            "response_format": "flac",
        }
    ]


@pytest.mark.parametrize("fmt", list(CHAT_FORMATS))
async def test_every_chat_format_is_real_audio(shim: Any, upstream: MockUpstream, fmt: str) -> None:
    # The CDN serves WAV, so every other format goes through the transcoder.
    upstream.scenario([{"route": "audio", "audio_format": "wav"}])
    response = await shim().post(
        "/v1/chat/completions", json=_with(audio={"voice": "alloy", "format": fmt})
    )

    assert response.status_code == 200, response.text
    assert sent_bodies(upstream)[0]["response_format"] == CHAT_FORMATS[fmt]
    data = base64.b64decode(response.json()["choices"][0]["message"]["audio"]["data"])
    decoded = decode_audio(data, CHAT_FORMATS[fmt])
    assert decoded.codec in DECODERS[fmt]
    assert decoded.seconds == pytest.approx(SPOKEN_SECONDS, abs=0.1)
    if fmt == "pcm16":
        assert not data.startswith(b"RIFF")
        assert len(data) % 2 == 0


async def test_the_plain_shape_uses_the_documented_defaults(
    shim: Any, upstream: MockUpstream
) -> None:
    response = await shim().post("/v1/chat/completions", json={"model": "tts-1", "messages": USER})

    assert response.status_code == 200
    body = sent_bodies(upstream)[0]
    assert body["voice"] == "alloy"
    assert body["response_format"] == "wav"
    data = base64.b64decode(response.json()["choices"][0]["message"]["audio"]["data"])
    assert data.startswith(b"RIFF")


@pytest.mark.parametrize(
    "audio",
    [None, {}, {"voice": "echo"}, {"format": "mp3"}],
)
async def test_a_partial_audio_object_fills_in_defaults(
    shim: Any, upstream: MockUpstream, audio: Any
) -> None:
    response = await shim().post("/v1/chat/completions", json=_with(audio=audio))

    assert response.status_code == 200
    body = sent_bodies(upstream)[0]
    assert body["voice"] == (audio or {}).get("voice", "alloy")
    assert body["response_format"] == (audio or {}).get("format", "wav")


async def test_chat_fields_the_shim_does_not_use_are_ignored(
    shim: Any, upstream: MockUpstream
) -> None:
    body = _with(
        messages=[{"role": "system", "content": "Be terse."}, *USER],
        temperature=0.2,
        top_p=0.9,
        max_tokens=5,
        max_completion_tokens=5,
        n=1,
        seed=7,
        stop=["\n"],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        tool_choice="auto",
        user="someone",
        metadata={"k": "v"},
        stream=False,
        stream_options={"include_usage": "not looked at"},
        response_format={"type": "text"},
    )
    response = await shim().post("/v1/chat/completions", json=body)

    assert response.status_code == 200, response.text
    assert set(sent_bodies(upstream)[0]) == {"model", "text", "voice", "response_format"}


# -- the streamed answer --------------------------------------------------------------


async def test_the_stream_is_role_transcript_audio_stop_usage_done(
    shim: Any, upstream: MockUpstream
) -> None:
    body = _with(stream=True, stream_options={"include_usage": True})
    response = await shim().post("/v1/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"tts-1-hd"}

    role, transcript, *audio, expiry, stop, usage = chunks
    assert role["choices"][0]["delta"]["role"] == "assistant"
    spoken = transcript["choices"][0]["delta"]["audio"]
    assert spoken["transcript"] == "Hello there."
    assert spoken["id"].startswith("audio_")
    assert audio
    for chunk in audio:
        assert set(chunk["choices"][0]["delta"]["audio"]) == {"data"}
        assert chunk["choices"][0]["finish_reason"] is None
    assert expiry["choices"][0]["delta"] == {
        "audio": {"expires_at": chunks[0]["created"] + AUDIO_LIFETIME}
    }
    assert stop["choices"][0]["finish_reason"] == "stop"
    assert stop["choices"][0]["delta"] == {}
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == len("Hello there.")
    assert all(c["usage"] is None for c in chunks[:-1])

    data = b"".join(base64.b64decode(f, validate=True) for f in _fragments(events))
    assert decode_audio(data, "wav").seconds == pytest.approx(SPOKEN_SECONDS, abs=0.01)


async def test_without_include_usage_there_is_no_usage_chunk(shim: Any) -> None:
    for options in (None, {"include_usage": False}):
        body = _with(stream=True, stream_options=options)
        events = _events((await shim().post("/v1/chat/completions", json=body)).text)

        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "stop"
        assert all("usage" not in e for e in events[:-1])
        assert all(e["choices"] for e in events[:-1])


async def test_audio_is_re_cut_into_whole_base64_fragments_of_whole_samples() -> None:
    audio = bytes(range(256)) * 30
    # Odd sizes, so fragments must be re-cut to stay whole base64 and whole samples.
    pieces = [audio[:1000], audio[1000:1001], audio[1001:5003], audio[5003:]]

    async def download() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    recut = [piece async for piece in _whole_samples(download())]
    fragments = [base64.b64encode(piece).decode() for piece in recut]

    assert len(fragments) >= 3  # passed on as it came, not one buffered blob
    assert b"".join(recut) == audio
    assert all(len(piece) % FRAGMENT_ALIGNMENT == 0 for piece in recut[:-1])
    assert all(len(piece) % 2 == 0 for piece in recut[:-1])  # whole 16-bit samples
    # Every fragment but the last is padding-free, so joining the strings works too.
    assert all("=" not in f for f in fragments[:-1])
    assert base64.b64decode("".join(fragments), validate=True) == audio


async def test_pcm16_streams_raw_samples(shim: Any, upstream: MockUpstream) -> None:
    body = _with(stream=True, audio={"voice": "verse", "format": "pcm16"})

    response = await shim().post("/v1/chat/completions", json=body)

    assert sent_bodies(upstream)[0]["response_format"] == "pcm"
    data = b"".join(base64.b64decode(f) for f in _fragments(_events(response.text)))
    assert not data.startswith(b"RIFF")
    assert len(data) == round(SPOKEN_SECONDS * 24_000) * 2  # 24 kHz s16 mono, no header


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "aac"])
async def test_streamed_transcoded_audio_decodes(
    shim: Any, upstream: MockUpstream, fmt: str
) -> None:
    upstream.scenario([{"route": "audio", "audio_format": "wav"}])
    body = _with(stream=True, audio={"voice": "nova", "format": fmt})

    response = await shim().post("/v1/chat/completions", json=body)

    fragments = _fragments(_events(response.text))
    data = b"".join(base64.b64decode(f, validate=True) for f in fragments)
    decoded = decode_audio(data, fmt)
    assert decoded.codec in DECODERS[fmt]
    assert decoded.seconds == pytest.approx(SPOKEN_SECONDS, abs=0.1)


def test_a_download_that_breaks_mid_stream_ends_with_an_error_event(
    tts_shim: ShimServer, tts_mock: MockUpstream
) -> None:
    # On real sockets: in process, httpx's ASGITransport reads a reply whole first.
    # Cut every time: the first download and both resumptions (--audio-retries 2).
    tts_mock.scenario([{"route": "audio", "fault": "truncated", "times": 3}])
    lines: list[str] = []
    with (
        pytest.raises(httpx.HTTPError),
        httpx.stream(
            "POST",
            tts_shim.base_url + "/chat/completions",
            json=_with(stream=True),
            headers={"authorization": "Bearer sk-client"},
        ) as response,
    ):
        lines.extend(response.iter_lines())

    events = _events("".join(line + "\n" for line in lines))
    fragments = _fragments(events)
    # What had arrived was sent before the failure: the answer is not buffered.
    assert fragments
    assert events[-1]["error"]["type"] == "server_error"
    assert "[DONE]" not in events
    assert not any(
        e.get("choices") and e["choices"][0]["finish_reason"] == "stop"
        for e in events
        if isinstance(e, dict)
    )


# -- errors behave as for speech -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "This request requires a valid API key."),
        (403, "You've run out of credits."),
        (400, "Body validation error!"),
        (503, "Service unavailable"),
    ],
)
async def test_upstream_errors_match_the_speech_route(
    shim: Any, upstream: MockUpstream, status: int, message: str
) -> None:
    client = shim(tts_retries=0)
    upstream.scenario([{"status": status, "message": message, "times": 2}])
    speech = await client.post(
        "/v1/audio/speech", json={"model": "tts-1-hd", "input": "Hello there.", "voice": "coral"}
    )
    chat = await client.post("/v1/chat/completions", json=GOOD)

    assert chat.status_code == speech.status_code == status
    assert chat.json() == speech.json()
    assert chat.headers.get("x-should-retry") == speech.headers.get("x-should-retry")


@pytest.mark.parametrize("stream", [False, True])
async def test_the_upstream_request_id_is_passed_on(
    shim: Any, upstream: MockUpstream, stream: bool
) -> None:
    upstream.scenario([{"headers": {"x-request-id": "up-123"}}])

    response = await shim().post("/v1/chat/completions", json=_with(stream=stream))

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "up-123"


async def test_a_whole_answer_has_a_lower_audio_cap_than_a_stream(shim: Any) -> None:
    client = shim(max_chat_audio_bytes=10_000)

    whole = await client.post("/v1/chat/completions", json=GOOD)
    streamed = await client.post("/v1/chat/completions", json=_with(stream=True))

    assert whole.status_code == 502
    assert whole.json()["error"]["code"] == "audio_too_large"
    assert "stream" in whole.json()["error"]["message"]
    assert streamed.status_code == 200
    assert len(b"".join(base64.b64decode(f) for f in _fragments(_events(streamed.text)))) > 10_000


#: Long enough for the audio to arrive in many reads, so there are many fragments.
_LONG = "Streamed audio comes in fragments, and a player may use each as it arrives. " * 4


def _streamed_fragments(response: httpx.Response) -> list[bytes]:
    fragments = [base64.b64decode(f, validate=True) for f in _fragments(_events(response.text))]
    assert len(fragments) >= 3, "expected the audio in several fragments"
    return fragments


def _decodes_alone(fragment: bytes, fmt: str) -> bool:
    try:
        return decode_audio(fragment, fmt).frames > 0
    except Exception:  # PyAV's errors: not decodable on its own
        return False


async def test_every_pcm16_fragment_holds_whole_samples(shim: Any) -> None:
    body = _with(stream=True, audio={"voice": "verse", "format": "pcm16"}, messages=_user(_LONG))

    fragments = _streamed_fragments(await shim().post("/v1/chat/completions", json=body))

    # As a player would: each fragment straight into samples as it arrives.
    samples = [np.frombuffer(fragment, np.int16) for fragment in fragments]
    assert sum(len(s) for s in samples) == round(speech_duration(_LONG) * 24_000)
    joined = np.concatenate(samples).astype(np.float64) / 32768
    expected = decode_audio(b"".join(fragments), "pcm16", samples=True).samples
    assert expected is not None
    assert np.array_equal(joined, expected)


async def test_wav_fragments_after_the_header_hold_whole_samples(shim: Any) -> None:
    body = _with(stream=True, audio={"voice": "verse", "format": "wav"}, messages=_user(_LONG))

    fragments = _streamed_fragments(await shim().post("/v1/chat/completions", json=body))

    assert fragments[0].startswith(b"RIFF")
    assert all(len(fragment) % 2 == 0 for fragment in fragments[:-1])
    assert _decodes_alone(fragments[0], "wav")


@pytest.mark.parametrize("fmt", list(CHAT_FORMATS))
async def test_streamed_fragments_join_into_the_whole_audio(shim: Any, fmt: str) -> None:
    body = _with(stream=True, audio={"voice": "verse", "format": fmt}, messages=_user(_LONG))

    fragments = _streamed_fragments(await shim().post("/v1/chat/completions", json=body))

    assert all(len(fragment) % FRAGMENT_ALIGNMENT == 0 for fragment in fragments[:-1])
    decoded = decode_audio(b"".join(fragments), fmt)
    assert decoded.codec in DECODERS[fmt]
    assert decoded.seconds == pytest.approx(speech_duration(_LONG), abs=0.1)
