"""Rate limits and budgets, in memory and in a real Redis, with a clock the test turns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone

import pytest

from shim.clients import Client, Limits
from shim.errors import APIError
from shim.prices import MICRO
from shim.quota import Quota, sliding_wait
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


async def test_over_its_daily_budget_a_key_is_refused_until_the_day_turns(
    quota_factory: type,
) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 23, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("mobile-app", Limits(usd_per_day=0.10))

    for _ in range(3):  # $0.03 each: $0.09 spent
        await quota.admit(client, 1000, _cents(0.03))
    with pytest.raises(APIError) as caught:
        await quota.admit(client, 1000, _cents(0.03))

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
        await quota.admit(client, 1000, _cents(0.03))
    await quota.admit(client, 300, _cents(0.009))
    clock.now += 1  # 2026-12-02 00:00 UTC
    await quota.admit(client, 1000, _cents(0.03))
    usage = await quota.usage("mobile-app")
    assert (usage["day"].requests, usage["day"].micros) == (1, _cents(0.03))
    assert usage["month"].requests == 5
    assert usage["month"].micros == _cents(0.129)


async def test_a_monthly_budget_waits_for_the_first_of_the_next_month(
    quota_factory: type,
) -> None:
    clock = FakeClock(datetime(2026, 12, 31, 12, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("batch", Limits(usd_per_month=0.05, usd_per_day=1.0))

    await quota.admit(client, 1000, _cents(0.05))
    with pytest.raises(APIError) as caught:
        await quota.admit(client, 1, 15)

    assert caught.value.headers["retry-after"] == str(12 * 3600)
    clock.now += 12 * 3600
    await quota.admit(client, 1, 15)


async def test_a_settled_reservation_costs_what_was_generated(quota_factory: type) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("k", Limits(usd_per_day=0.05))

    # A cache hit: reserved $0.03, generated nothing.
    reservation = await quota.admit(client, 1000, _cents(0.03))
    await quota.settle(reservation, 0, 0)
    await quota.settle(reservation, 0, 0)  # settling twice changes nothing
    # So the budget still has room for another $0.05.
    await quota.admit(client, 1000, _cents(0.05))

    usage = await quota.usage("k")
    assert (usage["day"].requests, usage["day"].characters) == (2, 1000)
    assert usage["day"].micros == _cents(0.05)
    report = await quota.report(2)
    assert list(report) == ["2026-12-01", "2026-11-30"]
    assert report["2026-12-01"]["k"].micros == _cents(0.05)
    assert report["2026-11-30"] == {}


async def test_requests_per_minute_refuse_the_next_with_a_retry_after(
    quota_factory: type,
) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("rpm", Limits(requests_per_minute=3))

    for _ in range(3):
        await quota.admit(client, 10, 150)
    with pytest.raises(APIError) as caught:
        await quota.admit(client, 10, 150)

    error = caught.value
    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert error.retryable
    assert error.retry_after is not None
    assert 1 <= error.retry_after <= 120
    # The refused request was taken back out of the usage.
    usage = await quota.usage("rpm")
    assert usage["day"].requests == 3


async def test_characters_per_minute_count_each_requests_length(quota_factory: type) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))
    quota: Quota = quota_factory(clock)  # type: ignore[call-arg]
    client = Client("cpm", Limits(characters_per_minute=1000))

    await quota.admit(client, 600, 0)
    await quota.admit(client, 400, 0)
    with pytest.raises(APIError) as caught:
        await quota.admit(client, 1, 0)
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(APIError) as alone:
        await quota.admit(client, 1001, 0)
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
    # Hits reserved before Redis went away are settled after: each could warn.
    with RedisServer() as server:
        quota = Quota.open(server.url, FakeClock(datetime(2026, 12, 1, tzinfo=timezone.utc)))
        client = Client("k", Limits())
        limited = Client("l", Limits(requests_per_minute=10))
        reservations = [await quota.admit(client, 100, _cents(0.003)) for _ in range(3)]
        server.stop()
        for reservation in reservations:
            await quota.settle(reservation, 0, 0)
        served = await quota.admit(client, 100, _cents(0.003))  # not recorded, no warning
        with pytest.raises(APIError) as refused:
            await quota.admit(limited, 100, _cents(0.003))  # never served uncounted
        with pytest.raises(APIError) as usage:
            await quota.usage("k")  # no figures made up
        await quota.aclose()

    assert served.settled
    assert (refused.value.status, refused.value.code) == (503, "service_unavailable")
    assert (usage.value.status, usage.value.code) == (503, "service_unavailable")
    assert "usage" in usage.value.message
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Redis does not answer (ConnectionError: ")
    assert quota.outage is not None
    assert quota.outage.skipped >= 4  # the rest were not even tried
