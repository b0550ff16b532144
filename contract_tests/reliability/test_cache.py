"""The cache on real processes: replicas sharing a real Redis, Redis going away or
hanging (SIGSTOP), unreachable at start, a download cut in the middle or bad audio (never
cached), and the paid pieces of a long text whose client left (cached all the same)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import ServeProcess, settle
from mockserver import BackgroundServer, MockConfig, create_app
from shim.testing import MockUpstream, ShimServer, decode_audio
from tests.figures import record
from tests.redis_server import RedisServer
from tests.shim.conftest import parse, total

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
    assert {a.headers["x-cache"] for a in answers} == {"BYPASS"}  # served as if uncached
    assert _generations(mock) == 6
    warnings = [line for line in shim.log_lines() if line["level"] == "warning"]
    assert len(warnings) == 1, warnings  # one warning, not one per request
    assert "uncached" in warnings[0]["message"]


def _timed(shim: ServeProcess, text: str) -> tuple[httpx.Response, float]:
    # Well under the 8-16 s a hung Redis used to add, well over what it costs now.
    started = time.perf_counter()
    response = httpx.post(
        shim.url + "/v1/audio/speech", json={**BODY, "input": text}, headers=AUTH, timeout=5
    )
    return response, round(time.perf_counter() - started, 3)


def _redis_up(shim: ServeProcess) -> float:
    return total(parse(httpx.get(shim.url + "/metrics").text), "tts_shim_redis_up")


def _until_redis_up(shim: ServeProcess) -> None:
    deadline = time.monotonic() + 15
    while _redis_up(shim) != 1:
        assert time.monotonic() < deadline, "the breaker did not close after SIGCONT"
        time.sleep(0.1)


def test_a_hung_redis_costs_the_first_requests_one_timeout_and_the_next_ones_nothing(
    serve_process: Callable[..., ServeProcess],
    mock: BackgroundServer,
    redis_server: RedisServer,
) -> None:
    shim = serve_process("--upstream-url", mock.url, "--redis-url", redis_server.url)
    healthy = [_timed(shim, f"Healthy {n}.") for n in range(3)]
    with ThreadPoolExecutor(10) as pool:  # what 10 at once cost this machine anyway
        healthy_wave = list(pool.map(lambda n: _timed(shim, f"Healthy wave, {n}."), range(10)))

    with redis_server.hung():
        first = _timed(shim, "The first after the hang.")
        following = [_timed(shim, f"Following {n}.") for n in range(5)]
    _until_redis_up(shim)
    with redis_server.hung(), ThreadPoolExecutor(10) as pool:
        wave = list(pool.map(lambda n: _timed(shim, f"Wave one, {n}."), range(10)))
        next_wave = list(pool.map(lambda n: _timed(shim, f"Wave two, {n}."), range(10)))
    _until_redis_up(shim)

    hung = [first, *following, *wave, *next_wave]
    assert [r.status_code for r, _ in hung] == [200] * len(hung)
    assert {r.headers["x-cache"] for r, _ in hung} == {"BYPASS"}
    assert {r.headers["x-cache"] for r, _ in healthy + healthy_wave} == {"MISS"}
    warnings = [line["message"] for line in shim.log_lines() if line["level"] == "warning"]
    assert len(warnings) == 2, warnings  # one per outage
    recoveries = [line for line in shim.log_lines() if "Redis answers again" in line["message"]]
    assert len(recoveries) == 2
    record(
        "redis_hung",
        redis_timeout=0.5,
        healthy=[seconds for _, seconds in healthy],
        concurrent_healthy=sorted(seconds for _, seconds in healthy_wave),
        first=first[1],
        following=[seconds for _, seconds in following],
        concurrent_first_wave=sorted(seconds for _, seconds in wave),
        concurrent_second_wave=sorted(seconds for _, seconds in next_wave),
    )


def test_an_unreachable_redis_at_start_is_one_warning_before_listening(
    serve_process: Callable[..., ServeProcess], mock: BackgroundServer
) -> None:
    gone = RedisServer().start()
    gone.close()  # a port nobody listens on
    shim = serve_process("--upstream-url", mock.url, "--redis-url", gone.url)
    answer = _speak(shim)

    messages = [line["message"] for line in shim.log_lines()]
    warnings = [m for m in messages if m.startswith("Redis does not answer")]
    listening = next(i for i, m in enumerate(messages) if m.startswith("tts-shim listening on "))
    assert len(warnings) == 1, messages
    assert messages.index(warnings[0]) < listening
    assert (answer.status_code, answer.headers["x-cache"]) == (200, "BYPASS")


def test_a_download_cut_in_the_middle_is_not_cached(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream, tmp_path: Any
) -> None:
    shim = tts_shim_factory(cache=True, cache_dir=str(tmp_path))
    # Cut every time: the first download and both resumptions (--audio-retries 2).
    tts_mock.scenario([{"route": "audio", "fault": "truncated", "times": 3}])

    with pytest.raises(httpx.HTTPError):
        _speak(shim)
    again = _speak(shim)

    assert again.status_code == 200
    assert again.headers["x-cache"] == "MISS"
    assert len(tts_mock.requests) == 2  # generated again: the cut audio was not kept


#: Split into three pieces (over --split-threshold, 1,000 characters).
LONG = ("Every paid piece is kept, even when the listener walks away. " * 20)[:1100]


def test_a_client_that_leaves_a_long_text_leaves_its_paid_pieces_in_the_cache(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream, tmp_path: Any
) -> None:
    shim = tts_shim_factory(cache=True, cache_dir=str(tmp_path))
    body = {**BODY, "input": LONG}
    with httpx.stream(
        "POST", shim.url + "/v1/audio/speech", json=body, headers=AUTH, verify=LOOPBACK_TLS
    ) as response:
        assert response.status_code == 200
        next(response.iter_raw())  # the first audio, then the client hangs up
    settle(shim.app.state.shim)  # type: ignore[attr-defined]
    paid = len(tts_mock.requests)

    again = httpx.post(shim.url + "/v1/audio/speech", json=body, headers=AUTH, timeout=30)

    assert again.status_code == 200
    assert again.headers["x-cache"] == "HIT"  # every piece was stored after the client left
    assert len(tts_mock.requests) == paid == 3


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
