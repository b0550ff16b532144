"""How much speech work the shim takes on at once, and whether it is shutting down.

Every request that calls the AI/ML API (``/v1/audio/speech`` and
``/v1/chat/completions``) takes a slot after its body has been read and validated,
just before the billed call, and gives it back when its audio stream is closed
(finished, failed, or abandoned by the client). So a slot stands for one upstream
generation plus one download and, when the formats differ, one transcoder thread;
slow or malformed clients never hold one. When every slot is taken, up to
``max_queue`` requests wait, first come first served, for at most ``queue_timeout``
seconds; the rest get 429 with ``Retry-After`` at once. The catalogue and health
routes never take a slot, so they answer however busy the shim is.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

import anyio

from shim import errors
from shim.config import Config
from shim.errors import APIError

__all__ = ["RETRY_AFTER", "Capacity", "draining_error"]

#: Seconds a client is told to wait after a 429 for capacity: slots free up as
#: streams finish, so a short, fixed hint is as good as an estimate.
RETRY_AFTER = 1


class Capacity:
    """A fair semaphore with a bounded wait queue, plus the draining flag and the count
    of HTTP requests in progress (any route), which the shutdown waits for.

    Single event loop only (the server's). ``limit`` 0 means no cap: slots are
    still counted, for ``/readyz``.
    """

    def __init__(self, limit: int, max_queue: int, queue_timeout: float) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.in_flight = 0
        #: Requests turned away with 429 since start-up.
        self.rejected = 0
        #: Shutting down: ``/readyz`` answers 503 (work is still taken until ``draining``).
        self.leaving = False
        #: New speech work is refused with a 503.
        self.draining = False
        #: HTTP requests in progress, any route (:meth:`enter` and :meth:`leave`).
        self.requests = 0
        self._idle: asyncio.Event | None = None
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @classmethod
    def from_config(cls, config: Config) -> Capacity:
        return cls(config.max_concurrency, config.max_queue, config.queue_timeout)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def full(self) -> bool:
        """Every slot is taken (never, with no cap): new work would wait or get a 429."""
        return 0 < self.limit <= self.in_flight

    def start_leaving(self) -> None:
        """Say not ready from now on, still taking work (``--shutdown-delay``)."""
        self.leaving = True

    def start_draining(self) -> None:
        """Refuse new speech work from now on (the server calls this when it stops
        accepting connections, on SIGTERM or after ``--shutdown-delay``)."""
        self.leaving = self.draining = True

    def enter(self) -> None:
        """A request began (the app's outermost own middleware calls this)."""
        self.requests += 1

    def leave(self) -> None:
        """A request ended, its clean-up included."""
        self.requests -= 1
        if not self.requests and self._idle is not None:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no request is in progress. The app's shutdown waits for this
        (bounded), before it closes the clients that requests the server cut at the end
        of ``--graceful-timeout`` still use to clean up."""
        while self.requests:
            self._idle = asyncio.Event()
            await self._idle.wait()

    async def acquire(self) -> None:
        """Take a slot, waiting in line if need be; raise a 429 or 503 :class:`APIError`
        when none can be had. Pair every successful call with :meth:`release`."""
        if self.draining:
            raise draining_error()
        if self.limit == 0 or (self.in_flight < self.limit and not self._waiters):
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_queue or self.queue_timeout <= 0:
            raise self._busy()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            with anyio.fail_after(self.queue_timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):  # release() may have taken it
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise self._busy() from None
            raise
        if self.draining:
            self.release()
            raise draining_error()

    def release(self) -> None:
        """Give a slot back: to the longest waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; in_flight stays
                return
        self.in_flight -= 1

    def _busy(self) -> APIError:
        self.rejected += 1
        return errors.rate_limit_exceeded(
            f"This tts-shim is at capacity ({self.limit} requests in progress, "
            f"{self.queued} waiting). Retry after {RETRY_AFTER} s.",
            retry_after=RETRY_AFTER,
        )

    def snapshot(self) -> dict[str, int | bool | None]:
        return {
            "in_flight": self.in_flight,
            "queued": self.queued,
            "max_concurrency": self.limit or None,
            "max_queue": self.max_queue,
            "rejected": self.rejected,
            "draining": self.leaving,
        }


def draining_error() -> APIError:
    """The 503 for work that arrives, or is still waiting, once the shim is shutting down."""
    return errors.service_unavailable(
        "This tts-shim is shutting down and takes no new requests; retry on another "
        "instance or after it restarts.",
        retry_after=RETRY_AFTER,
    )
