"""``/v1/audio/speech``: validation, field mapping, formats and the SSE form."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mockserver import speech_duration
from shim.catalog import FORMATS
from shim.testing import MockUpstream, decode_audio
from tests.shim.conftest import sent_bodies

GOOD = {"model": "tts-1-hd", "input": "Hello there.", "voice": "coral"}


def _with(**changes: Any) -> dict[str, Any]:
    body = {**GOOD, **changes}
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (_with(input=_DROP), 400, "input", None),
        (_with(input=""), 400, "input", "empty_string"),
        (_with(input="   "), 400, "input", "empty_string"),
        (_with(input=42), 400, "input", None),
        (_with(input="x" * 4097), 400, "input", "string_above_max_length"),
        (_with(voice="bob"), 400, "voice", None),
        (_with(voice="marin"), 400, "voice", None),
        (_with(voice={"id": "voice_123"}), 400, "voice", None),
        (_with(voice=["alloy"]), 400, "voice", None),
        (_with(response_format="ogg"), 400, "response_format", None),
        (_with(response_format=None), 400, "response_format", None),
        (_with(speed=0.24), 400, "speed", None),
        (_with(speed=4.01), 400, "speed", None),
        (_with(speed="fast"), 400, "speed", None),
        (_with(speed=True), 400, "speed", None),
        (_with(instructions=7), 400, "instructions", None),
        (_with(instructions="x" * 4097), 400, "instructions", "string_above_max_length"),
        (_with(stream_format="chunks"), 400, "stream_format", None),
        (_with(model=_DROP), 400, "model", None),
        (_with(model=3), 400, "model", None),
        (_with(model="gpt-4o"), 404, "model", "model_not_found"),
        (_with(model="openai/whisper-1"), 404, "model", "model_not_found"),
    ],
)
async def test_invalid_requests_get_an_envelope_and_never_reach_upstream(
    shim: Any, upstream: MockUpstream, body: dict[str, Any], status: int, param: str, code: Any
) -> None:
    response = await shim().post("/v1/audio/speech", json=body)

    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-request-id"].startswith("req_")
    assert upstream.journal == []


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b"{not json", "could not parse"),
        (b"\xff\xfe\x00", "UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"null", "JSON object"),
    ],
)
async def test_bodies_that_are_not_objects(
    shim: Any, upstream: MockUpstream, content: bytes, fragment: str
) -> None:
    response = await shim().post(
        "/v1/audio/speech", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]
    assert response.json()["error"]["param"] is None
    assert upstream.journal == []


@pytest.mark.parametrize("literal", [b"1e999", b"-1e999", b"NaN", b"Infinity"])
async def test_non_finite_speed_is_rejected(
    shim: Any, upstream: MockUpstream, literal: bytes
) -> None:
    # Python's JSON parser accepts these; OpenAI's server would not.
    content = b'{"model": "tts-1", "input": "x", "speed": ' + literal + b"}"
    response = await shim().post(
        "/v1/audio/speech", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "speed"
    assert upstream.journal == []


async def test_boundaries_are_accepted(shim: Any, upstream: MockUpstream) -> None:
    client = shim()
    for body in (
        _with(input="x" * 4096),
        _with(input="x"),
        _with(speed=0.25),
        _with(speed=4),
        _with(instructions="x" * 4096),
    ):
        response = await client.post("/v1/audio/speech", json=body)
        assert response.status_code == 200, response.text
    assert len(sent_bodies(upstream)) == 5


async def test_fields_map_to_the_upstream_body(shim: Any, upstream: MockUpstream) -> None:
    body = {
        "model": "tts-1-hd",
        "input": "Map me.",
        "voice": "sage",
        "instructions": "Whisper.",
        "response_format": "flac",
        "speed": 1.5,
        "stream_format": "audio",
        "some_future_field": {"ignored": True},
    }
    response = await shim().post("/v1/audio/speech", json=body)

    assert response.status_code == 200
    assert sent_bodies(upstream) == [
        {
            "model": "openai/tts-1-hd",
            "text": "Map me.",
            "voice": "sage",
            "style": "Whisper.",
            "response_format": "flac",
            "speed": 1.5,
        }
    ]


async def test_omitted_fields_take_documented_defaults(shim: Any, upstream: MockUpstream) -> None:
    response = await shim().post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert sent_bodies(upstream) == [
        {"model": "openai/tts-1", "text": "Hi", "voice": "alloy", "response_format": "mp3"}
    ]


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "openai/tts-1-hd"])
async def test_both_model_id_forms_are_served(
    shim: Any, upstream: MockUpstream, model: str
) -> None:
    response = await shim().post("/v1/audio/speech", json=_with(model=model))

    assert response.status_code == 200
    assert sent_bodies(upstream)[0]["model"] == "openai/" + model.removeprefix("openai/")


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_each_format_has_its_openai_content_type_and_decodes(shim: Any, fmt: str) -> None:
    response = await shim().post("/v1/audio/speech", json=_with(response_format=fmt))

    assert response.status_code == 200
    assert response.headers["content-type"] == FORMATS[fmt].content_type
    assert "content-length" not in response.headers
    audio = decode_audio(response.content, fmt)
    codecs = {"mp3": "mp3float", "opus": "opus", "aac": "aac", "flac": "flac"}
    assert audio.codec == codecs.get(fmt, "pcm_s16le")
    assert audio.seconds == pytest.approx(speech_duration(GOOD["input"]), abs=0.1)


@pytest.mark.parametrize(("sent", "asked"), [("wav", "mp3"), ("mp3", "opus"), ("aac", "flac")])
async def test_audio_in_another_format_is_transcoded(
    shim: Any, upstream: MockUpstream, sent: str, asked: str
) -> None:
    # The CDN ignores the requested format and labels its reply wrongly, too.
    step = {"route": "audio", "audio_format": sent, "headers": {"content-type": "audio/mpeg"}}
    upstream.scenario([step])
    response = await shim().post("/v1/audio/speech", json=_with(response_format=asked))

    assert response.status_code == 200
    assert response.headers["content-type"] == FORMATS[asked].content_type
    audio = decode_audio(response.content, asked)
    assert audio.codec == {"mp3": "mp3float", "opus": "opus", "flac": "flac"}[asked]
    assert audio.seconds == pytest.approx(speech_duration(GOOD["input"]), abs=0.1)


async def test_transcoding_to_wav_writes_a_streaming_header(
    shim: Any, upstream: MockUpstream
) -> None:
    upstream.scenario([{"route": "audio", "audio_format": "mp3"}])
    response = await shim().post("/v1/audio/speech", json=_with(response_format="wav"))

    header = response.content[:44]
    assert header[:4] == b"RIFF"
    assert header[8:12] == b"WAVE"
    assert header[4:8] == b"\xff\xff\xff\xff"  # sizes unknown while streaming, like OpenAI
    assert header[40:44] == b"\xff\xff\xff\xff"


async def test_sse_stream_format(shim: Any, upstream: MockUpstream) -> None:
    response = await shim().post(
        "/v1/audio/speech", json=_with(stream_format="sse", response_format="wav")
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    deltas = [p for p in payloads if p["type"] == "speech.audio.delta"]
    assert deltas
    assert payloads[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(p["audio"]) for p in deltas)
    assert decode_audio(audio, "wav").seconds == pytest.approx(speech_duration(GOOD["input"]))
    usage = payloads[-1]["usage"]
    assert usage["input_tokens"] == len(GOOD["input"])
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
