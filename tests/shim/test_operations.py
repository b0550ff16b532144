"""The operator hooks on the request path, in-process on the mock: the gate names keys,
admission refuses before any upstream call, usage counts what was generated, and a
budget is checked on what the cache does not hold."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shim.prices import Prices
from shim.split import split_text
from shim.testing import MockUpstream
from tests.shim.conftest import CLIENT_TOKEN, generations, state_of

KEYS = f"""\
[keys.app]
key = "{CLIENT_TOKEN}"
usd_per_day = 0.0005

[keys.rpm]
key = "sk-rpm-key-00001"
requests_per_minute = 2
"""
SPEECH = {"model": "tts-1", "input": "Twelve chars"}  # $0.00018 at $0.015 per 1K


def _keys(tmp_path: Path) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(KEYS)
    return str(path)


async def test_keys_file_and_env_keys_are_accepted_and_others_refused(
    shim: Any, tmp_path: Path
) -> None:
    client = shim(keys_file=_keys(tmp_path), client_keys=("sk-env-key-0001",))

    # /v1/usage needs a key (the catalogue GETs are open by default).
    assert (await client.get("/v1/usage")).status_code == 200
    env = await client.get("/v1/usage", headers={"authorization": "Bearer sk-env-key-0001"})
    assert env.status_code == 200
    wrong = await client.get("/v1/usage", headers={"authorization": "Bearer sk-nope-00000"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    # Outside /v1 no key is needed (health, metrics).
    assert (await client.get("/healthz", headers={"authorization": ""})).status_code == 200


async def test_over_its_rate_a_request_is_a_429_before_any_upstream_call(
    shim: Any, upstream: MockUpstream, tmp_path: Path
) -> None:
    client = shim(keys_file=_keys(tmp_path))
    rpm = {"authorization": "Bearer sk-rpm-key-00001"}

    for _ in range(2):
        assert (await client.post("/v1/audio/speech", json=SPEECH, headers=rpm)).status_code == 200
    before = len(upstream.journal)
    refused = await client.post("/v1/audio/speech", json=SPEECH, headers=rpm)

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(upstream.journal) == before


async def test_a_budget_refuses_until_the_day_turns_and_usage_reports_it(
    shim: Any, upstream: MockUpstream, tmp_path: Path
) -> None:
    client = shim(keys_file=_keys(tmp_path))
    assert (await client.get("/v1/usage")).status_code == 200  # starts the app
    quota = state_of(client).ops.quota  # type: ignore[union-attr]
    moment = [datetime(2026, 12, 1, 22, 0, tzinfo=timezone.utc).timestamp()]
    quota.clock = lambda: moment[0]

    statuses = [(await client.post("/v1/audio/speech", json=SPEECH)).status_code for _ in range(3)]
    # $0.00018 each against $0.0005 a day: two fit, the third would make $0.00054.
    assert statuses == [200, 200, 429]
    assert generations(upstream) == 2
    refused = await client.post("/v1/audio/speech", json=SPEECH)
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.headers["retry-after"] == str(2 * 3600)

    usage = (await client.get("/v1/usage")).json()
    assert usage["key"] == "app"
    assert usage["day"] == {
        "requests": 2,
        "characters": 24,
        "usd": Prices().usd("tts-1", 12) * 2,
    }
    assert usage["limits"]["usd_per_day"] == 0.0005
    assert usage["remaining_usd"]["day"] == 0.0005 - 0.00036

    moment[0] += 2 * 3600  # midnight UTC
    assert (await client.post("/v1/audio/speech", json=SPEECH)).status_code == 200
    assert generations(upstream) == 3
    report = (await client.get("/usage", params={"days": 2})).json()
    assert [day["day"] for day in report["days"]] == ["2026-12-02", "2026-12-01"]
    assert report["days"][0]["keys"]["app"]["requests"] == 1
    assert report["days"][1]["keys"]["app"]["requests"] == 2


async def test_a_failed_generation_costs_nothing(
    shim: Any, upstream: MockUpstream, tmp_path: Path
) -> None:
    client = shim(keys_file=_keys(tmp_path), tts_retries=0)
    upstream.scenario([{"status": 400}])

    failed = await client.post("/v1/audio/speech", json=SPEECH)

    assert failed.status_code == 400
    usage = (await client.get("/v1/usage")).json()
    assert usage["day"] == {"requests": 1, "characters": 0, "usd": 0.0}


async def test_without_client_keys_usage_is_the_anonymous_total(shim: Any) -> None:
    client = shim()
    assert (await client.post("/v1/audio/speech", json=SPEECH)).status_code == 200

    usage = (await client.get("/v1/usage")).json()

    assert usage["key"] == "anonymous"
    assert usage["day"]["characters"] == 12
    assert (await client.get("/usage", params={"days": "0"})).status_code == 400


# -- a cache hit costs nothing ------------------------------------------------------------

THIN = {"authorization": "Bearer sk-thin-key-00001"}
RPM = {"authorization": "Bearer sk-rpm-key-00001"}
FREE = {"authorization": "Bearer sk-free-key-0001"}
CACHED_KEYS = """\
[keys.thin]
key = "sk-thin-key-00001"
usd_per_day = 0.000235

