"""Microseconds per request body validated by :mod:`shim.contract`.

    python3 bench/validation.py

Typical bodies (what the SDK sends), plus a refused one (the error path builds
OpenAI's envelope). Best of 15 interleaved rounds, garbage collection off, so another
process on the machine shows as noise, not as a trend. The shim spends about 1.8 ms
of CPU per speech request (docs/benchmarks.md), so a few microseconds here are a
fraction of a percent.
"""

from __future__ import annotations

import gc
import timeit
from collections.abc import Callable
from typing import Any

from shim.contract import ChatRequest, SpeechRequest
from shim.errors import APIError

SPEECH = {
    "model": "tts-1-hd",
    "input": "Hello there, this is a typical sentence to speak.",
    "voice": "coral",
    "response_format": "mp3",
    "speed": 1.0,
}
CHAT = {
    "model": "tts-1-hd",
    "modalities": ["text", "audio"],
    "audio": {"voice": "coral", "format": "wav"},
    "messages": [
        {"role": "system", "content": "You are a narrator."},
        {"role": "user", "content": "Hello there, this is a typical sentence to speak."},
    ],
}


def _refused() -> None:
    try:
        SpeechRequest.from_json({**SPEECH, "speed": 9})
    except APIError:
        return
    raise AssertionError("speed 9 was accepted")


CASES: dict[str, Callable[[], Any]] = {
    "speech body": lambda: SpeechRequest.from_json(SPEECH),
    "chat body (+ its speech request)": lambda: ChatRequest.from_json(CHAT).speech,
    "refused speech body (envelope built)": _refused,
}


def main(rounds: int = 15, number: int = 5000) -> None:
    best = dict.fromkeys(CASES, float("inf"))
    gc.disable()
    for _ in range(rounds):
        for name, case in CASES.items():
            best[name] = min(best[name], timeit.timeit(case, number=number) / number)
    gc.enable()
    for name, seconds in best.items():
        print(f"{name:40s} {seconds * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
