"""The price table: defaults, overrides, micro-dollars."""

from __future__ import annotations

from mockserver.pricing import PRICE_PER_1K_CHARS
from shim.prices import DEFAULT_PRICES, Prices


def test_the_defaults_are_the_mocks_prices_so_estimates_and_usd_spent_agree() -> None:
    for upstream_id, price in PRICE_PER_1K_CHARS.items():
        assert DEFAULT_PRICES[Prices.name(upstream_id)] == price
    assert DEFAULT_PRICES["tts-1-hd"] == 0.030


def test_costs_are_whole_micro_dollars_rounded_up() -> None:
    prices = Prices()

    assert prices.micros("tts-1-hd", 1000) == 30_000
    assert prices.micros("openai/tts-1", 1) == 15
    assert prices.usd("tts-1-hd", 34) == 0.00102
    assert prices.micros("unknown-model", 500) == 0


def test_overrides_take_bare_or_upstream_ids() -> None:
    prices = Prices({"openai/tts-1": 0.0123, "gpt-4o-mini-tts": 0.02})

    assert prices.micros("tts-1", 1000) == 12_300
    assert prices.micros("tts-1", 1) == 13  # 12.3 rounded up
    assert prices.micros("gpt-4o-mini-tts", 1000) == 20_000
    assert prices.micros("tts-1-hd", 1000) == 30_000