[keys.rpm]
key = "sk-rpm-key-00001"
requests_per_minute = 2

[keys.free]
key = "sk-free-key-0001"
"""


def _cached_shim(shim: Any, tmp_path: Path, keys: str = CACHED_KEYS) -> Any:
    path = tmp_path / "keys.toml"
    path.write_text(keys)
    # One AI/ML key pays for every client key: the cache is shared by them all.
    return shim(
        keys_file=str(path), upstream_key="sk-aiml-0001", cache=True, cache_dir=str(tmp_path)
    )


async def test_a_cache_hit_is_served_at_any_budget_and_a_miss_is_refused(
    shim: Any, upstream: MockUpstream, tmp_path: Path
) -> None:
    client = _cached_shim(shim, tmp_path)

    first = await client.post("/v1/audio/speech", json=SPEECH, headers=THIN)
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    left = (await client.get("/v1/usage", headers=THIN)).json()["remaining_usd"]["day"]
    assert left == 0.000055  # $0.000235 less 12 characters at $0.015 per 1K
    again = await client.post("/v1/audio/speech", json=SPEECH, headers=THIN)
    other = await client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Other words."}, headers=THIN
    )

    assert (again.status_code, again.headers["x-cache"]) == (200, "HIT")
    assert again.content == first.content
    assert other.status_code == 429
    assert other.json()["error"]["code"] == "insufficient_quota"
    assert generations(upstream) == 1
    usage = (await client.get("/v1/usage", headers=THIN)).json()
    # The hit is a request of its own that cost nothing; the refused one is not counted.
    assert usage["day"] == {"requests": 2, "characters": 12, "usd": Prices().usd("tts-1", 12)}


async def test_a_cache_hit_still_counts_against_the_rate_limits(
    shim: Any, upstream: MockUpstream, tmp_path: Path
) -> None:
    client = _cached_shim(shim, tmp_path)

    statuses = []
    for _ in range(3):
        response = await client.post("/v1/audio/speech", json=SPEECH, headers=RPM)
        statuses.append((response.status_code, response.headers.get("x-cache")))

    assert statuses == [(200, "MISS"), (200, "HIT"), (429, None)]
    assert generations(upstream) == 1


def _pieces(text: str) -> list[str]:
    """The pieces the shim generates ``text`` in (its default split settings)."""
    return split_text(text)


async def test_a_long_text_reserves_only_the_pieces_the_cache_lacks(
    shim: Any, upstream: MockUpstream, tmp_path: Path
) -> None:
    known = " ".join(f"Sentence number {n} of the text that was read before." for n in range(60))
    longer = known + " And one more sentence, which nobody has heard yet."
    new = [piece for piece in _pieces(longer) if piece not in _pieces(known)]
    assert 0 < len(new) < len(_pieces(longer))
    cost = sum(Prices().micros("tts-1", len(piece)) for piece in new)
    budgets = f"""
[keys.none]
key = "sk-none-key-0001"
usd_per_day = 0

[keys.exact]
key = "sk-exact-key-001"
usd_per_day = {cost / 1e6!r}

[keys.short]
key = "sk-short-key-001"
usd_per_day = {(cost - 1) / 1e6!r}
"""
    client = _cached_shim(shim, tmp_path, CACHED_KEYS + budgets)

    def speech(text: str) -> dict[str, str]:
        return {"model": "tts-1", "input": text, "response_format": "flac"}

    heard = await client.post("/v1/audio/speech", json=speech(known), headers=FREE)
    assert heard.status_code == 200
    paid = generations(upstream)
    # All of it in the cache: served at a budget of nothing.
    none = {"authorization": "Bearer sk-none-key-0001"}
    again = await client.post("/v1/audio/speech", json=speech(known), headers=none)
    assert (again.status_code, again.headers["x-cache"]) == (200, "HIT")
    assert again.content == heard.content
    assert generations(upstream) == paid
    # Part of it: the budget must cover the new pieces, and only those.
    short = {"authorization": "Bearer sk-short-key-001"}
    refused = await client.post("/v1/audio/speech", json=speech(longer), headers=short)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert generations(upstream) == paid
    exact = {"authorization": "Bearer sk-exact-key-001"}
    served = await client.post("/v1/audio/speech", json=speech(longer), headers=exact)
    assert served.status_code == 200
    assert generations(upstream) == paid + len(new)
    usage = (await client.get("/v1/usage", headers=exact)).json()
    assert usage["day"]["characters"] == sum(map(len, new))
    assert usage["remaining_usd"]["day"] == 0
