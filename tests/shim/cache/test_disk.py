"""The embedded store: restarts, size bound with LRU eviction, several processes, and a
disk that fills up (a real 4 MiB tmpfs)."""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shim.cache import CacheCorrupt, CacheUnavailable, DiskAudioStore, default_cache_dir
from shim.testing import MockUpstream
from tests.shim.cache.conftest import audio, put, read
from tests.shim.conftest import generations, parse, total

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


# -- a disk that fills up ----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, to fill up (mounting needs root or CAP_SYS_ADMIN)."""
    mount_command, umount_command = shutil.which("mount"), shutil.which("umount")
    if mount_command is None or umount_command is None:
        pytest.skip("no mount command: cannot make a small filesystem to fill up")
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        [mount_command, "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 4 MiB tmpfs to fill up: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run([umount_command, "--lazy", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file on ``disk`` until no byte more fits; returns it (remove it to free)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(b"\0" * 65_536)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    assert shutil.disk_usage(disk).free == 0
    return filler


def _logged(caplog: pytest.LogCaptureFixture, level: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tts_shim" and r.levelname == level]


async def test_a_full_disk_serves_what_it_holds_warns_once_and_recovers(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DiskAudioStore(small_disk / "cache", max_bytes=10**9, ttl=TTL)
    held = {f"{n:064x}": audio(100_000, seed=n) for n in range(5)}
    for digest, data in held.items():
        assert await put(store, digest, data, piece=16_384)
    filler = _fill(small_disk)

    with caplog.at_level(logging.INFO, logger="tts_shim"):
        # A hit's access time is a write too: it failed, and made every entry a miss.
        served = {digest: await read(await store.open(digest)) for digest in held}
        new = [
            await put(store, f"{n:064x}", audio(size, seed=n))
            for n in (10, 11, 12)
            for size in (100, 50_000, 2_000_000)
        ]  # in the index, in a file, spooled
        again = {digest: await read(await store.open(digest)) for digest in held}
        warnings = _logged(caplog, "WARNING")
        filler.unlink()
        stored = await put(store, "f" * 64, audio(50_000, seed=99))
    try:
        assert served == held
        assert again == held
        assert not any(new)
        assert len(warnings) == 1, warnings
        assert f"the disk cache in {small_disk / 'cache'} cannot write (" in warnings[0]
        assert store.writes.episodes == 1
        assert store.writes.failures >= len(new)
        # Room again: the next write succeeds and ends the episode, in one line.
        assert stored
        assert not store.writes.failing
        assert _logged(caplog, "INFO") == [
            f"the disk cache in {small_disk / 'cache'} can write again"
        ]
        assert await read(await store.open("f" * 64)) == audio(50_000, seed=99)
    finally:
        await store.aclose()


async def test_a_full_disk_through_the_shim_hits_what_it_holds_and_shows_in_metrics(
    shim: Any, upstream: MockUpstream, small_disk: Path
) -> None:
    client = shim(cache=True, cache_dir=str(small_disk / "cache"))
    held = {"model": "tts-1", "voice": "alloy", "input": "Kept before the disk filled up."}
    new = {**held, "input": "Asked once the disk was full."}
    assert (await client.post("/v1/audio/speech", json=held)).headers["x-cache"] == "MISS"
    healthy = parse((await client.get("/metrics")).text)
    filler = _fill(small_disk)

    hit = await client.post("/v1/audio/speech", json=held)
    misses = [await client.post("/v1/audio/speech", json=new) for _ in range(2)]
    full = parse((await client.get("/metrics")).text)
    filler.unlink()
    refilled = [await client.post("/v1/audio/speech", json=new) for _ in range(2)]
    recovered = parse((await client.get("/metrics")).text)

    assert total(healthy, "tts_shim_cache_writable") == 1
    assert total(healthy, "tts_shim_cache_write_failures_total") == 0
    assert (hit.status_code, hit.headers["x-cache"]) == (200, "HIT")  # not paid again
    assert [(r.status_code, r.headers["x-cache"]) for r in misses] == [(200, "MISS")] * 2
    assert total(full, "tts_shim_cache_writable") == 0
    assert total(full, "tts_shim_cache_write_failures_total") >= 2
    assert [r.headers["x-cache"] for r in refilled] == ["MISS", "HIT"]
    assert total(recovered, "tts_shim_cache_writable") == 1
    assert generations(upstream) == 1 + 2 + 1
    assert "tts_shim_redis_up" not in recovered  # no Redis, no Redis metrics
