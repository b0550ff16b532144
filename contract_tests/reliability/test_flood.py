"""Load: beyond ``--max-concurrency`` plus ``--max-queue``, 429 with ``Retry-After``;
health and readiness answer throughout, ahead of the queued speech work."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import openai
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import AUTH, CLIENT_TOKEN, SPEECH, routes, settle
from shim.testing import MockUpstream, ShimServer
from tests.figures import record

SLOTS, QUEUE, FLOOD = 4, 4, 24


async def test_a_flood_gets_429s_while_health_answers(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer]
) -> None:
    shim = tts_shim_factory(max_concurrency=SLOTS, max_queue=QUEUE, queue_timeout=10.0)
    state = shim.app.state.shim  # type: ignore[attr-defined]
    # Every admitted request streams slowly, so the slots stay taken for a while.
    tts_mock.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 1000, "times": 50}])
    limits = httpx.Limits(max_connections=FLOOD + 10)
    async with httpx.AsyncClient(base_url=shim.url, headers=AUTH, limits=limits, timeout=30) as c:
        flood = [asyncio.create_task(c.post("/v1/audio/speech", json=SPEECH)) for _ in range(FLOOD)]
        for _ in range(2000):  # until the queue is full (or, if broken, all answered)
            if state.capacity.queued == QUEUE or all(t.done() for t in flood):
                break
            await asyncio.sleep(0.005)
        # The shim is full: every slot streaming, the queue full.
        probes = []
        for _ in range(10):
            probes.append(await c.get("/healthz"))
            probes.append(await c.get("/readyz"))
        still_full = state.capacity.in_flight == SLOTS and state.capacity.queued == QUEUE
        answers = await asyncio.gather(*flood)

    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: SLOTS + QUEUE, 429: FLOOD - SLOTS - QUEUE}
    for refused in (r for r in answers if r.status_code == 429):
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.json()["error"]["type"] == "requests"
    # Health answered while all of the speech work was still in progress or queued.
    assert still_full
    # Liveness stays 200; readiness says "busy" (503) while every slot is taken, so a
    # load balancer sends new work elsewhere.
    assert [p.status_code for p in probes[0::2]] == [200] * (len(probes) // 2)
    assert [p.status_code for p in probes[1::2]] == [503] * (len(probes) // 2)
    assert probes[1].json()["status"] == "busy"
    assert probes[1].json()["in_flight"] == SLOTS
    assert probes[1].json()["queued"] == QUEUE
    # Only admitted requests reached the (billed) upstream.
    assert len(routes(tts_mock, "tts")) == SLOTS + QUEUE
    settle(state)
    assert state.capacity.in_flight == 0
    assert state.upstream.stats.open_streams == 0
    record(
        "flood",
        slots=SLOTS,
        queue=QUEUE,
        requests=FLOOD,
        served=statuses[200],
        refused=statuses[429],
        health_probes=len(probes),
    )


def test_the_sdk_sees_a_rate_limit_error(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer]
) -> None:
    shim = tts_shim_factory(max_concurrency=1, max_queue=0)
    state = shim.app.state.shim  # type: ignore[attr-defined]
    tts_mock.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 1000}])
    client = openai.OpenAI(base_url=shim.base_url, api_key=CLIENT_TOKEN, max_retries=0)

    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hold the only slot."
    ) as holding:
        assert state.capacity.in_flight == 1
        with pytest.raises(openai.RateLimitError) as caught:
            client.audio.speech.create(model="tts-1", voice="alloy", input="No room.")
        holding.read()
    settle(state)

    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1"
    assert state.capacity.in_flight == 0


def test_a_client_that_hangs_up_gives_its_slot_back(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer]
) -> None:
    shim = tts_shim_factory(max_concurrency=1, max_queue=0)
    state = shim.app.state.shim  # type: ignore[attr-defined]
    tts_mock.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 3000}])

    with (
        httpx.Client(timeout=10, verify=LOOPBACK_TLS) as client,
        client.stream("POST", shim.url + "/v1/audio/speech", json=SPEECH, headers=AUTH) as r,
    ):
        next(r.iter_raw())  # first bytes in hand, then hang up
    settle(state)
    after = httpx.post(
        shim.url + "/v1/audio/speech", json=SPEECH, headers=AUTH, verify=LOOPBACK_TLS
    )

    assert state.capacity.in_flight == 0
    assert after.status_code == 200
    assert state.upstream.stats.open_streams == 0
