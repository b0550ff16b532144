"""One "replica" for the cross-process single-flight tests, run as a separate process.

``python -m tests.shim.cache.flight_worker URL MODE [REQUESTS] [EXPECTED]``

- ``contend``: REQUESTS concurrent lookups of one key. Whoever leads counts a generation
  in Redis, waits until EXPECTED requests (all processes) have arrived, so the others are
  waiting on it, then writes and commits the audio. Prints one line per request:
  ``LEAD <sha256>`` or ``HIT <sha256>``.
- ``hang``: leads, prints ``LEADING`` and never finishes (the test kills it).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

from redis.asyncio import Redis

from shim.cache import AudioCache, CacheKey, Hit, RedisAudioStore, RedisFlights, connect

KEY = CacheKey("tts-1", "alloy", "Please hold.", "mp3")
LEASE = 1.0
GENERATIONS = "test:generations"
ARRIVED = "test:arrived"


def generated_audio() -> bytes:
    # Differs per process, so a follower that generated itself would show.
    return f"audio from {os.getpid()} ".encode() * 3000


async def _request(cache: AudioCache, counter: Redis, expected: int) -> str:
    await counter.incr(ARRIVED)
    found = await cache.lookup(KEY)
    if isinstance(found, Hit):
        data = b"".join([chunk async for chunk in found.audio.chunks])
        return f"HIT {hashlib.sha256(data).hexdigest()}"
    async with found:
        assert found.leader
        await counter.incr(GENERATIONS)
        for _ in range(1000):
            if int(await counter.get(ARRIVED) or 0) >= expected:
                break
            await asyncio.sleep(0.02)
        data = generated_audio()
        for start in range(0, len(data), 4096):
            await found.write(data[start : start + 4096])
        assert await found.commit(len(data))
    return f"LEAD {hashlib.sha256(data).hexdigest()}"


async def main(url: str, mode: str, requests: int, expected: int) -> None:
    store = RedisAudioStore(connect(url), ttl=3600, chunk_size=16_384)
    flights = RedisFlights(store.client, lease=LEASE, poll=0.05)
    cache = AudioCache(store, flights, wait=30)
    counter = connect(url)
    if mode == "hang":
        found = await cache.lookup(KEY)
        assert not isinstance(found, Hit)
        assert found.leader
        print("LEADING", flush=True)
        await asyncio.sleep(3600)
        return
    lines = await asyncio.gather(*(_request(cache, counter, expected) for _ in range(requests)))
    print("\n".join(lines), flush=True)
    await counter.aclose()
    await cache.aclose()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], args[1], int(args[2]) if len(args) > 2 else 1,
                     int(args[3]) if len(args) > 3 else 1))  # fmt: skip
