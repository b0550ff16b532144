"""Bad audio from the CDN, through the shim in process, with the cache on: in every
format the shim serves, HTML, text and junk behind a valid signature or after good
frames are a 502 ``bad_upstream_audio`` or an aborted stream, never a 200, and never
cached: the same request again is generated again (the mock's journal) and the cache
holds no entry (its stats)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shim.catalog import FORMATS
from shim.responses import StreamAborted
from shim.testing import MockUpstream, decode_audio
from tests.figures import record
from tests.shim.conftest import generations, last_response, state_of

SPEECH = "/v1/audio/speech"
TEXT = "Bad audio is never cached, whatever it claims to be."  # about 3.5 s


def _variants() -> list[Any]:
    cases = []
    for fmt in FORMATS:
        cases += [
            pytest.param(fmt, {"fault": "garbage"}, id=f"{fmt}-html-labelled-{fmt}"),
            pytest.param(fmt, {"fault": "signature-junk"}, id=f"{fmt}-signature-then-html"),
            # The pause: the first half is in, and relayed, before the junk comes.
            pytest.param(fmt, {"fault": "junk-tail", "delay_ms": 200}, id=f"{fmt}-junk-after"),
        ]
    html = {"content-type": "text/html; charset=utf-8"}
    cases += [
        pytest.param("pcm", {"fault": "garbage", "headers": html}, id="pcm-html-as-text/html"),
        pytest.param("pcm", {"headers": html}, id="pcm-real-samples-as-text/html"),
        # Served as another format than asked, so transcoded: checked all the same.
        pytest.param(
            "opus",
            {"fault": "junk-tail", "audio_format": "mp3", "delay_ms": 200},
            id="mp3-junk-after-transcoded-to-opus",
        ),
    ]
    return cases


async def _refused(client: Any, body: dict[str, Any]) -> tuple[str, str]:
    """``("502", message)`` for a refusal before the first byte, ``("aborted", message)``
    for a transfer cut after it; anything else fails."""
    try:
        response = await client.post(SPEECH, json=body)
    except StreamAborted as exc:
        return "aborted", str(exc)
    assert response.status_code == 502, response.content[:200]
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "bad_upstream_audio")
    assert response.headers["x-should-retry"] == "false"  # billed: do not pay again
    return "502", str(error["message"])


@pytest.mark.parametrize(("fmt", "step"), _variants())
async def test_bad_audio_is_refused_and_never_cached(
    shim: Any,
    upstream: MockUpstream,
    tmp_path: Path,
    fmt: str,
    step: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    client = shim(cache=True, cache_dir=str(tmp_path / "cache"), audio_retries=1)
    body = {"model": "tts-1", "voice": "ash", "input": TEXT, "response_format": fmt}
    upstream.scenario([{"route": "audio", "times": 2, **step}])

    outcome, why = await _refused(client, body)
    if outcome == "aborted":  # the first frames were good, and sent
        assert "is not valid" in why  # the check's, not a broken download's
    assert (await state_of(client).cache.store.stats()).entries == 0  # type: ignore[union-attr]
    assert generations(upstream) == 1

    upstream.app.state.scenario.clear()  # type: ignore[attr-defined]
    again = await client.post(SPEECH, json=body)

    assert again.status_code == 200
    assert again.headers["x-cache"] == "MISS"
    assert generations(upstream) == 2  # generated again: nothing had been kept
    assert decode_audio(again.content, fmt).seconds > 3
    variant = request.node.callspec.id
    record(
        "bad-audio", variant=variant, outcome=outcome, downloads=len(upstream.downloads), why=why
    )


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
async def test_junk_after_good_frames_aborts_a_stream_already_under_way(
    shim: Any, upstream: MockUpstream, tmp_path: Path, fmt: str
) -> None:
    # 40 s: the first half (near 1 MB) cannot all be in hand when the first frames are
    # checked, so the stream has started, whatever the timing, when the junk comes.
    client = shim(cache=True, cache_dir=str(tmp_path / "cache"))
    body = {"model": "tts-1", "voice": "ash", "input": "x" * 600, "response_format": fmt}
    upstream.scenario([{"route": "audio", "fault": "junk-tail"}])

    with pytest.raises(StreamAborted, match=f"not valid {fmt}: it holds text"):
        await client.post(SPEECH, json=body)

    start, sent = last_response(client)
    assert start["status"] == 200
    assert sum(len(message["body"]) for message in sent) > 100_000  # audio went out first
    assert not any(message.get("more_body", False) is False for message in sent)  # no end
    assert (await state_of(client).cache.store.stats()).entries == 0  # type: ignore[union-attr]
    again = await client.post(SPEECH, json=body)
    assert again.headers["x-cache"] == "MISS"
    assert generations(upstream) == 2


@pytest.mark.parametrize(
    ("fmt", "step", "text"),
    [
        pytest.param("mp3", {"fault": "signature-junk"}, TEXT, id="mp3-signature-then-html"),
        pytest.param("opus", {"fault": "signature-junk"}, TEXT, id="opus-signature-then-html"),
        pytest.param("pcm", {"fault": "garbage"}, TEXT, id="pcm-html-labelled-pcm"),
        # Text in the samples after the first frames: seen as the stream goes.
        pytest.param("wav", {"fault": "junk-tail"}, "x" * 600, id="wav-junk-after"),
    ],
)
async def test_without_a_cache_the_start_and_the_framing_are_still_checked(
    shim: Any, upstream: MockUpstream, fmt: str, step: dict[str, Any], text: str
) -> None:
    # Uncached audio has only its first frames decoded (the CPU that costs is in
    # docs/benchmarks.md); what spoils its start, or its framing, is refused all the same.
    client = shim(audio_retries=0)  # the fixture's shims keep no cache
    body = {"model": "tts-1", "voice": "ash", "input": text, "response_format": fmt}
    upstream.scenario([{"route": "audio", **step}])

    if step["fault"] == "junk-tail":
        with pytest.raises(StreamAborted, match="holds text"):
            await client.post(SPEECH, json=body)
        return
    response = await client.post(SPEECH, json=body)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "bad_upstream_audio"
