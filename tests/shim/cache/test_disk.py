"""The embedded store: restarts, size bound with LRU eviction, several processes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from shim.cache import CacheCorrupt, CacheUnavailable, DiskAudioStore, default_cache_dir
from tests.shim.cache.conftest import audio, put, read

TTL = 3600.0
ROOT = Path(__file__).resolve().parents[3]


async def test_entries_survive_a_restart(tmp_path: Path) -> None:
    first = DiskAudioStore(tmp_path, max_bytes=10**8, ttl=TTL)
    assert await put(first, "a" * 64, audio(50_000))
    await first.aclose()

    second = DiskAudioStore(tmp_path, max_bytes=10**8, ttl=TTL)
    try:
        assert await read(await second.open("a" * 64)) == audio(50_000)
    finally:
        await second.aclose()


async def test_size_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    # diskcache evicts ten least recently used entries at a time, so entries are small
    # beside the bound here, as audio is beside the default gigabyte.
    size, limit = 20_000, 1_000_000
    store = DiskAudioStore(tmp_path, max_bytes=limit, ttl=TTL)
    digests = [f"{n:064x}" for n in range(60)]
    try:
        for digest in digests[:30]:
            assert await put(store, digest, audio(size), piece=16_384)
        # Reading the first entry makes it the most recently used of the thirty.
        assert await read(await store.open(digests[0])) is not None
        for digest in digests[30:]:
            assert await put(store, digest, audio(size), piece=16_384)

        kept = [d for d in digests if await store.open(d) is not None]
        stats = await store.stats()
    finally:
        await store.aclose()

    assert digests[0] in kept
    assert digests[1] not in kept
    assert digests[-1] in kept
    assert len(kept) < len(digests)
    assert stats.bytes <= limit


_WRITER = """
import asyncio, sys
from shim.cache import DiskAudioStore
from tests.shim.cache.conftest import audio, put

async def main() -> None:
    store = DiskAudioStore(sys.argv[1], max_bytes=10**8, ttl=3600)
    seed = int(sys.argv[2])
    for n in range(10):
        assert await put(store, f"{seed:032x}{n:032x}", audio(20_000, seed=seed + n))
    await store.aclose()

asyncio.run(main())
"""


async def test_processes_share_one_directory(tmp_path: Path) -> None:
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITER, str(tmp_path), str(seed), cwd=ROOT
        )
        for seed in (100, 200)
    ]
    assert [await asyncio.wait_for(w.wait(), 60) for w in writers] == [0, 0]

    store = DiskAudioStore(tmp_path, max_bytes=10**8, ttl=TTL)
    try:
        for seed in (100, 200):
            for n in range(10):
                found = await store.open(f"{seed:032x}{n:032x}")
                assert await read(found) == audio(20_000, seed=seed + n)
        assert (await store.stats()).entries == 20
    finally:
        await store.aclose()


def test_default_directory_is_the_users_cache_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    assert default_cache_dir() == tmp_path / "tts-shim" / "audio"


async def test_a_file_cut_under_a_reader_is_reported_not_served_short(tmp_path: Path) -> None:
    store = DiskAudioStore(tmp_path, max_bytes=10**8, ttl=TTL)
    data = audio(600_000)
    assert await put(store, "a" * 64, data, piece=65_536)
    found = await store.open("a" * 64)
    assert found is not None
    first = await anext(found.chunks)
    _truncate_the_one_value_file(tmp_path, 300_000)

    with pytest.raises(CacheCorrupt):
        async for _chunk in found.chunks:
            pass
    assert first == data[: len(first)]
    await store.aclose()


def _truncate_the_one_value_file(directory: Path, size: int) -> None:
    (value,) = directory.rglob("*.val")  # diskcache's name for a value kept as a file
    with value.open("r+b") as file:
        file.truncate(size)


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_a_directory_that_cannot_be_used_is_named_in_the_error(tmp_path: Path, where: str) -> None:
    # A path under a regular file cannot be created, even by root (for whom permission
    # bits do not stop writes).
    (tmp_path / "file").write_bytes(b"")
    directory = tmp_path / "file" / "sub" if where == "under a file" else tmp_path / "file"

    with pytest.raises(CacheUnavailable) as refused:
        DiskAudioStore(directory, max_bytes=10**8, ttl=TTL)

    assert str(refused.value).startswith(f"cannot use the cache directory {directory}: ")
    assert "\n" not in str(refused.value)
