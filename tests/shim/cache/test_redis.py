"""The Redis store on a real redis-server: chunks, eviction, crashes and outages."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from shim.cache import CacheCorrupt, CacheUnavailable, RedisAudioStore
from tests.redis_server import RedisServer
from tests.shim.cache.conftest import SMALL_CHUNK, audio, put, read, redis_store, until_up

DIGEST = "c" * 64


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisAudioStore]:
    opened = redis_store(redis_server)
    yield opened
    await opened.aclose()


def _keys(server: RedisServer, kind: str) -> list[bytes]:
    return sorted(server.client().keys(f"tts-shim:{kind}:*"))


async def test_audio_is_stored_in_chunks_under_one_manifest(
    redis_server: RedisServer, store: RedisAudioStore
) -> None:
    data = audio(SMALL_CHUNK * 4 + 10)

    assert await put(store, DIGEST, data)

    assert len(_keys(redis_server, "m")) == 1
    assert len(_keys(redis_server, "c")) == 5
    ttls = [redis_server.client().pttl(key) for key in _keys(redis_server, "*")]
    assert all(0 < ttl <= store.ttl * 1000 for ttl in ttls)


async def test_a_missing_chunk_is_a_miss_never_a_short_file(
    redis_server: RedisServer, store: RedisAudioStore
) -> None:
    assert await put(store, DIGEST, audio(SMALL_CHUNK * 3))
    redis_server.client().delete(_keys(redis_server, "c")[1])

    assert await store.open(DIGEST) is None


async def test_a_chunk_evicted_while_streaming_cuts_the_stream(
    redis_server: RedisServer, store: RedisAudioStore
) -> None:
    assert await put(store, DIGEST, audio(SMALL_CHUNK * 3))
    found = await store.open(DIGEST)
    assert found is not None
    first = await anext(found.chunks)
    redis_server.client().delete(*_keys(redis_server, "c"))

    with pytest.raises(CacheCorrupt):
        await anext(found.chunks)
    assert first == audio(SMALL_CHUNK * 3)[:SMALL_CHUNK]


async def test_an_aborted_write_leaves_no_keys(
    redis_server: RedisServer, store: RedisAudioStore
) -> None:
    async with store.writer(DIGEST) as writer:
        await writer.write(audio(SMALL_CHUNK * 3))
        assert len(_keys(redis_server, "c")) == 3

    assert _keys(redis_server, "*") == []


async def test_chunks_of_a_writer_that_died_expire_soon(
    redis_server: RedisServer, store: RedisAudioStore
) -> None:
    writer = store.writer(DIGEST)
    await writer.write(audio(SMALL_CHUNK * 2))  # then never commits nor aborts

    ttls = [redis_server.client().pttl(key) for key in _keys(redis_server, "c")]
    assert len(ttls) == 2
    assert all(0 < ttl <= 600_000 for ttl in ttls)
    assert await store.open(DIGEST) is None


async def test_a_replaced_entry_s_chunks_get_a_short_grace(
    redis_server: RedisServer, store: RedisAudioStore
) -> None:
    assert await put(store, DIGEST, audio(SMALL_CHUNK * 2, seed=1))
    old = set(_keys(redis_server, "c"))
    assert await put(store, DIGEST, audio(SMALL_CHUNK * 2, seed=2))

    client = redis_server.client()
    assert all(0 < client.pttl(key) <= 60_000 for key in old)
    assert await read(await store.open(DIGEST)) == audio(SMALL_CHUNK * 2, seed=2)


async def test_a_foreign_or_corrupt_manifest_is_a_miss(
    redis_server: RedisServer, store: RedisAudioStore
) -> None:
    redis_server.client().set(f"tts-shim:m:{{{DIGEST}}}", b"not json")

    assert await store.open(DIGEST) is None


async def test_maxmemory_eviction_never_yields_a_partial_entry() -> None:
    # A Redis far too small for what is written: it must evict, and every read is
    # then either the whole entry or a miss.
    with RedisServer("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru") as server:
        store = redis_store(server, chunk_size=16_384)
        stored = {}
        for n in range(40):
            digest = f"{n:064x}"
            stored[digest] = await put(store, digest, audio(100_000, seed=n), piece=8192)
        results = {digest: await read(await store.open(digest)) for digest in stored}
        await store.aclose()

    hits = [d for d, data in results.items() if data is not None]
    assert 0 < len(hits) < len(results)
    for digest in hits:
        assert stored[digest]
        assert results[digest] == audio(100_000, seed=int(digest, 16))


async def test_a_redis_that_refuses_writes_is_not_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Out of memory under noeviction: Redis answers every write with an error. It is up,
    # so reads still go to it; the writes are dropped with one warning, not one each.
    with RedisServer("--maxmemory-policy", "noeviction") as server:
        store = redis_store(server)
        assert await put(store, DIGEST, audio(3000))
        server.client().config_set("maxmemory", 1)  # whatever it holds is over that
        with caplog.at_level(logging.WARNING, logger="tts_shim"):
            refused = [await put(store, f"{n:064x}", audio(3000, seed=n)) for n in range(3)]
        held = await read(await store.open(DIGEST))
        available = store.available
        await store.aclose()

    assert refused == [False] * 3
    assert available
    assert held == audio(3000)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Redis refused a call (OutOfMemoryError: ")


async def test_redis_stopped_mid_run_degrades_to_no_cache_and_warns_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = redis_store(redis_server)
    assert await put(store, DIGEST, audio(3000))
    redis_server.stop()

    with caplog.at_level(logging.WARNING, logger="tts_shim"):
        for _ in range(5):
            assert await store.open(DIGEST) is None
            assert not await put(store, "d" * 64, audio(3000))
    warnings = [r for r in caplog.records if r.name == "tts_shim" and "Redis" in r.message]
    assert len(warnings) == 1
    assert "serving without it until it does" in warnings[0].message
    assert not store.available

    with pytest.raises(CacheUnavailable):
        await store.stats()
    with pytest.raises(CacheUnavailable):
        await store.clear()

    # Back on the same port: the next PING closes the breaker, and the cache works
    # again (the data was not persisted), with one line saying so.
    redis_server.start()
    with caplog.at_level(logging.INFO, logger="tts_shim"):
        await until_up(store.outage)
    assert [r.message for r in caplog.records if r.levelname == "INFO"] == [
        "Redis answers again; the cache, the limits and usage use it again"
    ]
    assert store.available
    assert await store.open(DIGEST) is None
    assert await put(store, DIGEST, audio(3000))
    assert await read(await store.open(DIGEST)) == audio(3000)
    await store.aclose()


async def test_an_unreachable_redis_is_a_miss_quickly() -> None:
    server = RedisServer().start()
    server.close()  # a port nobody listens on
    store = redis_store(server)

    assert await store.open(DIGEST) is None
    assert not await put(store, DIGEST, audio(100))
    await store.aclose()


async def test_a_tampered_chunk_fails_verification_at_the_end(
    redis_server: RedisServer, store: RedisAudioStore
) -> None:
    assert await put(store, DIGEST, audio(SMALL_CHUNK * 3))
    chunk = _keys(redis_server, "c")[1]
    redis_server.client().set(chunk, b"\0" * SMALL_CHUNK, keepttl=True)
    found = await store.open(DIGEST)
    assert found is not None

    with pytest.raises(CacheCorrupt, match="verification"):
        async for _chunk in found.chunks:
            pass
    assert await store.open(DIGEST) is None  # and the entry is gone
