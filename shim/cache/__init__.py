"""The audio cache: pay once per generation, embedded on disk or shared through Redis.

How the request path uses it::

    cache = open_cache(config)                  # at start-up (None: cache off)
    key = CacheKey(model, voice, text, fmt, instructions, speed,
                   tenant=tenant_of(paying_key, pass_through=...))
    found = await cache.lookup(key)
    if isinstance(found, Hit):
        stream found.audio.chunks               # x-cache: HIT
    else:
        async with found:                       # x-cache: MISS; aborts unless committed
            generate; for each chunk: send it, then await found.write(chunk)
            await found.commit(expected_size)   # only when whole and verified
"""

from shim.cache.audio_cache import (
    AudioCache,
    Hit,
    Miss,
    check_cache_dir,
    open_cache,
    open_store,
)
from shim.cache.disk import DiskAudioStore, default_cache_dir
from shim.cache.flight import Flights, Lease, LocalFlights, RedisFlights
from shim.cache.key import CacheKey, tenant_of
from shim.cache.outage import Outage
from shim.cache.redis import RedisAudioStore, connect
from shim.cache.store import (
    AudioStore,
    AudioWriter,
    CacheCorrupt,
    CachedAudio,
    CacheError,
    CacheStats,
    CacheUnavailable,
)

__all__ = [
    "AudioCache",
    "AudioStore",
    "AudioWriter",
    "CacheCorrupt",
    "CacheError",
    "CacheKey",
    "CacheStats",
    "CacheUnavailable",
    "CachedAudio",
    "DiskAudioStore",
    "Flights",
    "Hit",
    "Lease",
    "LocalFlights",
    "Miss",
    "Outage",
    "RedisAudioStore",
    "RedisFlights",
    "check_cache_dir",
    "connect",
    "default_cache_dir",
    "open_cache",
    "open_store",
    "tenant_of",
]
