"""What both audio stores promise, each run against the disk store and a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from shim.cache import AudioStore
from tests.shim.cache.conftest import audio, pieces, put, read

DIGEST = "a" * 64
OTHER = "b" * 64


async def test_a_committed_entry_reads_back_byte_for_byte(store: AudioStore) -> None:
    data = audio(10_500)

    assert await put(store, DIGEST, data)
    found = await store.open(DIGEST)

    assert found is not None
    assert found.size == len(data)
    assert await read(found) == data


async def test_absent_entry_is_none(store: AudioStore) -> None:
    assert await store.open(DIGEST) is None


async def test_an_entry_is_invisible_until_committed(store: AudioStore) -> None:
    data = audio(5000)
    writer = store.writer(DIGEST)
    for chunk in pieces(data, 1200):
        await writer.write(chunk)

    assert await store.open(DIGEST) is None
    assert await writer.commit()
    assert await read(await store.open(DIGEST)) == data


async def test_aborted_write_is_never_visible(store: AudioStore) -> None:
    writer = store.writer(DIGEST)
    await writer.write(audio(4000))
    await writer.abort()

    assert not await writer.commit()
    assert await store.open(DIGEST) is None


async def _cut_write(store: AudioStore) -> None:
    async with store.writer(DIGEST) as writer:
        await writer.write(audio(3000))
        raise RuntimeError("download cut")


async def test_leaving_the_block_without_commit_aborts(store: AudioStore) -> None:
    with pytest.raises(RuntimeError, match="download cut"):
        await _cut_write(store)

    assert await store.open(DIGEST) is None


async def test_a_short_download_is_not_committed(store: AudioStore) -> None:
    writer = store.writer(DIGEST)
    await writer.write(audio(3000))

    assert not await writer.commit(expected_size=4000)
    assert await store.open(DIGEST) is None


async def test_nothing_written_is_not_committed(store: AudioStore) -> None:
    assert not await store.writer(DIGEST).commit()
    assert await store.open(DIGEST) is None


async def test_a_newer_commit_replaces_the_entry(store: AudioStore) -> None:
    assert await put(store, DIGEST, audio(3000, seed=1))
    assert await put(store, DIGEST, audio(2500, seed=2))

    assert await read(await store.open(DIGEST)) == audio(2500, seed=2)


async def test_entries_are_kept_apart(store: AudioStore) -> None:
    assert await put(store, DIGEST, audio(2000, seed=1))
    assert await put(store, OTHER, audio(2000, seed=2))

    assert await read(await store.open(DIGEST)) == audio(2000, seed=1)
    assert await read(await store.open(OTHER)) == audio(2000, seed=2)


async def test_concurrent_writers_of_one_key_leave_one_whole_entry(store: AudioStore) -> None:
    versions = [audio(6000 + 100 * n, seed=n) for n in range(4)]

    stored = await asyncio.gather(*(put(store, DIGEST, data, 500) for data in versions))

    assert all(stored)
    assert await read(await store.open(DIGEST)) in versions


async def test_stats_and_clear(store: AudioStore) -> None:
    assert (await store.stats()).entries == 0
    assert await put(store, DIGEST, audio(3000))
    assert await put(store, OTHER, audio(2000))

    stats = await store.stats()

    assert stats.entries == 2
    assert stats.bytes >= 5000
    assert await store.clear() == 2
    assert (await store.stats()).entries == 0
    assert await store.open(DIGEST) is None


async def test_a_reader_that_stops_early_can_close(store: AudioStore) -> None:
    assert await put(store, DIGEST, audio(9000))
    found = await store.open(DIGEST)
    assert found is not None

    first = await anext(found.chunks)
    await found.aclose()

    assert first == audio(9000)[: len(first)]
    assert await read(await store.open(DIGEST)) == audio(9000)


async def test_an_entry_expires_after_its_ttl(store: AudioStore) -> None:
    store.ttl = 0.3  # type: ignore[attr-defined]
    assert await put(store, DIGEST, audio(2000))
    assert await store.open(DIGEST) is not None

    await asyncio.sleep(0.6)

    assert await store.open(DIGEST) is None
