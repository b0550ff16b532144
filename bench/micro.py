"""In-process micro-benchmarks of the per-request costs in the shim's profile (bench/README.md).

    python3 bench/micro.py

Each line is CPU time per operation (``time.process_time``): what the shim does
today against the alternative named on the line, measured in this process on uvloop,
so the two sides of each pair share the machine's state. Absolute numbers vary with
the machine; the differences are what a change would save per request.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


async def per_call(n: int, make: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(min(n, 200)):
        await make()
    start = time.process_time()
    for _ in range(n):
        await make()
    return (time.process_time() - start) / n * 1e6


class _NoCookies(CookieJar):
    """A jar that keeps nothing: what the shim's upstream clients could be given."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


async def main() -> None:
    import httpx
    from starlette.responses import StreamingResponse

    from shim.config import Config
    from shim.logs import log_config
    from shim.responses import AudioResponse
    from shim.upstream.retry import with_retries

    rows: list[tuple[str, str, float, float]] = []

    # 1. The retry policy around each upstream call (two per request), first attempt fine.
    async def attempt() -> int:
        return 1

    rows.append(
        (
            "retry policy, first attempt succeeds (per upstream call)",
            "plain await",
            await per_call(20_000, lambda: with_retries(2, 1.0, attempt)),
            await per_call(20_000, attempt),
        )
    )

    # 2. Streaming a response: the shim's AudioResponse against Starlette's own.
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST", "path": "/"}

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError

    async def send(message: Any) -> None:
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 18_000

    async def audio_response() -> None:
        await AudioResponse(body(), "audio/mpeg")(scope, receive, send)

    async def starlette_response() -> None:
        await StreamingResponse(body(), media_type="audio/mpeg")(scope, receive, send)

    rows.append(
        (
            "streaming response with disconnect watch (per response)",
            "Starlette's",
            await per_call(5_000, audio_response),
            await per_call(5_000, starlette_response),
        )
    )

    # 3. httpx extracts cookies from every reply into the client's jar.
    request = httpx.Request("GET", "http://127.0.0.1:9/generations/a.mp3?duration_ms=2200")
    reply = httpx.Response(
        200, headers={"content-type": "audio/mpeg", "content-length": "18068"}, request=request
    )
    default, empty = httpx.Cookies(), httpx.Cookies(_NoCookies())

    async def extract_default() -> None:
        default.extract_cookies(reply)

    async def extract_none() -> None:
        empty.extract_cookies(reply)

    rows.append(
        (
            "httpx cookie extraction (per upstream reply)",
            "a jar keeping none",
            await per_call(20_000, extract_default),
            await per_call(20_000, extract_none),
        )
    )

    # 4. httpx's own "HTTP Request" INFO line through the shim's JSON formatter, against
    # the logger at WARNING (as shim.logs.log_config sets it now).
    config = log_config(Config(log_format="json", log_level="info"))
    formatter = config["formatters"]["shim"]["()"]()
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(formatter)
    logger = logging.getLogger("bench.micro.httpx")
    logger.addHandler(handler)
    logger.propagate = False
    url = "http://127.0.0.1:9/generations/alloy/1-2.mp3?duration_ms=2200"

    async def line() -> None:
        logger.info('HTTP Request: %s %s "%s %d %s"', "GET", url, "HTTP/1.1", 200, "OK")

    logger.setLevel(logging.INFO)
    written = await per_call(20_000, line)
    logger.setLevel(logging.WARNING)
    rows.append(
        (
            "httpx's INFO line per upstream call, JSON (per call)",
            "logger at WARNING",
            written,
            await per_call(20_000, line),
        )
    )

    print(f"{'operation':58} {'today µs':>9}   {'alternative':20} {'µs':>7}")
    for name, alternative, today, other in rows:
        print(f"{name:58} {today:9.1f}   {alternative:20} {other:7.1f}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.run import reexec_in_venv

    reexec_in_venv(__file__)
    import uvloop

    uvloop.run(main())
