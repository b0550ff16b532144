"""Whole files: WAV and FLAC with their real sizes when all the audio is in hand
(non-streamed chat), the streaming header when streamed; SSE is never cached."""

from __future__ import annotations

import base64
import io
import json
import struct
import wave
from typing import Any

import av
import pytest

from mockserver.audio import iter_encoded
from shim.errors import APIError
from shim.wholefile import whole_file, whole_file_sync

#: Two seconds and a few samples of the mock's voice, at 24 kHz.
SAMPLES = 2 * 24_000 + 7
STREAMING_SIZE = 0xFFFFFFFF


def _streamed(fmt: str) -> bytes:
    return b"".join(iter_encoded("alloy", SAMPLES, fmt))


def _pcm(data: bytes) -> bytes:
    """Every sample, decoded, as raw s16le bytes."""
    with av.open(io.BytesIO(data)) as container:
        return b"".join(bytes(frame.planes[0])[: frame.samples * 2] for frame in container.decode())


def _flac_total_samples(data: bytes) -> int | None:
    """STREAMINFO's total-samples count as FFmpeg reads it (``None``: unknown)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return None if stream.duration is None else int(stream.duration)


def test_a_whole_wav_gets_its_real_sizes() -> None:
    streamed = _streamed("wav")
    assert struct.unpack("<I", streamed[4:8])[0] == STREAMING_SIZE  # the mock streams it

    whole = whole_file_sync(streamed, "wav")

    assert struct.unpack("<4sI", whole[:8]) == (b"RIFF", len(whole) - 8)
    assert struct.unpack("<4sI", whole[36:44]) == (b"data", len(whole) - 44)
    with wave.open(io.BytesIO(whole)) as reader:
        assert reader.getnframes() == SAMPLES
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (
            24_000,
            1,
            2,
        )
    assert whole[44:] == streamed[44:]  # the same samples, byte for byte
    assert whole[8:36] == streamed[8:36]  # and the same format chunk


def test_a_whole_flac_gets_its_total_samples() -> None:
    streamed = _streamed("flac")
    assert _flac_total_samples(streamed) is None  # streamed: 0, "unknown"

    whole = whole_file_sync(streamed, "flac")

    assert whole[:4] == b"fLaC"
    assert _flac_total_samples(whole) == SAMPLES
    assert _pcm(whole) == _pcm(streamed)  # lossless: the same samples


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "pcm"])
def test_formats_without_a_length_in_the_header_are_left_alone(fmt: str) -> None:
    data = b"not even audio"
    assert whole_file_sync(data, fmt) is data


async def test_audio_ffmpeg_cannot_read_is_a_502() -> None:
    with pytest.raises(APIError) as caught:
        await whole_file(b"RIFF" + b"\x00" * 200, "wav", "req-up-1")

    assert caught.value.status == 502
    assert caught.value.code == "bad_upstream_audio"


# -- through the shim -------------------------------------------------------------------


def _chat(fmt: str, **more: Any) -> dict[str, Any]:
    return {
        "model": "tts-1",
        "audio": {"voice": "coral", "format": fmt},
        "messages": [{"role": "user", "content": "The whole file, sizes and all."}],
        **more,
    }


async def test_a_plain_chat_wav_has_real_sizes(shim: Any) -> None:
    response = await shim().post("/v1/chat/completions", json=_chat("wav"))

    data = base64.b64decode(response.json()["choices"][0]["message"]["audio"]["data"])
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getnframes() == (len(data) - 44) // 2
        assert reader.getnframes() == len(_pcm(data)) // 2


async def test_a_plain_chat_flac_has_its_total_samples(shim: Any) -> None:
    response = await shim().post("/v1/chat/completions", json=_chat("flac"))

    data = base64.b64decode(response.json()["choices"][0]["message"]["audio"]["data"])
    assert _flac_total_samples(data) == len(_pcm(data)) // 2


async def test_a_streamed_chat_wav_keeps_the_streaming_header(shim: Any) -> None:
    response = await shim().post("/v1/chat/completions", json=_chat("wav", stream=True))

    fragments = [
        line.removeprefix("data: ") for line in response.text.splitlines() if '"data":"' in line
    ]
    data = b"".join(
        base64.b64decode(json.loads(f)["choices"][0]["delta"]["audio"]["data"]) for f in fragments
    )
    assert struct.unpack("<4sI", data[:8]) == (b"RIFF", STREAMING_SIZE)
    assert response.headers["cache-control"] == "no-cache"


async def test_speech_wav_keeps_the_streaming_header(shim: Any) -> None:
    body = {"model": "tts-1", "input": "Streamed.", "response_format": "wav"}
    response = await shim().post("/v1/audio/speech", json=body)

    assert struct.unpack("<4sI", response.content[:8]) == (b"RIFF", STREAMING_SIZE)
    assert "cache-control" not in response.headers


async def test_speech_sse_is_not_cached(shim: Any) -> None:
    body = {"model": "tts-1", "input": "Events.", "stream_format": "sse"}
    response = await shim().post("/v1/audio/speech", json=body)

    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
