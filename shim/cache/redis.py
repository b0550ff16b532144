"""The shared audio store: entries in Redis, for replicas that should pay once between them.

An entry is a manifest and its chunks::

    <prefix>:m:{<digest>}                 JSON: write id, chunk count and size, size, SHA-256
    <prefix>:c:{<digest>}:<write id>:<i>  the i-th chunk of the audio

Chunks are written as the audio streams to the client, with a short "pending" time to
live, so a writer that dies leaves nothing behind for long. The commit is one Lua
script: it gives every chunk the entry's time to live, fails if any chunk is already
gone, and only then writes the manifest. Readers read the manifest, check that every
chunk is still there (``maxmemory`` eviction may have taken some), read the first
chunk and only then report a hit; the rest streams on, each chunk's length checked
and the whole digest verified at the end. A missing chunk is a miss, never a short
file. The ``{digest}`` hash tag keeps an entry in one Redis Cluster slot.

Recommended server setting: ``maxmemory-policy allkeys-lru`` (or ``volatile-lru``:
every key here has a time to live).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from shim.cache.outage import Outage, RedisDown
from shim.cache.store import CacheCorrupt, CachedAudio, CacheStats, CacheUnavailable, WriterBase
from shim.config import Config

__all__ = ["DEFAULT_PREFIX", "RedisAudioStore", "connect"]

DEFAULT_PREFIX = "tts-shim"
#: Bytes per Redis value: small enough to stream, large enough to be few.
CHUNK_SIZE = 256 * 1024
#: Time to live of the chunks of an entry still being written, seconds.
PENDING_TTL = 600.0
#: When a newer write replaces an entry, readers still streaming the old one get this long.
REPLACED_TTL = 60.0
_SCAN_BATCH = 500

# KEYS[1]: manifest, KEYS[2..]: the new chunks. ARGV: manifest JSON, ttl ms, chunk key
# prefix of this digest, grace ms for the chunks of a replaced entry.
_COMMIT = """
for i = 2, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], ARGV[2]) == 0 then return 0 end
end
local old = redis.call('GET', KEYS[1])
if old then
  local ok, m = pcall(cjson.decode, old)
  if ok and type(m) == 'table' and m.write and m.chunks then
    for i = 0, m.chunks - 1 do
      redis.call('PEXPIRE', ARGV[3] .. m.write .. ':' .. i, ARGV[4])
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


def connect(url: str, *, timeout: float = Config.redis_timeout) -> Redis:
    """The client for ``url``: ``timeout`` seconds to connect and for each reply (a
    hung Redis then costs a request that much, once: see :mod:`shim.cache.outage`), one
    immediate retry of a connection that fails (a pooled one may be stale after a Redis
    restart) but none of a timeout, no backoff sleeps."""
    client: Redis = Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=30,
    )
    return client


class RedisAudioStore:
    """An :class:`~shim.cache.store.AudioStore` in Redis, shared by every replica.

    Its calls go through the client's :class:`~shim.cache.outage.Outage` (shared with
    the single flight and the counters on the same client, so one outage warns once).
    ``ttl`` is each entry's lifetime in seconds.
    """

    def __init__(
        self,
        client: Redis,
        *,
        ttl: float,
        prefix: str = DEFAULT_PREFIX,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.client = client
        self.ttl = ttl
        self.prefix = prefix
        self.chunk_size = chunk_size
        self.outage = Outage.of(client)
        self._commit = client.register_script(_COMMIT)

    def _manifest_key(self, digest: str) -> str:
        return f"{self.prefix}:m:{{{digest}}}"

    def _chunk_prefix(self, digest: str) -> str:
        return f"{self.prefix}:c:{{{digest}}}:"

    def _chunk_keys(self, digest: str, write: str, count: int) -> list[str]:
        base = self._chunk_prefix(digest) + write
        return [f"{base}:{i}" for i in range(count)]

    @property
    def available(self) -> bool:
        """``False`` while the breaker is open (from a failed call until Redis answers)."""
        return not self.outage.down

    async def open(self, digest: str) -> CachedAudio | None:
        """The entry, its first chunk already read, or ``None``."""
        try:
            raw = await self.outage.guard(self.client.get(self._manifest_key(digest)))
            manifest = _Manifest.parse(raw)
            if manifest is None:
                return None
            keys = self._chunk_keys(digest, manifest.write, manifest.chunks)
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(*keys)
            pipe.get(keys[0])
            present, first = await self.outage.guard(pipe.execute())
            first = _bytes(first)
        except RedisDown:
            return None
        if present != len(keys) or first is None or len(first) != manifest.length(0):
            return None  # evicted in part: a miss (the next commit replaces the manifest)
        return CachedAudio(size=manifest.size, chunks=self._stream(manifest, keys, first))

    async def _stream(
        self, manifest: _Manifest, keys: list[str], first: bytes
    ) -> AsyncIterator[bytes]:
        sha256 = hashlib.sha256(first)
        yield first
        for index, key in enumerate(keys[1:], start=1):
            try:
                chunk = _bytes(await self.outage.guard(self.client.get(key)))
            except RedisDown as exc:
                raise CacheCorrupt("Redis went away while streaming a cached entry") from exc
            if chunk is None or len(chunk) != manifest.length(index):
                raise CacheCorrupt("a chunk of a cached entry was evicted while streaming")
            sha256.update(chunk)
            yield chunk
        if sha256.hexdigest() != manifest.sha256:
            await self._forget(keys)
            raise CacheCorrupt("a cached entry failed verification")

    async def _forget(self, keys: list[str]) -> None:
        with contextlib.suppress(RedisDown):
            await self.outage.guard(self.client.unlink(*keys))

    def writer(self, digest: str) -> WriterBase:
        """A writer that stores chunks as they come and publishes them on commit."""
        return _RedisWriter(self, digest)

    async def stats(self) -> CacheStats:
        """Entries (manifests) and the audio bytes they describe."""
        entries = size = 0
        try:
            batch: list[Any] = []
            async for key in self.client.scan_iter(match=f"{self.prefix}:m:*", count=_SCAN_BATCH):
                batch.append(key)
                if len(batch) >= _SCAN_BATCH:
                    entries, size = await self._add_sizes(batch, entries, size)
                    batch = []
            entries, size = await self._add_sizes(batch, entries, size)
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"cannot read the cache in Redis: {exc}") from exc
        return CacheStats(entries=entries, bytes=size)

    async def _add_sizes(self, keys: list[Any], entries: int, size: int) -> tuple[int, int]:
        if not keys:
            return entries, size
        for raw in await self.client.mget(keys):
            manifest = _Manifest.parse(raw)
            if manifest is not None:
                entries += 1
                size += manifest.size
        return entries, size

    async def clear(self) -> int:
        """Delete every entry (manifests first, so none is seen half-deleted)."""
        removed = 0
        try:
            for kind in ("m", "c"):
                batch: list[Any] = []
                pattern = f"{self.prefix}:{kind}:*"
                async for key in self.client.scan_iter(match=pattern, count=_SCAN_BATCH):
                    batch.append(key)
                    if len(batch) >= _SCAN_BATCH:
                        removed += await self._unlink(batch, kind)
                        batch = []
                removed += await self._unlink(batch, kind)
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"cannot clear the cache in Redis: {exc}") from exc
        return removed

    async def _unlink(self, keys: list[Any], kind: str) -> int:
        if not keys:
            return 0
        count = int(await self.client.unlink(*keys))
        return count if kind == "m" else 0

    async def aclose(self) -> None:
        """Stop the outage's checks and close the connection pool."""
        await self.outage.aclose()
        await self.client.aclose()


