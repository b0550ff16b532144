"""Per-key rate limits and budgets, and the usage they are counted on.

Two kinds of counter, each in Redis (``--redis-url``: atomic, shared by every
replica, surviving restarts) or in this process (each process counts alone):

* **Rate limits** (requests and characters per minute) are the ``limits`` package's
  sliding-window counter: the current minute's count plus the previous minute's,
  weighted by how much of it the last 60 s still cover. O(1) per check for any cost,
  atomic in Redis (a Lua script), and exact for the first N requests.
* **Spend** (and the usage report) is a ledger of calendar windows: per key and UTC day,
  and per key and UTC month, requests, characters and micro-dollars. Each request has
  a :class:`Bill`. Before its first generation, once the cache has said which pieces
  it holds, the request *reserves* the cost of the others, atomically checked against
  the key's budgets (a cache hit costs nothing, so it is served at any budget). Each
  generation is counted as spent the moment it is sent, and taken back only when its
  answer proves it was not billed (an error status, or never sent); a call in flight
  when the client leaves runs to its answer, so what the AI/ML API accepted is what
  the ledger holds, to the character. What was reserved and not spent is given back
  when the request ends. Budgets are checked on what is reserved, so concurrent
  requests on several replicas cannot overspend together.

A refused request never reaches the AI/ML API: 429 with OpenAI's envelope,
``rate_limit_exceeded`` or ``insufficient_quota``, and the wait until it would pass
in ``Retry-After``. The clock is injectable (``clock``), so a test can turn a day.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

from shim import errors
from shim.cache.outage import Outage, RedisDown
from shim.clients import Client
from shim.errors import APIError
from shim.prices import MICRO

__all__ = [
    "DAY_RETENTION",
    "Bill",
    "Ledger",
    "MemoryLedger",
    "Quota",
    "RedisLedger",
    "Usage",
    "sliding_wait",
]

T = TypeVar("T")
Clock = Callable[[], float]
#: The cost of a number of characters of one request's model, in micro-dollars.
Price = Callable[[int], int]
#: Told of each generation billed: its characters and micro-dollars (the metrics).
OnBilled = Callable[[int, int], None]
#: Days a day's usage is kept (the usage report looks back at most this far).
DAY_RETENTION = 400
_MINUTE = 60
_FIELDS = ("requests", "characters", "micros")


def _day(moment: float) -> str:
    # time.gmtime, not datetime: a third of the cost, and this runs on every request.
    return time.strftime("%Y-%m-%d", time.gmtime(moment))


def _month(moment: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(moment))


def _until_next_day(moment: float) -> float:
    now = datetime.fromtimestamp(moment, timezone.utc)
    midnight = datetime(now.year, now.month, now.day, tzinfo=timezone.utc) + timedelta(days=1)
    return midnight.timestamp() - moment


def _until_next_month(moment: float) -> float:
    now = datetime.fromtimestamp(moment, timezone.utc)
    days = calendar.monthrange(now.year, now.month)[1]
    first = datetime(now.year, now.month, 1, tzinfo=timezone.utc) + timedelta(days=days)
    return first.timestamp() - moment


@dataclass
class Usage:
    """One key's counts in one window."""

    requests: int = 0
    characters: int = 0
    micros: int = 0

    @property
    def usd(self) -> float:
        return self.micros / MICRO


class Ledger(Protocol):
    """Usage by key and calendar window; one implementation in Redis, one in memory."""

    async def reserve(
        self,
        name: str,
        day: str,
        month: str,
        characters: int,
        micros: int,
        day_limit: int | None,
        month_limit: int | None,
        requests: int = 1,
    ) -> str | None:
        """Add ``requests``, ``characters`` and ``micros``, unless the micro-dollars take
        the key over a limit: then add nothing and return ``"day"`` or ``"month"``."""
        ...

    async def adjust(
        self, name: str, day: str, month: str, requests: int, characters: int, micros: int
    ) -> None: ...

    async def usage(self, name: str, window: str) -> Usage:
        """``window`` is a day (``YYYY-MM-DD``) or a month (``YYYY-MM``)."""
        ...

    async def day_report(self, day: str) -> dict[str, Usage]: ...

    async def aclose(self) -> None: ...


