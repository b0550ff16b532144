"""The cache on real processes: replicas sharing a real Redis, Redis going away, and
a download cut in the middle or bad audio (never cached)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import ServeProcess
from mockserver import BackgroundServer, MockConfig, create_app
from shim.testing import MockUpstream, ShimServer, decode_audio
from tests.redis_server import RedisServer

BODY = {"model": "tts-1-hd", "input": "Shared by every replica.", "voice": "sage"}
AUTH = {"authorization": "Bearer sk-cache-test-0001"}


@pytest.fixture
def mock() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(MockConfig())) as server:
        yield server


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _generations(mock: BackgroundServer) -> int:
    journal = mock.app.state.journal.entries()  # type: ignore[attr-defined]
    return sum(entry["route"] == "tts" for entry in journal)


def _speak(shim: ServeProcess | ShimServer) -> httpx.Response:
    url = shim.url + "/v1/audio/speech"
    return httpx.post(url, json=BODY, headers=AUTH, timeout=30, verify=LOOPBACK_TLS)


def test_two_replicas_sharing_redis_pay_once_for_twenty_concurrent_requests(
    serve_process: Callable[..., ServeProcess],
    mock: BackgroundServer,
    redis_server: RedisServer,
) -> None:
    replicas = [
        serve_process("--upstream-url", mock.url, "--redis-url", redis_server.url) for _ in range(2)
    ]
    mock.app.state.scenario.push([{"delay_ms": 500}])  # type: ignore[attr-defined]

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(_speak, [replicas[n % 2] for n in range(20)]))

    assert {a.status_code for a in answers} == {200}
    assert {a.content for a in answers} == {answers[0].content}
    assert _generations(mock) == 1
    assert sorted(a.headers["x-cache"] for a in answers).count("MISS") == 1


def test_redis_going_away_costs_the_cache_not_the_requests(
    serve_process: Callable[..., ServeProcess],
    mock: BackgroundServer,
    redis_server: RedisServer,
) -> None:
    shim = serve_process("--upstream-url", mock.url, "--redis-url", redis_server.url)
    assert _speak(shim).headers["x-cache"] == "MISS"
    assert _speak(shim).headers["x-cache"] == "HIT"

    redis_server.stop()
    answers = [_speak(shim) for _ in range(5)]

    assert {a.status_code for a in answers} == {200}
    assert {a.headers["x-cache"] for a in answers} == {"MISS"}
    assert _generations(mock) == 6
    warnings = [line for line in shim.log_lines() if line["level"] == "warning"]
    cache_outage = [line for line in warnings if "cache" in line["message"].lower()]
    assert len(cache_outage) == 1, warnings  # one warning, not one per request
    assert len(warnings) <= 2, warnings  # and the usage ledger's, once too


def test_a_download_cut_in_the_middle_is_not_cached(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream, tmp_path: Any
) -> None:
    shim = tts_shim_factory(cache=True, cache_dir=str(tmp_path))
    tts_mock.scenario([{"route": "audio", "fault": "truncated"}])

    with pytest.raises(httpx.HTTPError):
        _speak(shim)
    again = _speak(shim)

    assert again.status_code == 200
    assert again.headers["x-cache"] == "MISS"
    assert len(tts_mock.requests) == 2  # generated again: the cut audio was not kept


def test_bad_audio_reaches_the_sdk_as_an_error_and_is_never_cached(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream, tmp_path: Any
) -> None:
    shim = tts_shim_factory(cache=True, cache_dir=str(tmp_path), audio_retries=0)
    # 40 s of WAV: half of it cannot all be in hand when the first frames are checked, so
    # the junk after it comes once the stream is under way, whatever the timing.
    speech = {"model": "tts-1", "voice": "echo", "input": "Long. " * 100, "response_format": "wav"}

    with openai.OpenAI(
        base_url=shim.base_url, api_key=AUTH["authorization"][7:], max_retries=0
    ) as sdk:
        # ``RIFF....WAVE`` and then an HTML page: refused before the first byte.
        tts_mock.scenario([{"route": "audio", "fault": "signature-junk"}])
        with pytest.raises(openai.InternalServerError) as refused:
            sdk.audio.speech.create(**speech)
        # Good first frames, relayed, then junk: the transfer is cut, never ended.
        tts_mock.scenario([{"route": "audio", "fault": "junk-tail"}])
        with pytest.raises(openai.APIConnectionError):
            sdk.audio.speech.create(**speech)
        again = sdk.audio.speech.with_raw_response.create(**speech)

    assert refused.value.status_code == 502
    assert refused.value.code == "bad_upstream_audio"
    assert again.headers["x-cache"] == "MISS"
    assert decode_audio(again.content, "wav").seconds > 39
    assert len(tts_mock.requests) == 3  # each generated anew: neither bad one was kept
