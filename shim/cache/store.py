"""What an audio store offers, whichever one the shim was started with.

Two implementations satisfy :class:`AudioStore`: :class:`~shim.cache.disk.DiskAudioStore`
(embedded, the default) and :class:`~shim.cache.redis.RedisAudioStore` (shared by
replicas). Both promise the same things:

- An entry is visible only after :meth:`AudioWriter.commit` verified it whole; an
  aborted, failed or abandoned write is never read back, not even in part.
- :meth:`AudioStore.open` returns a whole entry or ``None``; an entry whose parts went
  missing (evicted, expired) is a miss, never a short file.
- The data path never sees a store error: an unreachable store is a miss, and a write
  to it is dropped (see :mod:`shim.cache.outage`; a disk that cannot write keeps
  serving what it holds, see :mod:`shim.cache.disk`). Only the operator calls
  :meth:`~AudioStore.stats` and :meth:`~AudioStore.clear` raise :class:`CacheUnavailable`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol

__all__ = [
    "AudioStore",
    "AudioWriter",
    "CacheCorrupt",
    "CacheError",
    "CacheStats",
    "CacheUnavailable",
    "CachedAudio",
    "WriterBase",
]


class CacheError(Exception):
    """Base of the cache's own errors."""


class CacheUnavailable(CacheError):
    """The store cannot be reached (raised to operators' commands only)."""


class CacheCorrupt(CacheError):
    """An entry went missing or failed verification while it was being streamed.

    Raised by :attr:`CachedAudio.chunks` only after the first chunk, so the caller has
    already sent bytes and must cut the transfer (the entry is deleted meanwhile).
    """


@dataclass(frozen=True)
class CacheStats:
    """How much a store holds."""

    entries: int
    bytes: int


@dataclass
class CachedAudio:
    """A hit: the entry's ``size`` in bytes and its ``chunks``, read as they are iterated.

    The first chunk has already been read when :meth:`AudioStore.open` returns, so a hit
    cannot fail before its first byte. Iterate to the end or call :meth:`aclose`.
    """

    size: int
    chunks: AsyncIterator[bytes]

    async def aclose(self) -> None:
        """Release what the reader holds (a file handle), when not iterated to the end."""
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class AudioWriter(Protocol):
    """One entry being written while its audio streams to the client (a tee).

    ``write`` never raises and never blocks on a failed store: a write that cannot be
    kept is dropped and ``commit`` then returns ``False``. Use as an async context
    manager: leaving it without a successful ``commit`` aborts.
    """

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (the bytes just sent to the client)."""

    async def commit(self, expected_size: int | None = None) -> bool:
        """Make the entry visible, if every byte arrived (``expected_size``, when the
        download announced one, must match) and the store kept them. Returns whether it
        was committed; ``False`` leaves nothing visible."""

    async def abort(self) -> None:
        """Discard what was written. Idempotent; a no-op after ``commit``."""

    async def __aenter__(self) -> AudioWriter: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class AudioStore(Protocol):
    """Finished audio by :attr:`CacheKey.digest <shim.cache.key.CacheKey.digest>`."""

    @property
    def available(self) -> bool:
        """``False`` while the store is known to be unreachable: requests then bypass
        the cache (nothing could be read, kept or shared) rather than wait on it."""

    async def open(self, digest: str) -> CachedAudio | None:
        """The whole entry, streamed, or ``None`` (absent, expired, partly evicted, or the
        store is unreachable)."""

    def writer(self, digest: str) -> AudioWriter:
        """A writer for a new entry under ``digest``; replaces any older one on commit."""

    async def stats(self) -> CacheStats:
        """Entries and bytes held. Raises :class:`CacheUnavailable`."""

    async def clear(self) -> int:
        """Delete every entry; returns how many. Raises :class:`CacheUnavailable`."""

    async def aclose(self) -> None:
        """Release connections and handles (at shutdown)."""


class WriterBase:
    """What every :class:`AudioWriter` does alike: counting, hashing, the commit check and
    the rule that leaving the ``async with`` block without a commit aborts.

    Subclasses keep the bytes (``_put``), publish them (``_publish``) and throw them
    away (``_discard``); ``_put`` returns ``False`` once it cannot keep them.
    """

    def __init__(self) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._state: Literal["open", "committed", "aborted", "broken"] = "open"

    async def _put(self, chunk: bytes) -> bool:
        raise NotImplementedError

    async def _publish(self, size: int, sha256: str) -> bool:
        raise NotImplementedError

    async def _discard(self) -> None:
        raise NotImplementedError

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``; a chunk the store cannot keep breaks the entry, silently."""
        if self._state != "open" or not chunk:
            return
        self.size += len(chunk)
        self._sha256.update(chunk)
        if not await self._put(chunk):
            self._state = "broken"

    async def commit(self, expected_size: int | None = None) -> bool:
        """Publish the entry if it is whole; see :meth:`AudioWriter.commit`."""
        if self._state == "committed":
            return True
        whole = self.size > 0 and expected_size in (None, self.size)
        if self._state != "open" or not whole:
            await self.abort()
            return False
        if await self._publish(self.size, self._sha256.hexdigest()):
            self._state = "committed"
            return True
        await self.abort()
        return False

    async def abort(self) -> None:
        """Discard what was written; a no-op after ``commit``."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        await self._discard()

    async def __aenter__(self) -> WriterBase:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != "committed":
            await self.abort()
