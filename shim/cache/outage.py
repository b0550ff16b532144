"""How the cache behaves when Redis is down: as if there were no cache, quietly.

Every Redis call of the data path goes through :meth:`Outage.guard`. A failure turns
into "no cache" for that call (a miss, a dropped write, a process-local lease), logs
one warning a minute at most, and makes the next calls skip Redis for
``retry_interval`` seconds, so a Redis that does not answer costs each request
nothing rather than a connect timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import RedisError

__all__ = ["WARNING_INTERVAL", "Outage", "RedisDown"]

logger = logging.getLogger("tts_shim")

#: Seconds between two warnings about the same outage.
WARNING_INTERVAL = 60.0

T = TypeVar("T")


class RedisDown(Exception):
    """Redis was unreachable or refused the call; the cache acts as if absent."""


class Outage:
    """The state of one Redis connection pool as the data path sees it."""

    def __init__(self, *, retry_interval: float = 1.0) -> None:
        self.retry_interval = retry_interval
        self._skip_until = 0.0
        self._warned_at: float | None = None
        self.down = False

    async def guard(self, call: Awaitable[T]) -> T:
        """Await ``call``; a Redis or socket error becomes :class:`RedisDown`."""
        now = time.monotonic()
        if now < self._skip_until:
            if hasattr(call, "close"):
                call.close()  # a coroutine not awaited would warn
            raise RedisDown("Redis is skipped after a recent failure")
        try:
            result = await call
        except (RedisError, OSError) as exc:
            self.record(exc)
            raise RedisDown(str(exc)) from exc
        if self.down:
            self.down = False
            logger.info("Redis is reachable again; the audio cache is back")
        return result

    def record(self, exc: BaseException) -> None:
        """Note a failed Redis call made without :meth:`guard`."""
        now = time.monotonic()
        self.down = True
        self._skip_until = now + self.retry_interval
        if self._warned_at is None or now - self._warned_at >= WARNING_INTERVAL:
            self._warned_at = now
            # The exception's text names host and port, never the URL's password.
            logger.warning(
                "Redis unavailable (%s: %s); serving without the audio cache. "
                "This warning repeats at most once a minute.",
                type(exc).__name__,
                exc,
            )
