"""``/v1/audio/speech``: field mapping, formats and the SSE form (the validation rules are
unit-tested in ``test_contract.py``)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from starlette.types import Message

from mockserver import speech_duration
from mockserver.audio import encode
from shim.catalog import FORMATS
from shim.testing import MockUpstream, decode_audio
from tests.shim.conftest import inline_audio, last_response, sent_bodies

GOOD = {"model": "tts-1-hd", "input": "Hello there.", "voice": "coral"}


def _with(**changes: Any) -> dict[str, Any]:
    body = {**GOOD, **changes}
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


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


# -- framing: one chunk when the audio is in hand, a stream while it arrives ------------


def _bodies(client: httpx.AsyncClient) -> list[Message]:
    """The body messages of the response ``client`` got (chunked, either way)."""
    start, bodies = last_response(client)
    assert b"content-length" not in dict(start["headers"])
    return bodies


async def test_audio_in_hand_is_one_chunk_that_ends_the_response(
    shim: Any, upstream: MockUpstream
) -> None:
    audio = encode("nova", 12_000, "mp3")  # inline in the reply: all of it at once
    upstream.scenario([inline_audio(audio)])
    client = shim()

    response = await client.post("/v1/audio/speech", json=GOOD)

    assert response.status_code == 200
    bodies = _bodies(client)
    assert [(b["body"], b.get("more_body", False)) for b in bodies] == [(audio, False)]


async def test_audio_still_arriving_is_streamed_as_it_comes(
    shim: Any, upstream: MockUpstream
) -> None:
    # The CDN dribbles the file out: the first bytes are not all of it.
    upstream.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 200}])
    client = shim()

    response = await client.post("/v1/audio/speech", json=GOOD)

    assert response.status_code == 200
    bodies = _bodies(client)
    assert len(bodies) > 2
    assert all(b.get("more_body") for b in bodies[:-1])
    assert bodies[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    audio = decode_audio(response.content, "mp3")
    assert audio.seconds == pytest.approx(speech_duration(GOOD["input"]), abs=0.1)
