"""The embedded audio store: a :mod:`diskcache` directory, the default.

diskcache keeps an SQLite index beside the audio files, so several worker processes
can share one directory, entries survive restarts, the size is bounded with
least-recently-used eviction and each entry has a time to live. Its calls are
blocking, so they run in a worker thread; the audio being written is spooled to a
temporary file (in memory while small) and handed to diskcache whole on commit,
which is what keeps an aborted write invisible.

A disk that fills up (or turns read-only) is an *episode* (:mod:`shim.cache.episode`):
one warning when writes start failing, one line when one succeeds again, and in
between the store keeps serving what it holds. Reads then leave the access time
alone: updating it is a write, which fails on a full disk and would turn every hit
into a miss (a generation paid again).
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import diskcache
import platformdirs

from shim.cache.episode import Episode
from shim.cache.store import (
    CacheCorrupt,
    CachedAudio,
    CacheStats,
    CacheUnavailable,
    WriterBase,
)

__all__ = ["DiskAudioStore", "default_cache_dir"]

#: Bytes read from an entry's file at a time.
READ_CHUNK = 256 * 1024
#: A write is kept in memory up to this size, then spooled to a file.
_SPOOL_IN_MEMORY = 1024 * 1024
_EVICTION = "least-recently-used"
#: Errors of a write that the disk refused (full, over quota, read-only, failing); a
#: busy index (diskcache.Timeout) is not one of them.
_WRITE_ERRORS = (OSError, sqlite3.Error)
#: SQLite's result code for "database or disk is full" (sqlite3.SQLITE_FULL, which the
#: type stubs lack).
_SQLITE_FULL = 13


def default_cache_dir() -> Path:
    """The user's cache directory for the shim's audio (e.g. ``~/.cache/tts-shim/audio``)."""
    return Path(platformdirs.user_cache_dir("tts-shim", appauthor=False)) / "audio"


class DiskAudioStore:
    """An :class:`~shim.cache.store.AudioStore` in a local directory.

    ``max_bytes`` bounds the directory (index included), evicting the least recently
    used entries (diskcache evicts ten at a time, so the bound should hold many entries:
    the default gigabyte holds thousands); ``ttl`` is each entry's lifetime in seconds.
    Open one per process, after any fork (uvicorn workers each open their own on the
    same directory).
    """

    def __init__(self, directory: str | Path | None = None, *, max_bytes: int, ttl: float) -> None:
        """Open (creating it if need be) the cache in ``directory``; raises
        :class:`~shim.cache.store.CacheUnavailable`, naming it, if it cannot be used."""
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.ttl = ttl
        self._cache = _open_index(self.directory, max_bytes)
        #: Writes failing: counted, warned about once per episode (the metrics read it).
        self.writes = Episode(
            f"the disk cache in {self.directory} cannot write (%s); serving what it "
            "holds, caching nothing new until a write succeeds",
            f"the disk cache in {self.directory} can write again",
        )

    @property
    def available(self) -> bool:
        """A local directory is always there (a full disk still serves what it holds;
        see :attr:`writes`)."""
        return True

    async def open(self, digest: str) -> CachedAudio | None:
        """The entry as a stream of chunks, or ``None``."""
        return await asyncio.to_thread(self._open, digest)

    def _open(self, digest: str) -> CachedAudio | None:
        try:
            handle = self._get(digest)
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc) or self.writes.failing:
                return None
            # The hit's access-time update failed for want of room: the disk filled up
            # since the last write. Read it again without the update.
            self._failed_write(exc)
            try:
                handle = self._get(digest)
            except (OSError, sqlite3.Error, diskcache.Timeout):
                return None
        except (OSError, sqlite3.Error, diskcache.Timeout):
            # The file evicted between the index lookup and the open, the disk failing,
            # or the index locked too long by another process: a miss.
            return None
        if handle is None:
            return None
        # An open file stays readable after another process evicts the entry.
        try:
            size = handle.seek(0, 2)
            handle.seek(0)
            first = handle.read(READ_CHUNK)
        except OSError:
            handle.close()
            return None
        return CachedAudio(size=size, chunks=_read_rest(handle, size, first))

    def _get(self, digest: str) -> IO[bytes] | None:
        handle: IO[bytes] | None = self._cache.get(digest, read=True)
        return handle

    def _failed_write(self, exc: BaseException) -> None:
        """Count a refused write; the first of an episode warns, and reads stop writing
        the access time (diskcache's policy, in this process only: not in the index)."""
        if self.writes.fail(_reason(exc)):
            self._cache.reset("eviction_policy", "none", update=False)

    def _wrote(self) -> None:
        if self.writes.recover():
            self._cache.reset("eviction_policy", _EVICTION, update=False)

    def writer(self, digest: str) -> WriterBase:
        """A writer whose commit stores the entry atomically under ``digest``."""
        return _DiskWriter(self, digest)

    async def stats(self) -> CacheStats:
        """Live entries, and bytes on disk (audio and index)."""
        return await asyncio.to_thread(self._stats)

    def _stats(self) -> CacheStats:
        try:
            self._cache.expire()
            return CacheStats(entries=len(self._cache), bytes=self._cache.volume())
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            raise CacheUnavailable(f"cannot read the cache in {self.directory}: {exc}") from exc

    async def clear(self) -> int:
        """Delete every entry; returns how many."""
        try:
            return int(await asyncio.to_thread(self._cache.clear))
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            raise CacheUnavailable(f"cannot clear the cache in {self.directory}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the index (the directory stays)."""
        self.close()

    def close(self) -> None:
        """:meth:`aclose`, for code outside an event loop."""
        self._cache.close()

    def _store(self, digest: str, spool: IO[bytes]) -> bool:
        spool.seek(0)
        try:
            stored: bool = self._cache.set(digest, spool, read=True, expire=self.ttl)
        except diskcache.Timeout:
            return False  # the index locked for too long by another process: not cached
        except _WRITE_ERRORS as exc:
            self._failed_write(exc)
            return False
        self._wrote()
        return stored


def _open_index(directory: Path, max_bytes: int) -> diskcache.Cache:
    try:
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is not a directory")
        # Made here rather than by diskcache, whose error hides the reason.
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "it is not writable")
        return diskcache.Cache(
            str(directory),
            size_limit=max_bytes,
            eviction_policy=_EVICTION,
            # SQLite's busy timeout: past it a lookup is a miss, not a stalled request.
            timeout=2.0,
        )
    except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
        raise CacheUnavailable(
            f"cannot use the cache directory {directory}: {_reason(exc)}"
        ) from None


def _disk_full(exc: sqlite3.Error) -> bool:
    code: object = getattr(exc, "sqlite_errorcode", None)
    return code == _SQLITE_FULL


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words (an OSError's text without its number)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _read_rest(handle: IO[bytes], size: int, first: bytes) -> AsyncIterator[bytes]:
    try:
        chunk, sent = first, 0
        while chunk:
            yield chunk
            sent += len(chunk)
            if sent >= size:
                break  # all of it: no read (a thread hop) just to meet the end
            try:
                chunk = await asyncio.to_thread(handle.read, READ_CHUNK)
            except OSError as exc:
                raise CacheCorrupt(f"reading a cached entry failed: {exc}") from exc
        if sent != size:
            raise CacheCorrupt("a cached entry's file changed size while it was read")
    finally:
        handle.close()


class _DiskWriter(WriterBase):
    def __init__(self, store: DiskAudioStore, digest: str) -> None:
        super().__init__()
        self._store = store
        self._digest = digest
        self._spool: IO[bytes] | None = None

    async def _put(self, chunk: bytes) -> bool:
        try:
            if self._spool is None:
                self._spool = _spool(self._store.directory)
            # A write to a page-cached file (or to memory, while small) does not stall
            # the event loop enough to be worth a thread hop per chunk.
            self._spool.write(chunk)
        except OSError as exc:
            self._store._failed_write(exc)  # the spool, past its memory part, is on disk
            return False
        return True

    async def _publish(self, size: int, sha256: str) -> bool:
        spool = self._spool
        if spool is None:
            return False
        return await asyncio.to_thread(self._store._store, self._digest, spool)

    async def _discard(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    async def commit(self, expected_size: int | None = None) -> bool:
        try:
            return await super().commit(expected_size)
        finally:
            await self._discard()


def _spool(directory: Path) -> IO[bytes]:
    # Closed by the writer (commit or abort), not by a with block.
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, dir=str(directory))
