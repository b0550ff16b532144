"""Rate limits and budgets, in memory and in a real Redis, with a clock the test turns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone

import pytest

from shim.clients import Client, Limits
from shim.errors import APIError
from shim.prices import MICRO
from shim.quota import Bill, Quota, Usage, sliding_wait
from tests.redis_server import RedisServer


class FakeClock:
    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def quota_factory(request: pytest.FixtureRequest) -> AsyncIterator[type]:
    opened: list[Quota] = []
    url = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client().flushall()
        url = server.url

    def factory(clock: FakeClock) -> Quota:
        quota = Quota.open(url, clock)
        opened.append(quota)
        return quota

    yield factory  # type: ignore[misc]
    for quota in opened:
        await quota.aclose()


def _cents(amount: float) -> int:
    return round(amount * MICRO)


def _price(characters: int) -> int:
    """$0.03 per 1,000 characters (tts-1-hd's), in micro-dollars."""
    return 30 * characters


async def _generate(quota: Quota, client: Client, *pieces: int) -> Bill:
    """One request that reserves ``pieces``, sends each (billed) and ends."""
    bill = await quota.admit(client, sum(pieces), _price)
    await bill.reserve(pieces)
    for size in pieces:
        bill.sending(size)
        bill.answered(size, billed=True)
    bill.close()
    return bill


async def test_over_its_daily_budget_a_key_is_refused_until_the_day_turns(
    quota_factory: type,
) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 23, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("mobile-app", Limits(usd_per_day=0.10))

    for _ in range(3):  # $0.03 each: $0.09 spent
        await _generate(quota, client, 1000)
    with pytest.raises(APIError) as caught:
        await _generate(quota, client, 1000)

    error = caught.value
    assert (error.status, error.code, error.type) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    assert error.headers["retry-after"] == "3600"  # until 00:00 UTC, an hour away
    response = error.response("req_1")
    assert response.headers["retry-after"] == "3600"
    assert response.headers["x-should-retry"] == "false"
    # Still refused a second before midnight; a cheaper request still fits.
    clock.now += 3599
    with pytest.raises(APIError):
        await _generate(quota, client, 1000)
    await _generate(quota, client, 300)
    clock.now += 1  # 2026-12-02 00:00 UTC
    await _generate(quota, client, 1000)
    usage = await quota.usage("mobile-app")
    assert (usage["day"].requests, usage["day"].micros) == (1, _cents(0.03))
    # The refused requests are not counted.
    assert usage["month"].requests == 5
    assert usage["month"].micros == _cents(0.129)


async def test_a_monthly_budget_waits_for_the_first_of_the_next_month(
    quota_factory: type,
) -> None:
    clock = FakeClock(datetime(2026, 12, 31, 12, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("batch", Limits(usd_per_month=0.05, usd_per_day=1.0))

    await _generate(quota, client, 1000, 666)  # $0.04998
    with pytest.raises(APIError) as caught:
        await _generate(quota, client, 1)

    assert caught.value.headers["retry-after"] == str(12 * 3600)
    clock.now += 12 * 3600
    await _generate(quota, client, 1)


async def test_a_bill_keeps_what_was_sent_and_gives_back_the_rest(quota_factory: type) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("k", Limits(usd_per_day=0.05))

    # Three pieces reserved ($0.045 held: nothing else fits meanwhile); one sent and
    # billed, one answered with an error status (not billed), one never sent.
    bill = await quota.admit(client, 1500, _price)
    await bill.reserve([500, 500, 500])
    with pytest.raises(APIError):
        await _generate(quota, client, 200)
    bill.sending(500)
    bill.answered(500, billed=True)
    bill.sending(500)
    bill.answered(500, billed=False)
    bill.close()
    bill.close()  # closing twice changes nothing

    usage = await quota.usage("k")
    assert (usage["day"].requests, usage["day"].characters) == (1, 500)
    assert usage["day"].micros == _cents(0.015)
    # So the budget has room for another $0.035.
    await _generate(quota, client, 1000, 166)
    report = await quota.report(2)
    assert list(report) == ["2026-12-01", "2026-11-30"]
    assert report["2026-12-01"]["k"].micros == _cents(0.015) + 30 * 1166
    assert report["2026-11-30"] == {}


async def test_a_generation_answered_after_its_request_ended_is_still_counted(
    quota_factory: type,
) -> None:
    # The client left while two attempts were out: the request ended (its bill closed)
    # before their answers came, one billed, one an error status.
    clock = FakeClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("gone", Limits(usd_per_day=1.0))
    bill = await quota.admit(client, 3000, _price)
    await bill.reserve([1000, 1000, 1000])
    bill.sending(1000)
    bill.sending(1000)
    freed: list[str] = []
    bill.close()
    bill.when_idle(lambda: freed.append("slot"))

    assert freed == []  # the upstream is still working for this request
    during = await quota.usage("gone")
    assert during["day"].characters == 2000  # sent: counted; never sent: given back
    bill.answered(1000, billed=True)
    bill.answered(1000, billed=False)
    assert freed == ["slot"]
    usage = await quota.usage("gone")
    assert (usage["day"].requests, usage["day"].characters) == (1, 1000)
    assert usage["day"].micros == 30 * 1000


async def test_a_piece_the_cache_lost_is_charged_without_a_check(quota_factory: type) -> None:
    # Reserved nothing (the cache held the piece when the request planned), then
    # generated it: it was sent, so it is counted, budget or not.
    clock = FakeClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("lost", Limits(usd_per_day=0.01))
    bill = await quota.admit(client, 1000, _price)
    await bill.reserve([])
    bill.sending(1000)
    bill.answered(1000, billed=True)
    bill.close()

    usage = await quota.usage("lost")
    assert (usage["day"].requests, usage["day"].micros) == (1, _cents(0.03))
    with pytest.raises(APIError) as caught:
        await _generate(quota, client, 1)
    assert caught.value.code == "insufficient_quota"
    # A cache hit costs nothing: it still passes.
    hit = await quota.admit(client, 1000, _price)
    await hit.reserve([])
    hit.close()
    assert (await quota.usage("lost"))["day"].requests == 2


async def test_requests_per_minute_refuse_the_next_with_a_retry_after(
    quota_factory: type,
) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("rpm", Limits(requests_per_minute=3))

    for _ in range(3):
        await _generate(quota, client, 10)
    with pytest.raises(APIError) as caught:
        await quota.admit(client, 10, _price)

    error = caught.value
    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert error.retryable
    assert error.retry_after is not None
    assert 1 <= error.retry_after <= 120
    # The refused request is not in the usage.
    usage = await quota.usage("rpm")
    assert usage["day"].requests == 3


async def test_characters_per_minute_count_each_requests_length(quota_factory: type) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("cpm", Limits(characters_per_minute=1000))

    await quota.admit(client, 600, _price)
    await quota.admit(client, 400, _price)
    with pytest.raises(APIError) as caught:
        await quota.admit(client, 1, _price)
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(APIError) as alone:
        await quota.admit(client, 1001, _price)
    # More than the limit in one request can never pass: no point retrying.
    assert not alone.value.retryable
    assert alone.value.retry_after is None


def test_sliding_wait_finds_when_the_cost_fits() -> None:
    # Nothing counted: at once.
    assert sliding_wait((0, 0.0, 0, 120.0), 10, 1) == 0.0
    # Full current window with 20 s left in it, no previous: when it turns, then until
    # its count (10, now the previous one) weighs little enough: 20 + 60 - 10*60/10 = 20.
    assert sliding_wait((0, 0.0, 10, 80.0), 10, 1) == pytest.approx(20.0)
    # Previous window of 10, 30 s of weight left, current empty: floor(10*(30-t)/60) <= 8
    # once 10*(30-t)/60 < 9, t > 30 - 54 = -24: at once.
    assert sliding_wait((10, 30.0, 0, 90.0), 10, 1) == 0.0
    # Previous of 20 still weighing 60 s, current 0: need floor(20*(60-t)/60) <= 9,
    # 20*(60-t)/60 < 10, t > 30.
    assert sliding_wait((20, 60.0, 0, 120.0), 10, 1) == pytest.approx(30.0)
    assert sliding_wait((0, 0.0, 0, 120.0), 10, 11) is None


async def test_redis_going_away_warns_once_not_once_a_request_and_refuses_limited_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Requests that reserved before Redis went away end after it: each could warn.
    with RedisServer() as server:
        quota = Quota.open(server.url, FakeClock(datetime(2026, 12, 1, tzinfo=timezone.utc)))
        client = Client("k", Limits())
        rated = Client("r", Limits(requests_per_minute=10))
        budgeted = Client("b", Limits(usd_per_day=1.0))
        bills = [await quota.admit(client, 100, _price) for _ in range(3)]
        for bill in bills:
            await bill.reserve([100])
        server.stop()
        for bill in bills:
            bill.close()  # the give-backs, each in its own task
        served = await quota.admit(client, 100, _price)
        await served.reserve([100])  # served, not recorded, no second warning
        with pytest.raises(APIError) as refused:
            await quota.admit(rated, 100, _price)  # never served uncounted
        # No rate limit to check at admission: the budget's reservation refuses it.
        unreserved = await quota.admit(budgeted, 100, _price)
        with pytest.raises(APIError) as unbudgeted:
            await unreserved.reserve([100])
        with pytest.raises(APIError) as usage:
            await quota.usage("k")  # no figures made up (once the writes have landed)
        await quota.aclose()

    for error in (refused.value, unbudgeted.value, usage.value):
        assert (error.status, error.code) == (503, "service_unavailable")
    assert "usage" in usage.value.message
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Redis does not answer (ConnectionError: ")
    assert quota.outage is not None
    # The writes on their way when Redis went found it gone; the calls after them (the
    # rate check, the budget's reservation, the usage read) were not even tried.
    assert quota.outage.skipped >= 3


async def test_a_request_served_uncounted_in_an_outage_gives_nothing_back_after_it() -> None:
    # Its reservation found Redis down; Redis is back before it ends with a generation
    # that proved unbilled: giving that back would subtract what was never added.
    with RedisServer() as server:
        quota = Quota.open(server.url, FakeClock(datetime(2026, 12, 1, tzinfo=timezone.utc)))
        assert quota.outage is not None
        quota.outage.probe_every = 0.05
        bill = await quota.admit(Client("k", Limits()), 100, _price)
        server.stop()
        await bill.reserve([100])  # served uncounted
        bill.sending(100)
        server.start()
        for _ in range(600):  # the breaker's PING finds it back
            if not quota.outage.down:
                break
            await asyncio.sleep(0.05)
        assert not quota.outage.down
        bill.answered(100, billed=False)  # an error status: nothing billed
        bill.close()
        usage = await quota.usage("k")
        await quota.aclose()

    assert usage["day"] == Usage()
    assert usage["month"] == Usage()


async def test_a_window_whose_first_write_is_a_hit_still_expires(
    redis_server: RedisServer,
) -> None:
    redis_server.client().flushall()
    quota = Quota.open(redis_server.url, FakeClock(datetime(2026, 12, 1, tzinfo=timezone.utc)))
    try:
        hit = await quota.admit(Client("k", Limits()), 100, _price)
        await hit.reserve([])  # all of it in the cache
        hit.close()
        assert (await quota.usage("k"))["day"].requests == 1
    finally:
        await quota.aclose()

    for window in ("2026-12-01", "2026-12"):
        assert redis_server.client().ttl(f"tts-shim:usage:{window}") > 0