def _bytes(value: bytes | str | None) -> bytes | None:
    # The client is made with decode_responses=False, so values are bytes.
    assert not isinstance(value, str)
    return value


class _Manifest:
    __slots__ = ("chunk_size", "chunks", "sha256", "size", "write")

    def __init__(self, write: str, chunks: int, chunk_size: int, size: int, sha256: str) -> None:
        self.write = write
        self.chunks = chunks
        self.chunk_size = chunk_size
        self.size = size
        self.sha256 = sha256

    def dump(self) -> str:
        return json.dumps(
            {
                "write": self.write,
                "chunks": self.chunks,
                "chunk_size": self.chunk_size,
                "size": self.size,
                "sha256": self.sha256,
            }
        )

    @classmethod
    def parse(cls, raw: bytes | str | None) -> _Manifest | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            manifest = cls(
                str(data["write"]),
                int(data["chunks"]),
                int(data["chunk_size"]),
                int(data["size"]),
                str(data["sha256"]),
            )
        except (ValueError, KeyError, TypeError):
            return None  # not ours, or from an incompatible version: a miss
        plausible = manifest.chunks >= 1 and manifest.chunk_size >= 1
        if not plausible or not 0 < manifest.size <= manifest.chunks * manifest.chunk_size:
            return None
        return manifest

    def length(self, index: int) -> int:
        """The length chunk ``index`` must have."""
        if index < self.chunks - 1:
            return self.chunk_size
        return self.size - self.chunk_size * (self.chunks - 1)


class _RedisWriter(WriterBase):
    def __init__(self, store: RedisAudioStore, digest: str) -> None:
        super().__init__()
        self._store = store
        self._digest = digest
        self._write = secrets.token_hex(8)
        self._buffer = bytearray()
        self._chunks = 0

    def _key(self, index: int) -> str:
        return f"{self._store._chunk_prefix(self._digest)}{self._write}:{index}"

    async def _put(self, chunk: bytes) -> bool:
        self._buffer += chunk
        size = self._store.chunk_size
        while len(self._buffer) >= size:
            piece = bytes(self._buffer[:size])
            del self._buffer[:size]
            if not await self._flush(piece):
                return False
        return True

    async def _flush(self, piece: bytes) -> bool:
        key = self._key(self._chunks)
        self._chunks += 1  # counted before the call: a failed SET may still have landed
        try:
            pending = self._store.client.set(key, piece, px=int(PENDING_TTL * 1000))
            await self._store.outage.guard(pending)
        except RedisDown:
            return False
        return True

    async def _publish(self, size: int, sha256: str) -> bool:
        if self._buffer and not await self._flush(bytes(self._buffer)):
            return False
        self._buffer.clear()
        store = self._store
        manifest = _Manifest(self._write, self._chunks, store.chunk_size, size, sha256)
        keys = [store._manifest_key(self._digest)]
        keys += [self._key(i) for i in range(self._chunks)]
        args: list[str | int] = [
            manifest.dump(),
            int(store.ttl * 1000),
            store._chunk_prefix(self._digest),
            int(REPLACED_TTL * 1000),
        ]
        try:
            committed = await store.outage.guard(store._commit(keys=keys, args=args))
        except RedisDown:
            return False
        return bool(committed)

    async def _discard(self) -> None:
        self._buffer.clear()
        if not self._chunks:
            return
        keys = [self._key(i) for i in range(self._chunks)]
        # If Redis is down the pending time to live removes them.
        with contextlib.suppress(RedisDown):
            await self._store.outage.guard(self._store.client.unlink(*keys))
