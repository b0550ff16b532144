"""Both audio stores (disk, and Redis on a real ``redis-server``), and a helper to fill them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shim.cache import AudioStore, CachedAudio, DiskAudioStore, Outage, RedisAudioStore, connect
from tests.redis_server import RedisServer

#: Small Redis chunks, so a few kilobytes of audio make an entry of many chunks.
SMALL_CHUNK = 1000
TTL = 3600.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


#: Seconds between the breaker's PINGs in these tests (tests restart Redis).
PROBE_EVERY = 0.05


def redis_store(server: RedisServer, **options: object) -> RedisAudioStore:
    """A store on ``server`` whose breaker checks often (tests restart Redis)."""
    settings: dict[str, object] = {"ttl": TTL, "chunk_size": SMALL_CHUNK}
    settings.update(options)
    client = connect(server.url)
    Outage.of(client).probe_every = PROBE_EVERY
    return RedisAudioStore(client, **settings)  # type: ignore[arg-type]


async def until_up(outage: Outage, timeout: float = 10.0) -> None:
    """Wait until ``outage``'s breaker closed (its PING succeeded), at most ``timeout``."""
    for _ in range(int(timeout / 0.01)):
        if not outage.down:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the breaker was still open after {timeout} s")


@pytest.fixture(params=["disk", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AudioStore]:
    """Each test using it runs against both implementations."""
    opened: AudioStore
    if request.param == "disk":
        opened = DiskAudioStore(tmp_path / "cache", max_bytes=64 * 1024 * 1024, ttl=TTL)
    else:
        opened = redis_store(request.getfixturevalue("redis_server"))
    yield opened
    await opened.aclose()


def audio(size: int, seed: int = 0) -> bytes:
    """``size`` pseudo-random bytes, the same for the same seed: no two pieces of a
    stream alike, so a piece out of place or repeated shows."""
    return random.Random(seed).randbytes(size)


def pieces(data: bytes, size: int) -> list[bytes]:
    """``data`` cut as a download might deliver it."""
    return [data[i : i + size] for i in range(0, len(data), size)]


async def put(store: AudioStore, digest: str, data: bytes, piece: int = 777) -> bool:
    """Write ``data`` in ``piece``-sized chunks and commit; returns whether it was stored."""
    async with store.writer(digest) as writer:
        for chunk in pieces(data, piece):
            await writer.write(chunk)
        return await writer.commit(len(data))


async def read(found: CachedAudio | None) -> bytes | None:
    """The whole entry, or ``None`` for a miss."""
    if found is None:
        return None
    data = b"".join([chunk async for chunk in found.chunks])
    assert len(data) == found.size
    return data
