"""The one data path, in process: the cache on it (hits, misses, tenants, Cache-Control,
shared entries), and long texts split, generated ahead and stitched into one file."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mockserver import speech_duration
from mockserver.audio import encode
from shim import Config, create_app
from shim.cache.disk import _DiskWriter
from shim.catalog import FORMATS
from shim.state import State
from shim.testing import MockUpstream, decode_audio
from tests.shim.conftest import (
    generations,
    inline_audio,
    last_response,
    parse,
    sent_bodies,
    state_of,
    total,
)

SPEECH = "/v1/audio/speech"
BODY = {"model": "tts-1-hd", "input": "Pay once per sentence.", "voice": "nova"}


@pytest.fixture
def cached(shim: Any, tmp_path: Path) -> Any:
    """``cached(**config)``: a shim client with an embedded cache of its own."""
    return lambda **settings: shim(cache=True, cache_dir=str(tmp_path / "cache"), **settings)


# -- the cache ----------------------------------------------------------------------------


async def test_twenty_identical_requests_pay_once(cached: Any, upstream: MockUpstream) -> None:
    client = cached()
    answers = [await client.post(SPEECH, json=BODY) for _ in range(20)]

    assert generations(upstream) == 1
    assert {a.content for a in answers} == {answers[0].content}
    assert [a.headers["x-cache"] for a in answers] == ["MISS"] + ["HIT"] * 19
    assert decode_audio(answers[0].content, "mp3").seconds > 1


async def test_a_hit_read_in_one_chunk_ends_the_response_with_it(
    cached: Any, upstream: MockUpstream
) -> None:
    client = cached()
    await client.post(SPEECH, json=BODY)

    hit = await client.post(SPEECH, json=BODY)

    assert hit.headers["x-cache"] == "HIT"
    _, bodies = last_response(client)
    assert [(m["body"], m.get("more_body", False)) for m in bodies] == [(hit.content, False)]


async def test_storing_audio_in_hand_is_not_held_to_the_deadline(
    cached: Any, upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The generation takes most of the deadline, storing its audio the rest and more: the
    # audio, billed and in hand, must still be answered, not turned into a timeout.
    audio = encode("nova", 12_000, "mp3")
    upstream.scenario([{**inline_audio(audio), "delay_ms": 300}])
    publish = _DiskWriter._publish

    async def slow_publish(self: _DiskWriter, size: int, sha256: str) -> bool:
        await asyncio.sleep(0.4)
        return await publish(self, size, sha256)

    monkeypatch.setattr(_DiskWriter, "_publish", slow_publish)

    response = await cached(deadline=0.5).post(SPEECH, json=BODY)

    assert response.status_code == 200
    assert response.content == audio
    assert generations(upstream) == 1


async def test_concurrent_identical_requests_pay_once(cached: Any, upstream: MockUpstream) -> None:
    client = cached()
    upstream.scenario([{"delay_ms": 300}])  # the first generation takes a while

    answers = await asyncio.gather(*(client.post(SPEECH, json=BODY) for _ in range(8)))

    assert generations(upstream) == 1
    assert {a.status_code for a in answers} == {200}
    assert {a.content for a in answers} == {answers[0].content}


async def test_a_restarted_shim_still_hits(
    shim: Any, upstream: MockUpstream, tmp_path: Path
) -> None:
    first = await shim(cache=True, cache_dir=str(tmp_path)).post(SPEECH, json=BODY)
    again = await shim(cache=True, cache_dir=str(tmp_path)).post(SPEECH, json=BODY)

    assert again.headers["x-cache"] == "HIT"
    assert again.content == first.content
    assert generations(upstream) == 1


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"voice": "onyx"}, "voice"),
        ({"input": "Pay once per sentence!"}, "text, exactly"),
        ({"speed": 1.25}, "speed"),
        ({"instructions": "Whisper."}, "instructions"),
        ({"model": "tts-1"}, "model"),
        ({"response_format": "wav"}, "format"),
    ],
)
async def test_everything_that_changes_the_sound_is_in_the_key(
    cached: Any, upstream: MockUpstream, change: dict[str, Any], why: str
) -> None:
    client = cached()
    await client.post(SPEECH, json=BODY)

    other = await client.post(SPEECH, json={**BODY, **change})

    assert other.headers["x-cache"] == "MISS", why
    assert generations(upstream) == 2


async def test_pass_through_keys_do_not_share_entries(cached: Any, upstream: MockUpstream) -> None:
    client = cached()
    a = await client.post(SPEECH, json=BODY, headers={"authorization": "Bearer sk-tenant-a"})
    b = await client.post(SPEECH, json=BODY, headers={"authorization": "Bearer sk-tenant-b"})
    a_again = await client.post(SPEECH, json=BODY, headers={"authorization": "Bearer sk-tenant-a"})

    assert [r.headers["x-cache"] for r in (a, b, a_again)] == ["MISS", "MISS", "HIT"]
    assert generations(upstream) == 2


async def test_with_a_server_key_the_deployment_shares_one_cache(
    cached: Any, upstream: MockUpstream
) -> None:
    client = cached(upstream_key="sk-server-pays")
    a = await client.post(SPEECH, json=BODY, headers={"authorization": "Bearer one"})
    b = await client.post(SPEECH, json=BODY, headers={"authorization": "Bearer two"})

    assert [a.headers["x-cache"], b.headers["x-cache"]] == ["MISS", "HIT"]


async def test_cache_control_no_cache_skips_the_lookup_but_stores(
    cached: Any, upstream: MockUpstream
) -> None:
    client = cached()
    await client.post(SPEECH, json=BODY)
    fresh = await client.post(SPEECH, json=BODY, headers={"cache-control": "no-cache"})
    after = await client.post(SPEECH, json=BODY)

    assert fresh.headers["x-cache"] == "MISS"
    assert after.headers["x-cache"] == "HIT"
    assert after.content == fresh.content  # what no-cache fetched replaced the entry
    assert generations(upstream) == 2


async def test_cache_control_no_store_bypasses_the_cache(
    cached: Any, upstream: MockUpstream
) -> None:
    client = cached()
    bypass = await client.post(SPEECH, json=BODY, headers={"cache-control": "no-store"})
    later = await client.post(SPEECH, json=BODY)

    assert bypass.headers["x-cache"] == "BYPASS"
    assert later.headers["x-cache"] == "MISS"  # nothing was stored
    assert generations(upstream) == 2


async def test_without_a_cache_every_answer_says_bypass(shim: Any, upstream: MockUpstream) -> None:
    answers = [await shim().post(SPEECH, json=BODY) for _ in range(2)]

    assert [a.headers["x-cache"] for a in answers] == ["BYPASS", "BYPASS"]
    assert generations(upstream) == 2


async def test_speech_sse_and_chat_share_entries(cached: Any, upstream: MockUpstream) -> None:
    client = cached()
    plain = await client.post(SPEECH, json={**BODY, "response_format": "pcm"})
    sse = await client.post(SPEECH, json={**BODY, "response_format": "pcm", "stream_format": "sse"})
    chat = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tts-1-hd",
            "audio": {"voice": "nova", "format": "pcm16"},
            "messages": [{"role": "user", "content": BODY["input"]}],
        },
    )

    assert [r.headers["x-cache"] for r in (plain, sse, chat)] == ["MISS", "HIT", "HIT"]
    events = [json.loads(line[6:]) for line in sse.text.split("\n\n") if line[6:7] == "{"]
    streamed = b"".join(base64.b64decode(e["audio"]) for e in events if "audio" in e)
    spoken = base64.b64decode(chat.json()["choices"][0]["message"]["audio"]["data"])
    assert streamed == plain.content == spoken
    assert generations(upstream) == 1


async def test_a_failed_generation_is_not_cached(cached: Any, upstream: MockUpstream) -> None:
    client = cached(tts_retries=0)
    upstream.scenario([{"status": 500}])

    failed = await client.post(SPEECH, json=BODY)
    retried = await client.post(SPEECH, json=BODY)

    assert failed.status_code == 500
    assert retried.headers["x-cache"] == "MISS"
    assert generations(upstream) == 2


# -- long text ----------------------------------------------------------------------------

#: 20,000 characters, refused before: sentences of varied length.
LONG = " ".join(
    f"Sentence number {n} of the chapter goes on for a while, {'and on ' * (n % 7)}until it ends."
    for n in range(400)
)[:20_000]


@pytest.fixture
def short_clips(upstream: MockUpstream) -> MockUpstream:
    """The mock making at most 1 s of audio a generation, so long texts stay quick."""
    state = upstream.app.state  # type: ignore[attr-defined]
    state.config = dataclasses.replace(state.config, max_audio_seconds=1.0)
    return upstream


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_a_long_text_is_one_file_of_all_its_pieces(
    shim: Any, short_clips: MockUpstream, fmt: str
) -> None:
    response = await shim().post(SPEECH, json={**BODY, "input": LONG, "response_format": fmt})

    assert response.status_code == 200
    pieces = sent_bodies(short_clips)
    # Up to --split-parallel pieces are generated at once: they reach the mock in any order.
    texts = sorted((p["text"] for p in pieces), key=LONG.index)
    assert len(pieces) > 5
    assert "".join(texts) == LONG  # nothing lost, nothing repeated
    assert {p["response_format"] for p in pieces} == {"flac"}  # exact joins
    assert len(texts[0]) <= 300  # the first piece is short: it plays soon
    expected = sum(min(speech_duration(p["text"]), 1.0) for p in pieces)
    decoded = decode_audio(response.content, fmt)
    assert decoded.seconds == pytest.approx(expected, abs=0.05 * len(pieces))
    if fmt == "wav":
        assert response.content.count(b"RIFF") == 1


async def test_a_long_text_read_twice_pays_once_per_piece(
    cached: Any, short_clips: MockUpstream
) -> None:
    client = cached()
    body = {**BODY, "input": LONG[:6000], "response_format": "mp3"}
    first = await client.post(SPEECH, json=body)
    paid = generations(short_clips)
    again = await client.post(SPEECH, json=body)

    assert first.headers["x-cache"] == "MISS"
    assert again.headers["x-cache"] == "HIT"
    assert generations(short_clips) == paid > 1


@pytest.mark.parametrize(
    ("settings", "length", "status"),
    [
        ({"split": False}, 4096, 200),
        ({"split": False}, 4097, 400),
        ({"max_input_chars": 5000}, 5001, 400),
        ({}, 100_001, 400),
    ],
)
async def test_the_input_limit_follows_the_settings(
    shim: Any, short_clips: MockUpstream, settings: dict[str, Any], length: int, status: int
) -> None:
    text = ("Words and more words. " * 5000)[:length]
    response = await shim(**settings).post(SPEECH, json={**BODY, "input": text})

    assert response.status_code == status
    if status == 400:
        assert response.json()["error"]["code"] == "string_above_max_length"
        assert generations(short_clips) == 0


async def test_a_short_text_is_not_split(shim: Any, upstream: MockUpstream) -> None:
    await shim().post(SPEECH, json={**BODY, "input": "Short. " * 100})

    assert len(sent_bodies(upstream)) == 1
    assert sent_bodies(upstream)[0]["response_format"] == "mp3"


async def test_a_piece_that_fails_first_is_an_error_answer(
    shim: Any, short_clips: MockUpstream
) -> None:
    short_clips.scenario([{"status": 400}])
    # One piece at a time, so the failing step is the first piece's: several at once reach
    # the mock over their own connections, in any order.
    client = shim(tts_retries=0, split_parallel=1)
    response = await client.post(SPEECH, json={**BODY, "input": LONG[:6000]})

    assert response.status_code == 400


async def test_pieces_made_ahead_as_audio_replies_are_closed_when_the_text_fails(
    shim: Any, short_clips: MockUpstream
) -> None:
    # Every reply is the audio itself (opened as it arrives); the first piece's is cut
    # off mid-body, while the next one has been made ahead and is never streamed.
    short_clips.scenario(
        [
            {"shape": "binary", "fault": "truncated"},
            {"shape": "binary", "delay_ms": 0, "times": 50},
        ]
    )
    client = shim(tts_retries=0, split_parallel=1)
    body = {**BODY, "input": LONG[:6000], "response_format": "flac"}
    response = await client.post(SPEECH, json=body)
    state = state_of(client)
    for _ in range(500):
        if (state.capacity.in_flight, state.upstream.stats.open_streams) == (0, 0):
            break
        await asyncio.sleep(0.01)

    assert response.status_code == 502  # before any audio was sent
    assert response.json()["error"]["code"] == "audio_download_failed"
    assert generations(short_clips) >= 2
    assert (state.capacity.in_flight, state.upstream.stats.open_streams) == (0, 0)


# -- paid pieces kept when the request fails ----------------------------------------------

#: Three pieces: over the 1,000-character threshold.
THREE_PIECES = LONG[:1100]


@contextlib.asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, State]]:
    """A shim app whose lifespan (and so its shutdown) the test controls."""
    app = create_app(Config(max_retry_wait=0.01, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://shim", headers={"authorization": "Bearer sk-t"}
        ) as client:
            yield client, app.state.shim


async def _fail_first_piece(
    client: httpx.AsyncClient, upstream: MockUpstream, then: dict[str, Any]
) -> None:
    """Ask for :data:`THREE_PIECES` with the first piece's audio unreachable (three
    tries): the request fails before its first byte, all three pieces paid for. The
    downloads after those get ``then`` (a scenario step, for 10 of them)."""
    upstream.scenario(
        [
            {"route": "audio", "status": 500, "times": 3},
            {"route": "audio", **then, "times": 10},
        ]
    )
    failed = await client.post(SPEECH, json={**BODY, "input": THREE_PIECES})
    assert failed.status_code == 502


async def test_a_failed_split_request_keeps_its_paid_pieces_through_shutdown(
    short_clips: MockUpstream, tmp_path: Path
) -> None:
    cache = {"cache": True, "cache_dir": str(tmp_path), "upstream_url": short_clips.url}
    async with running(**cache) as (client, state):
        # The pieces' downloads take a while: still under way when the shim stops.
        await _fail_first_piece(client, short_clips, {"delay_ms": 300})
        waiting = len(state.background)
    # Shutdown waited for the pieces to be stored (--graceful-timeout, 30 s by default).
    assert waiting == 1
    assert len(state.background) == 0
    assert state.upstream.stats.open_streams == 0
    paid = generations(short_clips)

    async with running(**cache) as (client, _):
        again = await client.post(SPEECH, json={**BODY, "input": THREE_PIECES})

    assert paid == 3
    assert again.status_code == 200
    assert again.headers["x-cache"] == "HIT"
    assert generations(short_clips) == paid  # the retry paid for nothing


async def test_shutdown_cancels_pieces_still_being_stored_after_the_grace(
    short_clips: MockUpstream, tmp_path: Path
) -> None:
    settings = {"cache": True, "cache_dir": str(tmp_path), "upstream_url": short_clips.url}
    async with running(graceful_timeout=0, **settings) as (client, state):
        # Every download of the pieces stalls past the shutdown.
        await _fail_first_piece(client, short_clips, {"delay_ms": 60_000})
        assert len(state.background) == 1
    # Cancelled, and everything it held let go: no stream open, no lease kept.
    assert len(state.background) == 0
    assert state.upstream.stats.open_streams == 0
    assert state.cache is not None
    assert not getattr(state.cache.flights, "_held", {})


async def test_a_piece_generated_in_the_background_is_counted_once(
    short_clips: MockUpstream, tmp_path: Path
) -> None:
    # One piece at a time: while the first piece's audio fails (three slow tries), the
    # second has gone out, and its generation answers well after the request has ended.
    settings = {"cache": True, "cache_dir": str(tmp_path), "upstream_url": short_clips.url}
    short_clips.scenario(
        [
            {"route": "tts"},
            {"route": "tts", "delay_ms": 2000},
            {"route": "audio", "status": 500, "delay_ms": 100, "times": 3},
        ]
    )
    async with running(split_parallel=1, **settings) as (client, state):
        failed = await client.post(SPEECH, json={**BODY, "input": THREE_PIECES})
        in_flight = len(state.background), state.capacity.in_flight
        during = (await client.get("/v1/usage")).json()["day"]
        for _ in range(1000):  # the background piece answered and stored
            if not state.background:
                break
            await asyncio.sleep(0.01)
        after = (await client.get("/v1/usage")).json()["day"]
        metrics = parse((await client.get("/metrics")).text)

    assert failed.status_code == 502
    # The slot stays held until the piece sent has its answer; the request has ended.
    assert in_flight == (1, 1)
    billed = sum(len(body["text"]) for body in sent_bodies(short_clips))  # the journal
    assert generations(short_clips) == 2  # the third piece never started
    assert billed < len(THREE_PIECES)
    # Counted when it went out: the same before its answer came and after.
    assert during == after
    assert (after["requests"], after["characters"]) == (1, billed)
    assert total(metrics, "tts_shim_characters_total") == billed
