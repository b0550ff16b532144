"""OpenAI side, streamed speech: ``with_streaming_response`` against ``.content``, SSE,
and a relay that really streams (first bytes early, download stopped when the client goes).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest

from contract_tests.conftest import LIVE_TEXT, SDK, decode
from mockserver.audio import speech_duration
from shim.testing import ShimServer

TEXT = "The quick brown fox jumps over the lazy dog."


async def _stream_to_file(sdk: SDK, path: Path, **params: Any) -> dict[str, str]:
    """``with_streaming_response.create(...)`` then ``stream_to_file``, sync or async;
    returns the reply's headers."""
    manager = sdk.method("audio.speech.with_streaming_response.create")(**params)
    if sdk.kind == "sync":
        with manager as response:
            response.stream_to_file(path)
            return dict(response.headers)
    async with manager as response:
        await response.stream_to_file(path)
        return dict(response.headers)


async def _iter_bytes(sdk: SDK, **params: Any) -> list[bytes]:
    manager = sdk.method("audio.speech.with_streaming_response.create")(**params)
    if sdk.kind == "sync":
        with manager as response:
            return list(response.iter_bytes())
    async with manager as response:
        return [chunk async for chunk in response.iter_bytes()]


async def _sse_lines(sdk: SDK, **params: Any) -> tuple[str, list[str]]:
    manager = sdk.method("audio.speech.with_streaming_response.create")(**params)
    if sdk.kind == "sync":
        with manager as response:
            return response.headers["content-type"], [ln for ln in response.iter_lines() if ln]
    async with manager as response:
        lines = [line async for line in response.iter_lines() if line]
        return response.headers["content-type"], lines


def _sse_audio(lines: list[str]) -> tuple[bytes, dict[str, Any]]:
    """The audio carried by SSE speech events, and the final event; checks the framing."""
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert events[:-1]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    assert events[-1]["type"] == "speech.audio.done"
    return b"".join(base64.b64decode(e["audio"], validate=True) for e in events[:-1]), events[-1]


@pytest.mark.live(billed=1)
async def test_with_streaming_response_writes_playable_audio(sdk: SDK, tmp_path: Path) -> None:
    path = tmp_path / "speech.mp3"
    headers = await _stream_to_file(
        sdk, path, model="tts-1-hd", voice="coral", input=LIVE_TEXT, response_format="mp3"
    )

    assert headers["content-type"] == "audio/mpeg"
    assert "content-length" not in headers
    codec, rate, seconds = decode(path.read_bytes(), "mp3")
    assert codec.startswith("mp3")
    assert rate == 24_000
    assert seconds > 0


@pytest.mark.live(billed=1)
async def test_sse_stream_format_carries_the_audio_and_usage(sdk: SDK) -> None:
    content_type, lines = await _sse_lines(
        sdk,
        model="tts-1-hd",
        voice="alloy",
        input=LIVE_TEXT,
        response_format="wav",
        stream_format="sse",
    )

    assert content_type.startswith("text/event-stream")
    audio, done = _sse_audio(lines)
    assert done["usage"]["input_tokens"] == len(LIVE_TEXT)
    assert done["usage"]["total_tokens"] >= done["usage"]["input_tokens"]
    assert decode(audio, "wav")[2] > 0


async def test_streamed_and_buffered_replies_are_the_same_bytes(sdk: SDK) -> None:
    # The mock gives the same bytes for the same request, so any difference is the relay's.
    params = {"model": "tts-1-hd", "voice": "fable", "input": TEXT, "response_format": "flac"}
    buffered = await sdk.speech(**params)
    chunks = await _iter_bytes(sdk, **params)

    assert chunks
    assert b"".join(chunks) == buffered
    assert decode(buffered, "flac")[2] == pytest.approx(speech_duration(TEXT), abs=0.15)


async def test_sse_audio_decodes_at_the_right_length(sdk: SDK) -> None:
    _, lines = await _sse_lines(
        sdk, model="tts-1-hd", voice="alloy", input=TEXT, response_format="wav", stream_format="sse"
    )

    audio, done = _sse_audio(lines)
    assert done["usage"] == {
        "input_tokens": len(TEXT),
        "output_tokens": 0,
        "total_tokens": len(TEXT),
    }
    assert decode(audio, "wav")[2] == pytest.approx(speech_duration(TEXT), abs=0.15)


async def test_first_audio_arrives_early_and_a_client_leaving_stops_the_download(
    tts_shim: ShimServer,
) -> None:
    # The CDN dribbles the audio out over a minute. A relay that buffered the file could
    # not hand over a first chunk before then, and the client's 20 s read timeout would
    # fire; one that kept downloading after the client left would keep its stream open.
    tts_shim.upstream.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 60_000}])
    stats = tts_shim.app.state.shim.upstream.stats  # type: ignore[attr-defined]
    client = openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-x", max_retries=0, timeout=20.0)

    with client.audio.speech.with_streaming_response.create(
        model="tts-1-hd", voice="alloy", input=TEXT, response_format="wav"
    ) as response:
        # Hold on to the iterator: a throwaway ``next(response.iter_bytes())`` is
        # collected at once, and closing it closes the connection, so the client
        # would already have left when the counter is read.
        chunks = response.iter_bytes()
        first = next(chunks)
        assert stats.open_streams >= 1  # ours, while we hold the response open
        chunks.close()  # now leave, mid-stream
    client.close()

    assert first.startswith(b"RIFF")
    # The shim runs in another thread, so poll its counter (bounded by fail_after).
    with anyio.fail_after(10):
        while stats.open_streams:  # noqa: ASYNC110
            await anyio.sleep(0.02)
