"""Both audio stores (disk, and Redis on a real ``redis-server``), and a helper to fill them."""

from __future__ import annotations

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


def redis_store(server: RedisServer, **options: object) -> RedisAudioStore:
    """A store on ``server`` that retries at once after a failure (tests restart Redis)."""
    settings: dict[str, object] = {"ttl": TTL, "chunk_size": SMALL_CHUNK}
    settings["outage"] = Outage(retry_interval=0.0)
    settings.update(options)
    return RedisAudioStore(connect(server.url), **settings)  # type: ignore[arg-type]


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
