"""How long the mock takes to "generate" speech: a fixed part plus a part per character.

The real ``POST /v1/tts`` makes the whole file before it answers, so its reply time
grows with the text. The mock models that with a setting written as a sum of terms::

    0                  no wait (the default: tests stay fast)
    250ms              a fixed quarter second
    2ms/char           two milliseconds per character of ``text``
    0.3s+4ms/char      both
    realistic          a named preset (see PRESETS)

Units are ``s`` and ``ms``; a term ending in ``/char`` is per character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_FIXED_MS",
    "MAX_PER_CHAR_MS",
    "NO_LATENCY",
    "PRESETS",
    "GenerationLatency",
    "LatencyError",
    "parse_latency",
]

#: Longest fixed part: the same bound as a scenario step's ``delay_ms``.
MAX_FIXED_MS = 600_000.0
#: Largest part per character (a second a character is already absurd).
MAX_PER_CHAR_MS = 1_000.0

_TERM = re.compile(r"^(?P<number>\d+(?:\.\d+)?|\.\d+)(?P<unit>ms|s)(?P<per>/char)?$")


class LatencyError(ValueError):
    """A latency setting does not parse; the message shows the accepted syntax."""


@dataclass(frozen=True)
class GenerationLatency:
    """A wait of ``fixed_ms + per_char_ms * len(text)`` milliseconds before a reply."""

    fixed_ms: float = 0.0
    per_char_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.fixed_ms <= MAX_FIXED_MS:
            raise LatencyError(f"the fixed part must be 0..{MAX_FIXED_MS:g} ms")
        if not 0 <= self.per_char_ms <= MAX_PER_CHAR_MS:
            raise LatencyError(f"the part per character must be 0..{MAX_PER_CHAR_MS:g} ms")

    def __bool__(self) -> bool:
        return bool(self.fixed_ms or self.per_char_ms)

    def __str__(self) -> str:
        """The setting in the syntax :func:`parse_latency` reads (``0`` when off)."""
        terms = []
        if self.fixed_ms:
            terms.append(f"{self.fixed_ms:g}ms")
        if self.per_char_ms:
            terms.append(f"{self.per_char_ms:g}ms/char")
        return "+".join(terms) or "0"

    def seconds(self, characters: int) -> float:
        """How long generating ``characters`` characters takes, in seconds."""
        return (self.fixed_ms + self.per_char_ms * characters) / 1000


#: The default: reply at once.
NO_LATENCY = GenerationLatency()

#: Named settings. ``realistic``: 0.3 s to accept and queue the request, then 4 ms per
#: character (16.7 s for the longest, 4,096-character, input): the figures issue 12 is
#: judged by. They are an estimate of a paid API that generates a whole file before it
#: answers, not a measurement of the real service.
PRESETS: dict[str, GenerationLatency] = {
    "realistic": GenerationLatency(fixed_ms=300.0, per_char_ms=4.0),
}


def parse_latency(value: str | GenerationLatency) -> GenerationLatency:
    """Read ``value`` (``0``, ``250ms``, ``2ms/char``, ``0.3s+4ms/char``, a preset name)."""
    if isinstance(value, GenerationLatency):
        return value
    text = value.strip().lower()
    if text in PRESETS:
        return PRESETS[text]
    syntax = (
        f"expected '0', terms like '250ms', '0.3s' or '4ms/char' joined by '+', "
        f"or one of: {', '.join(PRESETS)}; received {value!r}"
    )
    if text in ("0", "0s", "0ms"):
        return NO_LATENCY
    fixed = per_char = 0.0
    seen: set[bool] = set()
    for term in text.replace(" ", "").split("+"):
        match = _TERM.match(term)
        if match is None:
            raise LatencyError(syntax)
        per = match["per"] is not None
        if per in seen:
            kind = "per-character" if per else "fixed"
            raise LatencyError(f"more than one {kind} term: {syntax}")
        seen.add(per)
        ms = float(match["number"]) * (1000.0 if match["unit"] == "s" else 1.0)
        if per:
            per_char = ms
        else:
            fixed = ms
    return GenerationLatency(fixed_ms=fixed, per_char_ms=per_char)
