"""What a generation "costs", for the ``meta.usage`` of the ``url-string`` shape.

A deterministic function of the model and the text length, so tests can predict it:

* ``usd_spent = len(text) / 1000 * price per 1K characters``, rounded to 8 places.
  ``openai/tts-1-hd`` is sold at $0.030 per 1K characters (the published gateway
  price); ``openai/tts-1`` at half that, as OpenAI prices it; ``gpt-4o-mini-tts``
  is billed per token upstream and is taken as $0.015 per 1K characters too.
* ``credits_used = round(usd_spent * 2_000_000)``: the ratio of the OpenAPI
  document's own example (120000 credits for $0.06).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CREDITS_PER_USD", "PRICE_PER_1K_CHARS", "usage"]

PRICE_PER_1K_CHARS: Mapping[str, float] = {
    "openai/tts-1": 0.015,
    "openai/tts-1-hd": 0.030,
    "openai/gpt-4o-mini-tts": 0.015,
}
CREDITS_PER_USD = 2_000_000


def usage(model: str, text: str) -> dict[str, float | int]:
    """``{"credits_used": int, "usd_spent": float}`` for generating ``text`` with ``model``."""
    usd = round(len(text) * PRICE_PER_1K_CHARS[model] / 1000, 8)
    return {"credits_used": round(usd * CREDITS_PER_USD), "usd_spent": usd}
