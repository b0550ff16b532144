"""Money when clients hang up, on real sockets: a real uvicorn shim in front of the mock,
the real ``openai`` SDK, and the usage in memory or in a real ``redis-server``.

A budgeted key streams a 100,000-character text (split into pieces generated ahead),
reads the first chunk and closes. Once the shim is idle, the characters of the
generations the mock accepted (its journal) are the characters ``/v1/usage`` counts,
to the character; repeated until the budget refuses, the mock has billed no more
than the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import routes, settle
from shim.prices import MICRO, Prices
from shim.split import split_text
from shim.testing import MockUpstream, ShimServer
from tests.figures import record
from tests.redis_server import RedisServer

KEY = "sk-billing-key-0001"
AUTH = {"authorization": f"Bearer {KEY}"}
MODEL = "tts-1"
#: 100,000 characters of prose, as the red-team sent.
TEXT = " ".join(
    f"This is sentence number {n} of a long reading, told at an even pace." for n in range(2000)
)[:100_000]
#: One whole TEXT ($1.50 at tts-1's $0.015 per 1K) fits, and a little more: what each
#: hang-up spends brings the next refusal closer.
BUDGET = 1.70
#: The mock takes a while per piece, as the real service does: pieces are in flight
#: when the client leaves.
LATENCY = "50ms+0.1ms/char"
MAX_ROUNDS = 12


def _price(characters: int) -> int:
    return Prices().micros(MODEL, characters)


def _accepted(mock: MockUpstream) -> list[int]:
    """The sizes of the generations the mock accepted (answered 2xx)."""
    entries = routes(mock, "tts")
    assert all(entry["status"] is not None for entry in entries), "a generation unanswered"
    return [len(e["json"]["text"]) for e in entries if 200 <= e["status"] < 300]


@pytest.fixture(params=["memory", "redis"])
def ledger(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The shim's settings for its usage ledger: in memory, or in a real Redis."""
    if request.param == "memory":
        yield {}
        return
    with RedisServer() as server:
        yield {"redis_url": server.url}


def _where(ledger: dict[str, Any]) -> str:
    return "redis" if ledger else "memory"


def test_a_client_that_leaves_after_the_first_chunk_pays_what_went_upstream(
    tts_mock: MockUpstream,
    tts_shim_factory: Callable[..., ShimServer],
    ledger: dict[str, Any],
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys.reader]\nkey = "{KEY}"\nusd_per_day = {BUDGET}\n')
    shim = tts_shim_factory(keys_file=str(keys), upstream_key="sk-aiml-mock", **ledger)
    state = shim.app.state.shim  # type: ignore[attr-defined]
    tts_mock.scenario([{"route": "tts", "latency": LATENCY, "times": 10_000}])
    client = openai.OpenAI(base_url=shim.base_url, api_key=KEY, max_retries=0)
    pieces = split_text(TEXT)
    whole = sum(_price(len(piece)) for piece in pieces)  # what a request reserves
    budget = round(BUDGET * MICRO)

    rounds: list[dict[str, int]] = []
    refused: openai.RateLimitError | None = None
    for _ in range(MAX_ROUNDS):
        sent_before, counted_before = sum(_accepted(tts_mock)), _usage(shim)
        spent = round(counted_before["usd"] * MICRO)
        try:
            with client.audio.speech.with_streaming_response.create(
                model=MODEL, voice="alloy", input=TEXT, response_format="mp3"
            ) as response:
                assert next(response.iter_bytes())  # the first chunk, then hang up
        except openai.RateLimitError as exc:
            # Refused only when the whole text no longer fits in what is left.
            assert spent + whole > budget
            refused = exc
            break
        assert spent + whole <= budget
        settle(state, timeout=30)  # idle: every generation sent has its answer
        assert (state.capacity.in_flight, state.upstream.stats.open_streams) == (0, 0)

        accepted = _accepted(tts_mock)
        usage = _usage(shim)
        sent = sum(accepted) - sent_before
        counted = usage["characters"] - counted_before["characters"]
        rounds.append({"sent": sent, "counted": counted})
        # Character for character, and cent for cent.
        assert usage["characters"] == sum(accepted)
        assert round(usage["usd"] * MICRO) == sum(_price(size) for size in accepted)
        assert _metric(shim, "tts_shim_characters_total") == sum(accepted)  # the metrics too
        assert 0 < sent < len(TEXT)  # the hang-up did cut the text short

    record("billing_hang_up", ledger=_where(ledger), budget=BUDGET, rounds=rounds)
    assert refused is not None, f"{MAX_ROUNDS} hang-ups and the budget never refused"
    assert refused.code == "insufficient_quota"
    assert len(rounds) >= 2
    # Repeating it never takes the key past its budget: the mock billed no more.
    assert sum(_price(size) for size in _accepted(tts_mock)) <= budget


def _usage(shim: ShimServer) -> dict[str, Any]:
    reply = httpx.get(shim.url + "/v1/usage", headers=AUTH, verify=LOOPBACK_TLS)
    reply.raise_for_status()
    day: dict[str, Any] = reply.json()["day"]
    return day


def _metric(shim: ShimServer, name: str) -> float:
    text = httpx.get(shim.url + "/metrics", verify=LOOPBACK_TLS).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("key") == "reader"
    )