class MemoryLedger:
    """The ledger in this process: each process counts alone."""

    def __init__(self) -> None:
        self._windows: dict[str, dict[str, Usage]] = {}

    def _get(self, window: str, name: str) -> Usage:
        return self._windows.setdefault(window, {}).setdefault(name, Usage())

    async def reserve(
        self,
        name: str,
        day: str,
        month: str,
        characters: int,
        micros: int,
        day_limit: int | None,
        month_limit: int | None,
        requests: int = 1,
    ) -> str | None:
        daily, monthly = self._get(day, name), self._get(month, name)
        if day_limit is not None and daily.micros + micros > day_limit:
            return "day"
        if month_limit is not None and monthly.micros + micros > month_limit:
            return "month"
        for usage in (daily, monthly):
            usage.requests += requests
            usage.characters += characters
            usage.micros += micros
        self._prune(day)
        return None

    def _prune(self, today: str) -> None:
        if len(self._windows) > DAY_RETENTION + 30:
            oldest = sorted(w for w in self._windows if len(w) == len(today))
            for window in oldest[:-DAY_RETENTION]:
                del self._windows[window]

    async def adjust(
        self, name: str, day: str, month: str, requests: int, characters: int, micros: int
    ) -> None:
        for window in (day, month):
            usage = self._get(window, name)
            usage.requests += requests
            usage.characters += characters
            usage.micros += micros

    async def usage(self, name: str, window: str) -> Usage:
        found = self._windows.get(window, {}).get(name)
        return Usage(found.requests, found.characters, found.micros) if found else Usage()

    async def day_report(self, day: str) -> dict[str, Usage]:
        return {name: Usage(**vars(u)) for name, u in self._windows.get(day, {}).items()}

    async def aclose(self) -> None:
        return None


# KEYS: day hash, month hash. ARGV: name, characters, micros, day limit, month limit
# (-1: none), day TTL s, month TTL s, requests. Returns 0 (added), 1 (over the day),
# 2 (month).
_RESERVE = """
local name = ARGV[1]
local micros = tonumber(ARGV[3])
local day_limit = tonumber(ARGV[4])
local month_limit = tonumber(ARGV[5])
local day = tonumber(redis.call('HGET', KEYS[1], name .. ':micros') or '0')
local month = tonumber(redis.call('HGET', KEYS[2], name .. ':micros') or '0')
if day_limit >= 0 and day + micros > day_limit then return 1 end
if month_limit >= 0 and month + micros > month_limit then return 2 end
for i = 1, 2 do
  redis.call('HINCRBY', KEYS[i], name .. ':requests', ARGV[8])
  redis.call('HINCRBY', KEYS[i], name .. ':characters', ARGV[2])
  redis.call('HINCRBY', KEYS[i], name .. ':micros', micros)
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return 0
"""


class RedisLedger:
    """The ledger in Redis: one hash per UTC day and per UTC month, fields
    ``<name>:requests|characters|micros``; integers, so every update is exact."""

    def __init__(self, client: Redis, prefix: str = "tts-shim") -> None:
        self.client = client
        self.prefix = prefix
        self._reserve = client.register_script(_RESERVE)

    def _key(self, window: str) -> str:
        return f"{self.prefix}:usage:{window}"

    async def reserve(
        self,
        name: str,
        day: str,
        month: str,
        characters: int,
        micros: int,
        day_limit: int | None,
        month_limit: int | None,
        requests: int = 1,
    ) -> str | None:
        outcome = await self._reserve(
            keys=[self._key(day), self._key(month)],
            args=[
                name,
                characters,
                micros,
                -1 if day_limit is None else day_limit,
                -1 if month_limit is None else month_limit,
                DAY_RETENTION * 86400,
                (DAY_RETENTION + 62) * 86400,
                requests,
            ],
        )
        return {0: None, 1: "day", 2: "month"}[int(outcome)]

    async def adjust(
        self, name: str, day: str, month: str, requests: int, characters: int, micros: int
    ) -> None:
        pipe = self.client.pipeline(transaction=True)
        # The window's first write may be this one (a cache hit's request, say): it sets
        # the windows' lifetimes as the reservation script does.
        for window, days in ((day, DAY_RETENTION), (month, DAY_RETENTION + 62)):
            if requests:
                pipe.hincrby(self._key(window), f"{name}:requests", requests)
            pipe.hincrby(self._key(window), f"{name}:characters", characters)
            pipe.hincrby(self._key(window), f"{name}:micros", micros)
            pipe.expire(self._key(window), days * 86400)
        await pipe.execute()

    async def usage(self, name: str, window: str) -> Usage:
        values = await self.client.hmget(self._key(window), [f"{name}:{f}" for f in _FIELDS])
        return Usage(*(int(v or 0) for v in values))

    async def day_report(self, day: str) -> dict[str, Usage]:
        raw: dict[Any, Any] = await self.client.hgetall(self._key(day))
        report: dict[str, Usage] = {}
        for key, value in raw.items():
            text = key.decode() if isinstance(key, bytes) else str(key)
            name, _, kind = text.rpartition(":")
            if kind in _FIELDS:
                setattr(report.setdefault(name, Usage()), kind, int(value))
        return report

    async def aclose(self) -> None:
        await self.client.aclose()


