"""What a generation costs: US dollars per 1,000 characters, by model.

The AI/ML API bills speech per input character. The defaults:

* ``tts-1-hd``: $0.030 per 1K characters, the published price (shared/CONTRACT.md).
* ``tts-1``: $0.015, half of it, as OpenAI prices the pair ($15 and $30 per 1M).
* ``gpt-4o-mini-tts``: $0.015. OpenAI bills it per token ($0.60 per 1M text tokens in,
  $12 per 1M audio tokens out, about $0.015 a minute of speech); at a typical 15
  characters a second a minute is about 900 characters, so $0.015 per 1K is a
  round, slightly generous estimate.

They are the mock's prices too (``mockserver.pricing``), so the mock's ``usd_spent``
and the shim's estimate agree. Operators override them with ``--price MODEL=USD``.
Amounts are kept in whole micro-dollars (:data:`MICRO`), so counters add exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

from shim.catalog import MODELS

__all__ = ["DEFAULT_PRICES", "MICRO", "Prices"]

#: Micro-dollars per dollar: counters hold integers, which Redis adds atomically and exactly.
MICRO = 1_000_000

DEFAULT_PRICES: Mapping[str, float] = {
    "tts-1": 0.015,
    "tts-1-hd": 0.030,
    "gpt-4o-mini-tts": 0.015,
}


class Prices:
    """The price table: :data:`DEFAULT_PRICES` with ``overrides`` (bare or ``openai/`` ids)."""

    def __init__(self, overrides: Mapping[str, float] | None = None) -> None:
        self.per_1k: dict[str, float] = dict(DEFAULT_PRICES)
        for model, price in (overrides or {}).items():
            self.per_1k[self.name(model)] = float(price)

    @staticmethod
    def name(model: str) -> str:
        """The bare id of a served model (``openai/tts-1`` -> ``tts-1``); others unchanged."""
        known = MODELS.get(model)
        return known.id if known is not None else model

    def micros(self, model: str, characters: int) -> int:
        """The estimated cost of ``characters`` of ``model``, in micro-dollars (rounded up,
        so an estimate never undercounts); 0 for a model without a price."""
        price = self.per_1k.get(self.name(model), 0.0)
        # price per 1K chars * MICRO / 1000 = micro-dollars per character
        exact = characters * price * MICRO / 1000
        whole = int(exact)
        return whole + (1 if exact - whole > 1e-9 else 0)

    def usd(self, model: str, characters: int) -> float:
        """:meth:`micros` in dollars."""
        return self.micros(model, characters) / MICRO
