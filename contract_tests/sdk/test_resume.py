"""OpenAI side, cut downloads: the SDK gets whole audio, and nothing is paid twice.

A CDN download that breaks off after audio reached the client is resumed from the same
link (a ``Range`` request, or the whole file again with the bytes already sent
skipped where the CDN ignores ``Range``); the pieces of a split request that were paid
for are finished into the cache even when the request fails, so the SDK's own retry
pays only for what was never generated. Generations are counted in the mock's journal.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from contract_tests.conftest import SDK, decode
from mockserver.audio import speech_duration
from shim.split import split_text
from shim.testing import MockUpstream, ShimServer
from tests.figures import record

TEXT = "A download cut in the middle is picked up where it stopped, and nobody hears it. " * 2
#: The issue's measured case: about 1,100 characters, split into pieces.
LONG = (
    "The committee met on a grey morning to settle the budget, and every member had a view. " * 13
)[:1100]
#: The mock CDN sends this much of a download, then drops the connection.
CUT_AFTER = 30_000


def cut(times: int = 1, after: int = CUT_AFTER) -> dict[str, Any]:
    return {"route": "audio", "fault": "cut", "cut_after": after, "times": times}


def generations(mock: MockUpstream) -> int:
    """The ``POST /v1/tts`` calls the mock answered with success: generations billed."""
    return sum(e["route"] == "tts" and 200 <= (e["status"] or 0) < 300 for e in mock.journal)


async def _speech(sdk: SDK, text: str) -> bytes:
    return await sdk.speech(input=text, response_format="mp3")


async def _speech_streamed(sdk: SDK, text: str) -> bytes:
    method = sdk.method("audio.speech.with_streaming_response.create")
    params = {"model": "tts-1-hd", "voice": "coral", "input": text, "response_format": "mp3"}
    if sdk.kind == "sync":
        with method(**params) as response:
            return b"".join(response.iter_bytes())
    async with method(**params) as response:
        return b"".join([chunk async for chunk in response.iter_bytes()])


def _chat_params(text: str, fmt: str) -> dict[str, Any]:
    return {
        "model": "tts-1-hd",
        "modalities": ["text", "audio"],
        "audio": {"voice": "coral", "format": fmt},
        "messages": [{"role": "user", "content": text}],
    }


async def _chat_whole(sdk: SDK, text: str) -> bytes:
    completion = await sdk.call("chat.completions.create", **_chat_params(text, "wav"))
    return base64.b64decode(completion.choices[0].message.audio.data)


async def _chat_streamed(sdk: SDK, text: str) -> bytes:
    stream = await sdk.call("chat.completions.create", stream=True, **_chat_params(text, "pcm16"))
    chunks = list(stream) if sdk.kind == "sync" else [chunk async for chunk in stream]
    data = b""
    for chunk in chunks:
        audio = getattr(chunk.choices[0].delta, "audio", None) if chunk.choices else None
        fragment = audio.get("data") if isinstance(audio, dict) else getattr(audio, "data", None)
        data += base64.b64decode(fragment or "")
    return data


#: How the client reads the audio -> (the call, the format it gets).
READS: dict[str, tuple[Callable[[SDK, str], Any], str]] = {
    "speech": (_speech, "mp3"),
    "speech-streamed": (_speech_streamed, "mp3"),
    "chat-whole": (_chat_whole, "wav"),
    "chat-streamed": (_chat_streamed, "pcm16"),
}
RESUMED: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def _report() -> Any:
    yield
    if RESUMED:
        record("resume", cases=len(RESUMED), results=RESUMED)


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
@pytest.mark.parametrize("read", list(READS))
async def test_one_cut_is_resumed_into_complete_audio(
    sdk: SDK, tts_mock: MockUpstream, read: str, ranges: bool
) -> None:
    tts_mock.scenario([cut(), *([] if ranges else [{"route": "audio", "ignore_range": True}])])
    call, fmt = READS[read]

    audio = await call(sdk, TEXT)

    _, _, seconds = decode(audio, fmt)
    assert seconds == pytest.approx(speech_duration(TEXT), abs=0.15)
    assert generations(tts_mock) == 1  # nothing generated twice
    first, again = tts_mock.downloads
    assert again["path"] == first["path"]  # the same link, picked up where it stopped
    assert again["headers"]["range"] == f"bytes={CUT_AFTER}-"
    assert again["status"] == (206 if ranges else 200)
    RESUMED.append({"read": read, "range": ranges, "generations": generations(tts_mock)})


@pytest.fixture
def cached_shim(tts_shim_factory: Callable[..., ShimServer], tmp_path: Path) -> ShimServer:
    return tts_shim_factory(cache=True, cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_failed_split_request_retried_pays_once_per_piece(
    cached_shim: ShimServer, tts_mock: MockUpstream, kind: str
) -> None:
    pieces = split_text(LONG)
    assert len(pieces) == 3
    # The first piece's download is cut every time it is tried (once and resumed
    # twice: --audio-retries 2), so the first request fails after its audio began; the
    # SDK's retry (max_retries=2) comes after.
    tts_mock.scenario([cut(times=3)])
    sdk = SDK(kind, cached_shim, max_retries=2)
    try:
        audio = await _speech(sdk, LONG)
    finally:
        await sdk.aclose()

    _, _, seconds = decode(audio, "mp3")
    assert seconds == pytest.approx(sum(map(speech_duration, pieces)), abs=0.3)
    speech = [e for e in tts_mock.journal if e["route"] == "tts"]
    assert generations(tts_mock) == len(speech) == len(pieces)  # no piece paid twice
    assert sorted(e["json"]["text"] for e in speech) == sorted(pieces)
    cuts = [e for e in tts_mock.downloads if e["step"] is not None]
    assert len(cuts) == 3  # the first request did fail
    record("resume-split", pieces=len(pieces), generations=generations(tts_mock))


async def test_without_a_cache_a_failed_split_request_cannot_keep_its_pieces(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream
) -> None:
    # Nowhere to keep what was paid for: the retry pays again (the figure to compare).
    shim = tts_shim_factory()
    tts_mock.scenario([cut(times=3)])
    sdk = SDK("sync", shim, max_retries=1)
    try:
        audio = await _speech(sdk, LONG)
    finally:
        await sdk.aclose()

    assert decode(audio, "mp3")[2] > 60
    assert generations(tts_mock) == 6


async def test_a_cut_that_persists_fails_the_sdk_call(sdk: SDK, tts_mock: MockUpstream) -> None:
    # Three cuts of 10 kB: the audio (about 90 kB) is never all sent.
    tts_mock.scenario([cut(times=3, after=10_000)])

    with pytest.raises(openai.APIConnectionError):
        await _speech(sdk, TEXT)
    assert generations(tts_mock) == 1
    assert len(tts_mock.downloads) == 3  # the first download and two resumptions
