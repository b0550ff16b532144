"""What the shim does when Redis does not answer: carry on without it, cheaply.

One :class:`Outage` per Redis client (:meth:`Outage.of`), shared by everything using
that client: the audio cache, its single flight, the limit counters and the usage
ledger. Each of their calls goes through :meth:`Outage.guard`. When one cannot reach
Redis, or gets no answer within the client's timeout (``--redis-timeout``), the breaker
opens: from then on calls are skipped at once with :class:`RedisDown`, which each user
turns into "no Redis" (the cache bypassed, a lease local to the process, a key with
limits refused, usage not recorded), and a background PING every ``probe_every``
seconds closes the breaker when Redis answers again. So a hung Redis costs the requests
already talking to it one timeout, and the next ones nothing.

One warning when an outage starts, one info line when it ends. The counts
(:attr:`Outage.outages`, :attr:`Outage.skipped`) and :attr:`Outage.down` are what the
``tts_shim_redis_*`` metrics show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Coroutine
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shim.cache.episode import Episode

__all__ = ["PROBE_EVERY", "WARNING_INTERVAL", "Outage", "RedisDown"]

logger = logging.getLogger("tts_shim")

#: Seconds between two PINGs while the breaker is open.
PROBE_EVERY = 2.0
#: Seconds between two warnings about calls Redis answered with an error.
WARNING_INTERVAL = 60.0

T = TypeVar("T")

#: Errors that mean Redis cannot be reached or did not answer in time.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

_outages: weakref.WeakKeyDictionary[Redis, Outage] = weakref.WeakKeyDictionary()


class RedisDown(Exception):
    """Redis was not asked (the breaker is open), unreachable, or refused the call; the
    caller goes on as if there were no Redis."""


class Outage:
    """The breaker of one Redis client. Get it with :meth:`of`."""

    def __init__(self, client: Redis, *, probe_every: float = PROBE_EVERY) -> None:
        # Weak: the registry is keyed by the client, and a value holding its key
        # strongly would keep both alive for ever.
        self._client = weakref.ref(client)
        self.probe_every = probe_every
        #: Calls not made because the breaker was open.
        self.skipped = 0
        self._episode = Episode(
            "Redis does not answer (%s); serving without it until it does: audio "
            "uncached (x-cache: BYPASS), keys with limits refused (503), usage not "
            "recorded. It is checked in the background.",
            "Redis answers again; the cache, the limits and usage use it again",
        )
        self._probe: asyncio.Task[None] | None = None
        self._refused_at: float | None = None

    @classmethod
    def of(cls, client: Redis) -> Outage:
        """The outage state shared by every user of ``client``."""
        found = _outages.get(client)
        if found is None:
            found = _outages[client] = cls(client)
        return found

    @property
    def down(self) -> bool:
        """Whether the breaker is open (from a failed call until a PING succeeds)."""
        return self._episode.failing

    @property
    def outages(self) -> int:
        """Outages since start-up."""
        return self._episode.episodes

    async def guard(self, call: Awaitable[T]) -> T:
        """Await ``call``, unless the breaker is open; an unreachable Redis, or one that
        answers with an error, becomes :class:`RedisDown`. (A
        :class:`~redis.exceptions.LockError` is the lock's own answer and passes.)"""
        if self.down:
            self.skipped += 1
            if isinstance(call, Coroutine):
                call.close()  # a coroutine never awaited would warn
            raise RedisDown("Redis is not asked until it answers a PING again")
        try:
            return await call
        except _UNREACHABLE as exc:
            self.record(exc)
            raise RedisDown(str(exc)) from exc
        except LockError:
            raise
        except RedisError as exc:
            # Redis answered (out of memory under noeviction, say): it is up, so no
            # breaker, but this call did nothing.
            self._refused(exc)
            raise RedisDown(str(exc)) from exc

    def record(self, exc: BaseException) -> None:
        """Open the breaker after a call that could not reach Redis, made without
        :meth:`guard`. Call from the event loop."""
        # The exception's text names host and port, never the URL's password.
        if self._episode.fail(f"{type(exc).__name__}: {exc}"):
            self._probe = asyncio.get_running_loop().create_task(self._watch())

    async def check(self) -> bool:
        """PING Redis once (at start-up); ``False``, with the outage's warning and the
        breaker open, when it does not answer."""
        client = self._client()
        if client is None:
            return False
        try:
            await self.guard(client.ping())
        except RedisDown:
            return False
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.probe_every)
            client = self._client()
            if client is None:
                return
            try:
                await client.ping()
            except (RedisError, OSError):
                continue  # still down
            self._episode.recover()
            return

    def _refused(self, exc: RedisError) -> None:
        now = time.monotonic()
        if self._refused_at is None or now - self._refused_at >= WARNING_INTERVAL:
            self._refused_at = now
            logger.warning(
                "Redis refused a call (%s: %s); that request went on without it. This "
                "warning repeats at most once a minute.",
                type(exc).__name__,
                exc,
            )

    async def aclose(self) -> None:
        """Stop checking (at shutdown). Idempotent."""
        probe, self._probe = self._probe, None
        if probe is not None and not probe.done():
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
