"""The request path's view: lookup, single flight, tee, commit; on disk and on Redis."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shim.cache import (
    AudioCache,
    CacheKey,
    DiskAudioStore,
    Hit,
    LocalFlights,
    Miss,
    RedisAudioStore,
    RedisFlights,
    check_cache_dir,
    open_cache,
    tenant_of,
)
from shim.config import Config, StartupError
from tests.redis_server import RedisServer
from tests.shim.cache.conftest import audio, pieces, redis_store

KEY = CacheKey("tts-1-hd", "alloy", "Thank you for calling.", "mp3", speed=1.0)
DATA = audio(50_000)


@pytest.fixture(params=["disk", "redis"])
async def cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AudioCache]:
    if request.param == "disk":
        store = DiskAudioStore(tmp_path, max_bytes=10**8, ttl=3600)
        opened = AudioCache(store, LocalFlights(), wait=30)
    else:
        redis = redis_store(request.getfixturevalue("redis_server"))
        flights = RedisFlights(redis.client, lease=2.0, poll=0.02)
        opened = AudioCache(redis, flights, wait=30)
    yield opened
    await opened.aclose()


class Upstream:
    """Counts generations; each one streams DATA into the miss, as a download would."""

    def __init__(self) -> None:
        self.generations = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def serve(self, cache: AudioCache, key: CacheKey = KEY) -> tuple[str, bytes]:
        found = await cache.lookup(key)
        if isinstance(found, Hit):
            return "HIT", b"".join([chunk async for chunk in found.audio.chunks])
        async with found:
            self.generations += 1
            self.started.set()
            await self.release.wait()
            for chunk in pieces(DATA, 4096):
                await found.write(chunk)  # (sent to the client first)
            await found.commit(len(DATA))
        return "MISS", DATA


async def test_a_repeat_is_a_hit_with_the_same_bytes(cache: AudioCache) -> None:
    upstream = Upstream()

    results = [await upstream.serve(cache) for _ in range(5)]

    assert [status for status, _ in results] == ["MISS"] + ["HIT"] * 4
    assert all(data == DATA for _, data in results)
    assert upstream.generations == 1


async def test_concurrent_identical_requests_generate_once(cache: AudioCache) -> None:
    upstream = Upstream()
    upstream.release.clear()
    tasks = [asyncio.create_task(upstream.serve(cache)) for _ in range(20)]
    await upstream.started.wait()
    await asyncio.sleep(0.1)  # let the other nineteen reach their wait
    upstream.release.set()

    results = await asyncio.gather(*tasks)

    assert upstream.generations == 1
    assert sorted(status for status, _ in results) == ["HIT"] * 19 + ["MISS"]
    assert all(data == DATA for _, data in results)


async def test_a_failed_generation_lets_one_follower_try(cache: AudioCache) -> None:
    first = await cache.lookup(KEY)
    assert isinstance(first, Miss)
    assert first.leader
    upstream = Upstream()
    followers = [asyncio.create_task(upstream.serve(cache)) for _ in range(5)]
    await asyncio.sleep(0.1)
    assert upstream.generations == 0  # all five are waiting for the leader

    await first.write(DATA[:1000])
    await first.abort()  # e.g. the download broke
    results = await asyncio.gather(*followers)

    assert upstream.generations == 1
    assert sorted(status for status, _ in results) == ["HIT"] * 4 + ["MISS"]


async def _cut_download(cache: AudioCache) -> None:
    found = await cache.lookup(KEY)
    assert isinstance(found, Miss)
    async with found:
        await found.write(DATA[:20_000])
        raise ConnectionError("CDN connection reset")


async def test_a_cut_download_is_not_cached(cache: AudioCache) -> None:
    with pytest.raises(ConnectionError):
        await _cut_download(cache)

    again = await cache.lookup(KEY)
    assert isinstance(again, Miss)
    assert again.leader
    await again.abort()


async def test_a_short_download_is_not_committed(cache: AudioCache) -> None:
    found = await cache.lookup(KEY)
    assert isinstance(found, Miss)
    await found.write(DATA[:20_000])

    assert not await found.commit(expected_size=len(DATA))
    assert isinstance(await cache.lookup(KEY), Miss)


async def test_waiting_is_bounded(cache: AudioCache) -> None:
    leader = await cache.lookup(KEY)
    assert isinstance(leader, Miss)
    assert leader.leader
    cache.wait = 0.2

    follower = await cache.lookup(KEY)  # the leader never finishes

    assert isinstance(follower, Miss)
    assert not follower.leader
    assert follower.writer is not None
    await follower.abort()
    await leader.abort()


async def test_no_cache_skips_lookup_but_stores_and_no_store_stores_nothing(
    cache: AudioCache,
) -> None:
    upstream = Upstream()
    assert (await upstream.serve(cache))[0] == "MISS"

    bypass = await cache.lookup(KEY, read=False)
    assert isinstance(bypass, Miss)
    assert not bypass.leader
    await bypass.write(audio(1000, seed=9))
    assert await bypass.commit()
    hit = await cache.lookup(KEY)
    assert isinstance(hit, Hit)
    assert b"".join([chunk async for chunk in hit.audio.chunks]) == audio(1000, seed=9)

    nothing = await cache.lookup(dataclasses.replace(KEY, voice="nova"), write=False)
    assert isinstance(nothing, Miss)
    assert nothing.writer is None
    await nothing.write(DATA)
    assert not await nothing.commit()
    assert isinstance(await cache.lookup(dataclasses.replace(KEY, voice="nova")), Miss)


async def test_pass_through_tenants_do_not_share_entries(cache: AudioCache) -> None:
    upstream = Upstream()
    key_a = dataclasses.replace(KEY, tenant=tenant_of("sk-a", pass_through=True))
    key_b = dataclasses.replace(KEY, tenant=tenant_of("sk-b", pass_through=True))

    assert (await upstream.serve(cache, key_a))[0] == "MISS"
    assert (await upstream.serve(cache, key_b))[0] == "MISS"
    assert (await upstream.serve(cache, key_a))[0] == "HIT"


async def test_open_cache_follows_the_config(tmp_path: Path, redis_server: RedisServer) -> None:
    assert open_cache(Config(cache=False)) is None
    assert open_cache(Config(cache=False, redis_url=redis_server.url)) is None

    disk = open_cache(Config(cache_dir=str(tmp_path), cache_max_bytes=10**6, cache_ttl=60))
    assert disk is not None
    assert isinstance(disk.store, DiskAudioStore)
    assert disk.store.directory == tmp_path
    assert isinstance(disk.flights, LocalFlights)
    await disk.aclose()

    shared = open_cache(Config(redis_url=redis_server.url, deadline=12))
    assert shared is not None
    assert isinstance(shared.store, RedisAudioStore)
    assert isinstance(shared.flights, RedisFlights)
    assert shared.flights.outage is shared.store.outage
    assert shared.wait == 12
    assert (await Upstream().serve(shared))[0] == "MISS"
    assert (await Upstream().serve(shared))[0] == "HIT"
    await shared.aclose()


# -- check_cache_dir: the directory, tried before the app starts ------------------------


def test_a_given_directory_is_created_and_kept(tmp_path: Path) -> None:
    config = Config(cache_dir=str(tmp_path / "new" / "audio"))

    assert check_cache_dir(config) is config
    assert (tmp_path / "new" / "audio").is_dir()


def test_a_given_directory_that_cannot_be_used_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    directory = tmp_path / "file" / "audio"  # under a regular file: not even root makes it

    with pytest.raises(StartupError) as refused:
        check_cache_dir(Config(cache_dir=str(directory)))

    assert f"cannot use the cache directory {directory}: " in str(refused.value)
    assert "--cache-dir" in str(refused.value)


@pytest.mark.parametrize("variable", ["HOME", "XDG_CACHE_HOME"])
def test_an_unusable_default_directory_warns_and_turns_the_cache_off(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
) -> None:
    (tmp_path / "file").write_bytes(b"")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv(variable, str(tmp_path / "file"))
    config = Config(deadline=12)

    with caplog.at_level("WARNING", logger="tts_shim"):
        checked = check_cache_dir(config)

    assert checked.cache is False
    assert open_cache(checked) is None
    assert dataclasses.replace(checked, cache=True) == config  # nothing else changed
    [warning] = [record for record in caplog.records if record.levelname == "WARNING"]
    assert str(tmp_path / "file") in warning.getMessage()
    assert "without a cache" in warning.getMessage()


def test_off_or_on_redis_no_directory_is_touched(tmp_path: Path) -> None:
    off = Config(cache=False, cache_dir=str(tmp_path / "off"))
    shared = Config(cache_dir=str(tmp_path / "redis"), redis_url="redis://127.0.0.1:1/0")

    assert check_cache_dir(off) is off
    assert check_cache_dir(shared) is shared
    assert list(tmp_path.iterdir()) == []
