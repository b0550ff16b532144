"""Redis hung or unreachable, on a real redis-server frozen with SIGSTOP: the requests
already talking to it pay one ``--redis-timeout``, the next ones do not ask it at all,
and a PING closes the breaker once it answers again; an unreachable Redis at start is a
warning at start. (The latencies are measured in contract_tests/reliability/test_cache.py
and docs/reliability.md; nothing here is timed.)"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from shim import Config, create_app
from shim.cache import Outage
from shim.testing import MockUpstream
from tests.redis_server import RedisServer
from tests.shim.cache.conftest import until_up
from tests.shim.conftest import CLIENT_TOKEN, Samples, generations, parse, state_of, total

SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Kept in Redis, then served without it."}


async def _speak(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/v1/audio/speech", json=SPEECH)


async def _metrics(client: httpx.AsyncClient) -> Samples:
    return parse((await client.get("/metrics")).text)


def _messages(caplog: pytest.LogCaptureFixture, level: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tts_shim" and r.levelname == level]


async def test_a_hung_redis_is_asked_once_then_skipped_until_a_ping_answers(
    shim: Any, upstream: MockUpstream, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = shim(cache=True, redis_url=redis_server.url)
    assert (await _speak(client)).headers["x-cache"] == "MISS"
    assert (await _speak(client)).headers["x-cache"] == "HIT"
    state = state_of(client)
    assert state.cache is not None
    outage = Outage.of(state.cache.store.client)  # type: ignore[attr-defined]
    outage.probe_every = 0.2  # the default 2 s would only make the test wait longer
    healthy = await _metrics(client)

    with caplog.at_level(logging.INFO, logger="tts_shim"):
        with redis_server.hung():
            first = await _speak(client)  # waits for one timeout, then goes on without
            after_first = await _metrics(client)
            following = [await _speak(client) for _ in range(3)]
            after_following = await _metrics(client)
            usage = await client.get("/v1/usage")
            assert outage.down  # still frozen: no PING got through
        await until_up(outage)
    again = await _speak(client)
    recovered = await _metrics(client)

    assert total(healthy, "tts_shim_redis_up") == 1
    assert total(healthy, "tts_shim_redis_outages_total") == 0
    # Served, uncached, and paid for: Redis could neither give nor keep the audio.
    assert [r.status_code for r in (first, *following)] == [200] * 4
    assert {r.headers["x-cache"] for r in (first, *following)} == {"BYPASS"}
    assert generations(upstream) == 1 + 4
    assert total(after_first, "tts_shim_redis_up") == 0
    assert total(after_first, "tts_shim_redis_outages_total") == 1
    # Each following request skipped its usage reservation rather than wait for it.
    skipped = total(after_following, "tts_shim_redis_skipped_calls_total")
    assert skipped >= total(after_first, "tts_shim_redis_skipped_calls_total") + 3
    # Usage is not made up while its store is away.
    assert usage.status_code == 503
    assert usage.json()["error"]["code"] == "service_unavailable"
    assert "Redis" in usage.json()["error"]["message"]
    # Back: the entry kept through the freeze is a hit again, and the log has two lines.
    assert again.headers["x-cache"] == "HIT"
    assert total(recovered, "tts_shim_redis_up") == 1
    assert total(recovered, "tts_shim_redis_outages_total") == 1
    warnings = _messages(caplog, "WARNING")
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Redis does not answer (TimeoutError: Timeout reading")
    assert "Redis answers again" in " ".join(_messages(caplog, "INFO"))


async def test_an_unreachable_redis_at_start_is_a_warning_at_start_not_an_error(
    upstream: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    gone = RedisServer().start()
    gone.close()  # a port nobody listens on
    app = create_app(Config(upstream_url=upstream.url, redis_url=gone.url, max_retry_wait=0.01))
    transport = httpx.ASGITransport(app)
    auth = {"authorization": f"Bearer {CLIENT_TOKEN}"}

    with caplog.at_level(logging.WARNING, logger="tts_shim"):
        async with app.router.lifespan_context(app):
            at_start = _messages(caplog, "WARNING")
            async with httpx.AsyncClient(
                transport=transport, base_url="http://shim", headers=auth
            ) as client:
                spoken = await _speak(client)
                usage = await client.get("/v1/usage")

    assert len(at_start) == 1, at_start
    assert at_start[0].startswith("Redis does not answer (ConnectionError: ")
    assert "serving without it" in at_start[0]
    assert (spoken.status_code, spoken.headers["x-cache"]) == (200, "BYPASS")
    assert usage.status_code == 503
    assert _messages(caplog, "WARNING") == at_start  # and nothing more per request