def sliding_wait(
    window: tuple[int, float, int, float], limit: int, cost: int, expiry: float = _MINUTE
) -> float | None:
    """Seconds until ``cost`` more fits under ``limit`` in a ``limits`` sliding-window
    counter (``window``: previous count, its seconds to live, current count, its seconds
    to live, as the storage reports them); ``None`` when it never will (``cost > limit``).

    Within the current window the previous count's weight falls linearly; once the
    window turns, the current count becomes the previous one and falls in turn."""
    if cost > limit:
        return None
    previous, previous_ttl, current, current_ttl = window
    left = max(0.0, current_ttl - expiry)  # until the current window turns
    room = limit - cost - current
    if room >= 0:
        if previous == 0:
            return 0.0
        # floor(previous * (previous_ttl - t) / expiry) <= room
        return max(0.0, previous_ttl - (room + 1) * expiry / previous)
    if current == 0:
        return left
    return max(left, left + expiry - (limit - cost + 1) * expiry / current)


class Bill:
    """What one request spends, counted where it is spent.

    The request's path calls, in this order:

    * :meth:`reserve` with the sizes of the pieces it will generate (those the cache
      does not hold), before the first of them is sent: the cost is checked against
      the key's budgets (a 429 ``insufficient_quota`` when it does not fit) and held;
    * :meth:`sending` as each generation attempt goes out: from then on it is spent
      (out of what is held; a piece nobody reserved, one the cache lost meanwhile, is
      added without a check), and :meth:`answered` with the attempt's outcome: only
      an answer that proves it was not billed takes it back;
    * :meth:`close` when the request is over: what is held and was not spent is given
      back, and the request itself is counted (unless its budget refused it).

    Only :meth:`reserve` waits for the ledger. Every write runs in a task of its own
    (:meth:`Quota.write`), so cancelling the request's path (a client that hangs up)
    skips none of them; :meth:`when_idle` runs a callback once no attempt waits for its
    answer.
    """

    def __init__(
        self,
        quota: Quota,
        client: Client,
        price: Price,
        moment: float,
        on_billed: OnBilled | None = None,
    ) -> None:
        self.quota = quota
        self.client = client
        self.price = price
        self.on_billed = on_billed
        # The windows the request is counted in: those of the moment it was admitted.
        self.day, self.month = _day(moment), _month(moment)
        #: ``insufficient_quota`` once a budget refused the request.
        self.refused: str | None = None
        self._held_characters = 0
        self._held_micros = 0
        self._counted = False  # the request is in the ledger's ``requests``
        # Served uncounted: its reservation found Redis down (a key without limits).
        # Nothing of it is written after that, not even a give-back, which would
        # subtract from the ledger what was never added to it.
        self._uncounted = False
        self._closed = False
        self._in_flight = 0  # attempts sent and not yet answered
        self._idle: list[Callable[[], None]] = []

    async def reserve(self, pieces: Sequence[int]) -> None:
        """Hold the cost of generating ``pieces`` (their sizes in characters), or raise
        the 429 (over a budget) or 503 (the ledger is unreachable and the key has
        limits) :class:`APIError` the client should see."""
        characters = sum(pieces)
        if characters:
            micros = sum(self.price(size) for size in pieces)
            await asyncio.shield(self.quota.write(self._reserve(characters, micros)))

    def sending(self, characters: int) -> None:
        """A generation attempt of ``characters`` goes out now: count it as spent."""
        micros = self.price(characters)
        taken = min(self._held_characters, characters), min(self._held_micros, micros)
        self._held_characters -= taken[0]
        self._held_micros -= taken[1]
        self._in_flight += 1
        if characters > taken[0] or micros > taken[1]:
            self.quota.write(self._add(characters - taken[0], micros - taken[1]))

    def answered(self, characters: int, billed: bool) -> None:
        """The attempt of ``characters`` has its outcome; ``billed=False`` only when it
        proves the AI/ML API billed nothing (an error status, or never sent)."""
        self._in_flight -= 1
        micros = self.price(characters)
        if billed:
            if self.on_billed is not None:
                self.on_billed(characters, micros)
        elif self._closed:
            self.quota.write(self._add(-characters, -micros))
        else:
            self._held_characters += characters
            self._held_micros += micros
        self._check_idle()

    def close(self) -> None:
        """The request is over: give back what is held, and count the request. Once."""
        if self._closed:
            return
        self._closed = True
        characters, micros = self._held_characters, self._held_micros
        self._held_characters = self._held_micros = 0
        if characters or micros or not (self._counted or self.refused):
            self.quota.write(self._add(-characters, -micros))
        self._check_idle()

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once no attempt waits for its answer (now, usually)."""
        self._idle.append(callback)
        self._check_idle()

    @property
    def budgeted(self) -> bool:
        """Whether the key has a budget (a reservation can be refused)."""
        limits = self.client.limits
        return limits.usd_per_day is not None or limits.usd_per_month is not None

    def _check_idle(self) -> None:
        if not self._in_flight:
            callbacks, self._idle = self._idle, []
            for callback in callbacks:
                callback()

    def _requests(self) -> int:
        """1 for the first write of a request (it counts the request), else 0."""
        if self._counted or self.refused:
            return 0
        self._counted = True
        return 1

    async def _reserve(self, characters: int, micros: int) -> None:
        limits = self.client.limits
        requests = self._requests()
        try:
            refused = await self.quota._call(
                self.quota.ledger.reserve(
                    self.client.name,
                    self.day,
                    self.month,
                    characters,
                    micros,
                    None if limits.usd_per_day is None else round(limits.usd_per_day * MICRO),
                    None if limits.usd_per_month is None else round(limits.usd_per_month * MICRO),
                    requests,
                )
            )
        except RedisDown as exc:
            if limits.any:
                raise _unavailable("this key's limits") from exc
            # Served, uncounted; the outage's one warning says so.
            self._uncounted = True
            return
        if refused is not None:
            budget = limits.usd_per_day if refused == "day" else limits.usd_per_month
            now = self.quota.clock()
            wait = _until_next_day(now) if refused == "day" else _until_next_month(now)
            error = _over_budget(refused, budget or 0.0, wait)
            self.refused = error.code
            raise error
        if self._closed:  # the request ended while the reservation was on its way
            await self._add(-characters, -micros)
        else:
            self._held_characters += characters
            self._held_micros += micros

    async def _add(self, characters: int, micros: int) -> None:
        if self._uncounted:
            return
        requests = self._requests()
        # Redis down: not recorded (the outage's one warning says usage is not).
        with contextlib.suppress(RedisDown):
            await self.quota._call(
                self.quota.ledger.adjust(
                    self.client.name, self.day, self.month, requests, characters, micros
                )
            )


class Quota:
    """The admission check (limits and budgets) and the usage ledger, for one app.

    ``storage`` is a ``limits`` async storage (memory or Redis); ``ledger`` the spend;
    ``outage`` the Redis client's breaker, through which every Redis call goes (``None``
    in memory). While Redis is down, keys with limits get 503 (never served uncounted),
    keys without are served and their usage not recorded, and usage reads get 503.
    """

    def __init__(
        self,
        ledger: Ledger,
        storage: Storage,
        clock: Clock = time.time,
        outage: Outage | None = None,
    ) -> None:
        self.ledger = ledger
        self.storage = storage
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.clock = clock
        self.outage = outage
        #: Ledger writes on their way (the loop holds tasks weakly).
        self._writes: set[asyncio.Task[None]] = set()

    @classmethod
    def open(
        cls, redis_url: str | None, clock: Clock = time.time, redis: Redis | None = None
    ) -> Quota:
        """In Redis with ``redis_url`` (through ``redis``, the client the cache uses, if
        given), else in memory."""
        if redis_url is None:
            return cls(MemoryLedger(), MemoryStorage(), clock)
        from shim.cache import connect

        client = redis or connect(redis_url)
        scheme, _, rest = redis_url.partition("://")
        uri = "async+redis+unix://" + rest if scheme == "unix" else "async+" + redis_url
        storage = RedisStorage(
            uri,
            implementation="redispy",
            key_prefix="tts-shim:limits",
            connection_pool=client.connection_pool,  # type: ignore[arg-type]
        )
        return cls(RedisLedger(client), storage, clock, Outage.of(client))

    async def _call(self, call: Awaitable[T]) -> T:
        """``call`` through the breaker (raises :class:`RedisDown`), or as it is in memory."""
        return await (call if self.outage is None else self.outage.guard(call))

    async def admit(
        self,
        client: Client,
        characters: int,
        price: Price,
        on_billed: OnBilled | None = None,
    ) -> Bill:
        """Check ``client``'s rate limits for a request of ``characters`` (a cache hit
        counts too) and open its :class:`Bill`, or raise the 429 (or, Redis down, 503)
        :class:`APIError` the client should see. ``price`` is the cost of characters of
        the request's model; the budgets are checked later, by :meth:`Bill.reserve`, on
        what the request will generate."""
        await self._rate(client, characters)
        return Bill(self, client, price, self.clock(), on_billed)

    async def _rate(self, client: Client, characters: int) -> None:
        checks = (
            ("requests", client.limits.requests_per_minute, 1),
            ("characters", client.limits.characters_per_minute, characters),
        )
        try:
            for kind, limit, cost in checks:
                if limit is None:
                    continue
                item = RateLimitItemPerMinute(limit)
                hit = self.limiter.hit(item, "tts-shim", client.name, kind, cost=cost)
                if not await self._call(hit):
                    window = await self._call(
                        self.storage.get_sliding_window(  # type: ignore[attr-defined]
                            item.key_for("tts-shim", client.name, kind), item.get_expiry()
                        )
                    )
                    raise _over_rate(kind, limit, cost, sliding_wait(window, limit, cost))
        except RedisDown as exc:
            raise _unavailable("this key's limits") from exc

    def write(self, write: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a ledger write in a task of its own, which the caller's cancellation does
        not stop; :meth:`usage`, :meth:`report` and :meth:`aclose` wait for it."""
        task = asyncio.get_running_loop().create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    async def _landed(self) -> None:
        """Wait for the writes on their way: what this process counted, it reports."""
        if self._writes:
            await asyncio.wait(list(self._writes))

    async def usage(self, name: str) -> dict[str, Usage]:
        """``name``'s usage today and this month (UTC), once this process's writes have
        landed; a 503 :class:`APIError` while Redis is down (rather than a wait or
        figures that are not the truth)."""
        await self._landed()
        now = self.clock()
        try:
            today = await self._call(self.ledger.usage(name, _day(now)))
            month = await self._call(self.ledger.usage(name, _month(now)))
        except RedisDown as exc:
            raise _unavailable("usage") from exc
        return {"day": today, "month": month}

    async def report(self, days: int) -> dict[str, dict[str, Usage]]:
        """``{day: {name: usage}}`` for the last ``days`` UTC days, newest first, once
        this process's writes have landed; a 503 :class:`APIError` while Redis is down."""
        await self._landed()
        now = self.clock()
        wanted = [_day(now - 86400 * back) for back in range(max(1, days))]
        try:
            reports = await asyncio.gather(
                *(self._call(self.ledger.day_report(day)) for day in wanted)
            )
        except RedisDown as exc:
            raise _unavailable("usage") from exc
        return dict(zip(wanted, reports, strict=True))

    async def aclose(self) -> None:
        await self._landed()
        if self.outage is not None:
            await self.outage.aclose()
        await self.ledger.aclose()


def _over_rate(kind: str, limit: int, cost: int, wait: float | None) -> APIError:
    if wait is None:
        return errors.rate_limit_exceeded(
            f"This request has {cost} characters, more than this key may send in a minute "
            f"({limit}); split the text."
        )
    seconds = max(1, math.ceil(wait))
    return errors.rate_limit_exceeded(
        f"Rate limit reached for this key: {limit} {kind} per minute. Retry after {seconds} s.",
        retry_after=seconds,
    )


def _over_budget(window: str, budget: float, wait: float) -> APIError:
    period = "today (UTC)" if window == "day" else "this month (UTC)"
    seconds = max(1, math.ceil(wait))
    return errors.insufficient_quota(
        f"This key has reached its budget of ${budget:g} for {period}; it resets in {seconds} s.",
        resets_in=seconds,
    )


def _unavailable(what: str) -> APIError:
    # A key with limits is never served uncounted, and usage is never made up: the
    # counter store is unreachable. The outage's one warning is in the log.
    return errors.service_unavailable(
        f"The shim cannot read {what} right now: its counter store (Redis) does not "
        "answer. Retry shortly.",
        retry_after=1,
    )
