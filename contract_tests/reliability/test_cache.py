"""The cache on real processes: replicas sharing a real Redis, Redis going away, a
download cut in the middle (never cached), and the paid pieces of a long text whose
client left (cached all the same)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import ServeProcess, settle
from mockserver import BackgroundServer, MockConfig, create_app
from shim.testing import MockUpstream, ShimServer
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
