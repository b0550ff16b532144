"""The concurrency cap: a fair semaphore with a bounded wait queue, and draining."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shim.errors import APIError
from shim.limits import RETRY_AFTER, Capacity
from shim.testing import MockUpstream
from tests.shim.conftest import generations, state_of


async def _waiting(capacity: Capacity, count: int) -> None:
    for _ in range(100):
        if capacity.queued == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"expected {count} waiting, found {capacity.queued}")


async def test_slots_up_to_the_limit_are_immediate() -> None:
    capacity = Capacity(2, 0, 1.0)

    await capacity.acquire()
    await capacity.acquire()

    assert capacity.in_flight == 2
    with pytest.raises(APIError) as caught:
        await capacity.acquire()
    assert caught.value.status == 429
    assert capacity.rejected == 1


async def test_the_429_is_openais_rate_limit_error_with_retry_after() -> None:
    capacity = Capacity(1, 0, 1.0)
    await capacity.acquire()

    with pytest.raises(APIError) as caught:
        await capacity.acquire()

    error = caught.value
    assert (error.type, error.code) == ("requests", "rate_limit_exceeded")
    assert error.retryable  # nothing was billed: the SDK's own retry is welcome
    response = error.response("req_1")
    assert response.headers["retry-after"] == str(RETRY_AFTER)
    assert "x-should-retry" not in response.headers


async def test_waiters_are_served_first_come_first_served() -> None:
    capacity = Capacity(1, 5, 5.0)
    await capacity.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await capacity.acquire()
        order.append(n)

    tasks = []
    for n in range(3):
        tasks.append(asyncio.create_task(wait(n)))
        await _waiting(capacity, n + 1)
    for _ in range(3):
        capacity.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)

    assert order == [0, 1, 2]
    assert capacity.in_flight == 1  # the last waiter holds the slot
    capacity.release()
    assert capacity.in_flight == 0


async def test_a_full_queue_refuses_at_once() -> None:
    capacity = Capacity(1, 1, 5.0)
    await capacity.acquire()
    waiter = asyncio.create_task(capacity.acquire())
    await _waiting(capacity, 1)

    with pytest.raises(APIError) as caught:
        await capacity.acquire()

    assert caught.value.status == 429
    capacity.release()
    await waiter
    capacity.release()
    assert (capacity.in_flight, capacity.queued) == (0, 0)


async def test_a_wait_longer_than_the_queue_timeout_is_a_429() -> None:
    capacity = Capacity(1, 4, 0.05)
    await capacity.acquire()

    with pytest.raises(APIError) as caught:
        await capacity.acquire()

    assert caught.value.status == 429
    assert capacity.queued == 0
    capacity.release()
    assert capacity.in_flight == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_slot() -> None:
    capacity = Capacity(1, 4, 5.0)
    await capacity.acquire()
    waiter = asyncio.create_task(capacity.acquire())
    await _waiting(capacity, 1)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert capacity.queued == 0
    capacity.release()
    assert capacity.in_flight == 0
    await capacity.acquire()  # the slot is still there to take
    assert capacity.in_flight == 1


async def test_a_slot_handed_to_a_waiter_that_is_cancelled_is_passed_on() -> None:
    capacity = Capacity(1, 4, 5.0)
    await capacity.acquire()
    first = asyncio.create_task(capacity.acquire())
    await _waiting(capacity, 1)
    second = asyncio.create_task(capacity.acquire())
    await _waiting(capacity, 2)

    capacity.release()  # hands the slot to ``first``...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # so it went on to ``second``

    assert capacity.in_flight == 1
    capacity.release()
    assert capacity.in_flight == 0


async def test_draining_refuses_new_work_with_a_503() -> None:
    capacity = Capacity(1, 4, 5.0)
    await capacity.acquire()
    waiter = asyncio.create_task(capacity.acquire())
    await _waiting(capacity, 1)

    capacity.start_draining()
    with pytest.raises(APIError) as caught:
        await capacity.acquire()
    assert caught.value.status == 503
    capacity.release()
    with pytest.raises(APIError):
        await waiter  # it got the slot, but the shim is going away

    assert capacity.in_flight == 0


async def test_idle_returns_once_the_last_request_has_left() -> None:
    capacity = Capacity(1, 0, 1.0)
    capacity.enter()
    capacity.enter()
    idle = asyncio.ensure_future(capacity.idle())

    capacity.leave()
    await asyncio.sleep(0.01)
    waiting_for_one = not idle.done()
    capacity.leave()
    await asyncio.wait_for(idle, 1)

    assert waiting_for_one
    assert capacity.requests == 0


async def test_limit_zero_means_no_cap_but_still_counts() -> None:
    capacity = Capacity(0, 0, 0.0)

    for _ in range(500):
        await capacity.acquire()

    assert capacity.in_flight == 500
    assert capacity.snapshot()["max_concurrency"] is None
    assert not capacity.full  # so /readyz never says busy without a cap


async def test_full_when_every_slot_is_taken() -> None:
    capacity = Capacity(2, 0, 0.0)

    await capacity.acquire()
    one_taken = capacity.full
    await capacity.acquire()
    both_taken = capacity.full
    capacity.release()

    assert (one_taken, both_taken, capacity.full) == (False, True, False)


# -- through the app --------------------------------------------------------------


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never became true")


async def test_a_full_shim_answers_429_while_health_stays_up(
    shim: Any, upstream: MockUpstream
) -> None:
    client = shim(max_concurrency=1, max_queue=0)
    await client.get("/healthz")  # started
    state = state_of(client)
    upstream.scenario([{"delay_ms": 1_000}])  # holds the first request's slot a while
    body = {"model": "tts-1", "input": "Hello."}

    first = asyncio.create_task(client.post("/v1/audio/speech", json=body))
    await _until(lambda: state.capacity.in_flight == 1)
    busy = await client.post("/v1/audio/speech", json=body)
    chat = await client.post(
        "/v1/chat/completions",
        json={"model": "tts-1", "messages": [{"role": "user", "content": "Hi"}]},
    )
    bad = await client.post("/v1/audio/speech", json={"model": "tts-1"})
    health = await client.get("/healthz")
    ready = await client.get("/readyz")
    models = await client.get("/v1/models")
    done = await first
    ready_again = await client.get("/readyz")

    assert busy.status_code == 429
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "rate_limit_exceeded"
    assert chat.status_code == 429  # chat shares the cap
    assert bad.status_code == 400  # invalid requests never wait for a slot
    assert health.status_code == 200
    assert ready.status_code == 503  # every slot taken: send new work elsewhere
    assert ready.json()["status"] == "busy"
    assert ready.json()["in_flight"] == 1
    assert ready_again.status_code == 200
    assert ready_again.json()["status"] == "ready"
    assert ready.json()["rejected"] == 2
    assert models.status_code == 200
    assert done.status_code == 200
    assert done.headers["content-type"] == "audio/mpeg"
    assert state.capacity.in_flight == 0
    assert state.upstream.stats.open_streams == 0
    assert generations(upstream) == 1  # the refused ones cost nothing


async def test_the_slot_is_freed_when_the_upstream_fails(shim: Any, upstream: MockUpstream) -> None:
    client = shim(max_concurrency=1, max_queue=0, tts_retries=0)
    upstream.scenario([{"status": 500}])

    failed = await client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi"})
    after = await client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi"})

    assert failed.status_code == 500
    assert after.status_code == 200
    state = state_of(client)
    assert state.capacity.in_flight == 0
    assert state.upstream.stats.open_streams == 0


async def test_readyz_turns_503_when_draining(shim: Any) -> None:
    client = shim()
    before = await client.get("/readyz")
    state = state_of(client)
    state.capacity.start_draining()
    after = await client.get("/readyz")
    speech = await client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi"})
    health = await client.get("/healthz")

    assert before.status_code == 200
    assert before.json()["status"] == "ready"
    assert after.status_code == 503
    assert after.json()["status"] == "draining"
    assert speech.status_code == 503
    assert speech.json()["error"]["code"] == "service_unavailable"
    assert health.status_code == 200  # alive, just not taking work


async def test_readyz_turns_503_when_leaving_while_work_is_still_taken(shim: Any) -> None:
    client = shim()
    assert (await client.get("/readyz")).status_code == 200
    state_of(client).capacity.start_leaving()  # --shutdown-delay
    ready = await client.get("/readyz")
    speech = await client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi"})

    assert ready.status_code == 503
    assert ready.json()["status"] == "draining"
    assert ready.json()["draining"] is True
    assert speech.status_code == 200


# -- settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [{"max_concurrency": -1}, {"max_queue": -1}, {"queue_timeout": -1}, {"graceful_timeout": -1}],
)
def test_negative_limits_are_refused(setting: dict[str, Any]) -> None:
    from shim.config import Config, ConfigError

    with pytest.raises(ConfigError):
        Config(**setting)


def test_the_limits_are_flags_with_environment_variables() -> None:
    from click.testing import CliRunner

    from shim.cli import main

    result = CliRunner().invoke(main, ["serve", "--help"])

    for flag, variable in [
        ("--max-concurrency", "TTS_SHIM_MAX_CONCURRENCY"),
        ("--max-queue", "TTS_SHIM_MAX_QUEUE"),
        ("--queue-timeout", "TTS_SHIM_QUEUE_TIMEOUT"),
        ("--graceful-timeout", "TTS_SHIM_GRACEFUL_TIMEOUT"),
        ("--log-format", "TTS_SHIM_LOG_FORMAT"),
    ]:
        assert flag in result.output
        assert variable in result.output
