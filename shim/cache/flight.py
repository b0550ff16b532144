"""Single flight: one generation per cache key at a time, in a process or across replicas.

The first request for a key *leads*: it holds a lease while it generates and fills the
cache. Identical requests arriving meanwhile *follow*: they wait until the lease is
released (or expires), then look in the cache again, where the leader's entry now is.
A leader whose generation failed releases without committing, so a follower finds no
entry, takes the lease and tries itself; a leader that died simply stops renewing its
lease, which expires. Every wait is bounded by the caller's timeout.

:class:`LocalFlights` coordinates the tasks of one process with asyncio events.
:class:`RedisFlights` adds a Redis lock (``SET NX PX`` through redis-py's
:class:`~redis.asyncio.lock.Lock`, renewed while the leader works) on top of it, so
that of the requests in one process only one talks to Redis.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from shim.cache.outage import Outage, RedisDown
from shim.cache.redis import DEFAULT_PREFIX

__all__ = ["Flights", "Lease", "LocalFlights", "RedisFlights"]

logger = logging.getLogger("tts_shim")

#: Seconds a Redis lease lasts unless renewed; a dead leader blocks followers this long.
LEASE = 10.0
#: Seconds between a follower's checks of the leader's Redis lease.
POLL = 0.1
#: Longest a leader keeps renewing: a lease its holder forgot to release still ends.
MAX_HOLD = 600.0


class Lease(Protocol):
    """The right to generate one key. Release it once the entry is committed or failed."""

    async def release(self) -> None:
        """Let followers look again. Idempotent; never raises a store error."""


class Flights(Protocol):
    """Where leases are held."""

    async def acquire(self, digest: str, timeout: float) -> Lease | None:
        """A lease when no one else holds one for ``digest``.

        Otherwise wait up to ``timeout`` seconds for the holder to release (or its lease
        to expire) and return ``None``: the caller then looks in the cache again, and
        calls ``acquire`` again if the entry is still missing.
        """


class _LocalLease:
    def __init__(self, flights: LocalFlights, digest: str, done: asyncio.Event) -> None:
        self._flights = flights
        self._digest = digest
        self._done = done

    async def release(self) -> None:
        if self._flights._held.get(self._digest) is self._done:
            del self._flights._held[self._digest]
        self._done.set()


class LocalFlights:
    """Leases held by the tasks of one process (one event loop)."""

    def __init__(self) -> None:
        self._held: dict[str, asyncio.Event] = {}

    async def acquire(self, digest: str, timeout: float) -> _LocalLease | None:
        """See :meth:`Flights.acquire`."""
        done = self._held.get(digest)
        if done is None:
            done = self._held[digest] = asyncio.Event()
            return _LocalLease(self, digest, done)
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives
        # as the leader finishes, and the follower would go on after the server cut it.
        released = asyncio.ensure_future(done.wait())
        try:
            await asyncio.wait([released], timeout=max(timeout, 0.0))
        finally:
            released.cancel()
        return None


class _RedisLease:
    def __init__(
        self, local: _LocalLease, lock: Lock, outage: Outage, lease: float, max_hold: float
    ) -> None:
        self._local = local
        self._lock = lock
        self._outage = outage
        self._released = False
        self._renewing = asyncio.create_task(self._renew(lease / 3, max_hold))

    async def _renew(self, every: float, max_hold: float) -> None:
        for _ in range(max(int(max_hold / every), 1)):
            await asyncio.sleep(every)
            try:
                await self._outage.guard(self._lock.reacquire())
            except LockError:
                # The lease expired (this process stalled longer than the lease): a
                # follower may be generating too. Nothing to undo; stop renewing.
                logger.debug("single-flight lease lost before the generation ended")
                return
            except RedisDown:
                return

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._renewing.cancel()
        try:
            await self._outage.guard(self._lock.release())
        except LockError:
            pass  # expired already
        except RedisDown:
            pass  # the lease expires by itself
        finally:
            await self._local.release()


class RedisFlights:
    """Leases in Redis, shared by every replica using the same server and ``prefix``.

    ``lease`` is how long a leader's lock outlives its last renewal (renewed every third
    of it, for ``max_hold`` seconds at most); ``poll`` how often followers look at it.
    If Redis is unreachable the lease is process-local. Calls go through the client's
    :class:`~shim.cache.outage.Outage`.
    """

    def __init__(
        self,
        client: Redis,
        *,
        lease: float = LEASE,
        poll: float = POLL,
        max_hold: float = MAX_HOLD,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.client = client
        self.lease = lease
        self.poll = poll
        self.max_hold = max_hold
        self.prefix = prefix
        self.outage = Outage.of(client)
        self._local = LocalFlights()

    def _name(self, digest: str) -> str:
        return f"{self.prefix}:lock:{{{digest}}}"

    async def acquire(self, digest: str, timeout: float) -> _RedisLease | _LocalLease | None:
        """See :meth:`Flights.acquire`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Tasks of this process queue here; only the one holding this talks to Redis.
        local = await self._local.acquire(digest, timeout)
        if local is None:
            return None
        name = self._name(digest)
        lock = Lock(self.client, name, timeout=self.lease, blocking=False, thread_local=False)
        try:
            if await self.outage.guard(lock.acquire(blocking=False)):
                return _RedisLease(local, lock, self.outage, self.lease, self.max_hold)
            # Another replica leads: wait until its lock is gone (released or expired).
            while (remaining := deadline - loop.time()) > 0:
                await asyncio.sleep(min(self.poll, remaining))
                if not await self.outage.guard(self.client.exists(name)):
                    break
        except RedisDown:
            return local  # no Redis: lead within this process
        except BaseException:
            await local.release()
            raise
        await local.release()
        return None
