"""Single flight across processes sharing a real Redis, and when Redis goes away."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from shim.cache import AudioCache, Hit, LocalFlights, Miss, RedisFlights
from tests.redis_server import RedisServer
from tests.shim.cache.conftest import audio, redis_store
from tests.shim.cache.flight_worker import GENERATIONS, KEY, LEASE

ROOT = Path(__file__).resolve().parents[3]
DIGEST = KEY.digest


def _worker(server: RedisServer, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.shim.cache.flight_worker", server.url, *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _replicas(server: RedisServer, lease: float) -> list[AudioCache]:
    """Two replicas in this process: separate clients, separate local flights."""
    replicas = []
    for _ in range(2):
        store = redis_store(server)
        flights = RedisFlights(store.client, lease=lease, poll=0.02)
        replicas.append(AudioCache(store, flights, wait=30))
    return replicas


def test_two_processes_contending_for_one_key_generate_once(redis_server: RedisServer) -> None:
    workers = [_worker(redis_server, "contend", "5", "10") for _ in range(2)]
    outputs = [worker.communicate(timeout=60)[0] for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0]
    lines = [line.split() for output in outputs for line in output.splitlines()]
    assert len(lines) == 10
    assert sorted(status for status, _ in lines) == ["HIT"] * 9 + ["LEAD"]
    assert len({digest for _, digest in lines}) == 1  # every request got the leader's audio
    assert int(redis_server.client().get(GENERATIONS) or 0) == 1


async def test_a_follower_takes_over_from_a_leader_killed_mid_generation(
    redis_server: RedisServer,
) -> None:
    leader = _worker(redis_server, "hang")
    assert leader.stdout is not None
    try:
        assert leader.stdout.readline().strip() == "LEADING"
        assert redis_server.client().exists(f"tts-shim:lock:{{{DIGEST}}}")
    finally:
        leader.kill()
        leader.wait()
    store = redis_store(redis_server)
    cache = AudioCache(store, RedisFlights(store.client, lease=LEASE, poll=0.05), wait=30)

    found = await cache.lookup(KEY)  # waits out the dead leader's lease, then leads

    assert isinstance(found, Miss)
    assert found.leader
    await found.abort()
    await cache.aclose()


async def test_a_leader_working_past_its_lease_keeps_it(redis_server: RedisServer) -> None:
    replicas = _replicas(redis_server, lease=0.3)
    leader = await replicas[0].lookup(KEY)
    assert isinstance(leader, Miss)
    assert leader.leader

    follower = asyncio.create_task(replicas[1].lookup(KEY))
    await asyncio.sleep(1.0)  # over three leases: renewal must be keeping it
    assert not follower.done()
    await leader.write(audio(5000))
    assert await leader.commit()
    found = await follower

    assert isinstance(found, Hit)
    assert found.followed
    assert b"".join([chunk async for chunk in found.audio.chunks]) == audio(5000)
    for replica in replicas:
        await replica.aclose()


async def test_a_leader_in_another_replica_that_fails_lets_a_follower_lead(
    redis_server: RedisServer,
) -> None:
    replicas = _replicas(redis_server, lease=5.0)
    leader = await replicas[0].lookup(KEY)
    assert isinstance(leader, Miss)
    assert leader.leader
    follower = asyncio.create_task(replicas[1].lookup(KEY))
    await asyncio.sleep(0.1)
    assert not follower.done()

    await leader.abort()  # the generation failed
    found = await follower

    assert isinstance(found, Miss)
    assert found.leader
    await found.abort()
    for replica in replicas:
        await replica.aclose()


async def test_redis_stopped_requests_neither_wait_nor_fail_and_it_warns_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = redis_store(redis_server)
    flights = RedisFlights(store.client, lease=2.0, poll=0.02)
    cache = AudioCache(store, flights, wait=30)
    redis_server.stop()

    with caplog.at_level(logging.WARNING, logger="tts_shim"):
        # Nothing can be shared: every request generates at once instead of queueing,
        # as if there were no cache (None: x-cache BYPASS).
        found = await asyncio.wait_for(asyncio.gather(*(cache.lookup(KEY) for _ in range(5))), 5)
        lease = await flights.acquire("e" * 64, 5)  # a lease local to this process

    assert found == [None] * 5
    assert lease is not None
    assert await flights.acquire("e" * 64, 0.05) is None
    await lease.release()
    warnings = [r for r in caplog.records if r.name == "tts_shim" and "Redis" in r.message]
    assert len(warnings) == 1
    await cache.aclose()


async def test_local_flights_one_leader_then_followers_look_again() -> None:
    flights = LocalFlights()
    lease = await flights.acquire(DIGEST, 5)
    assert lease is not None
    waiting = asyncio.create_task(flights.acquire(DIGEST, 5))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    await lease.release()

    assert await waiting is None  # look in the cache, then acquire again
    again = await flights.acquire(DIGEST, 5)
    assert again is not None
    assert await flights.acquire(DIGEST, 0.05) is None  # bounded
    await again.release()


async def test_a_forgotten_lease_stops_being_renewed(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    flights = RedisFlights(store.client, lease=0.3, max_hold=0.3)
    lease = await flights.acquire(DIGEST, 5)
    assert lease is not None
    lock = f"tts-shim:lock:{{{DIGEST}}}"
    assert redis_server.client().exists(lock)

    await asyncio.sleep(1.0)  # never released: renewed for max_hold, then it expires

    assert not redis_server.client().exists(lock)
    await lease.release()
    await store.aclose()
