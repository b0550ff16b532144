"""In-process micro-benchmarks behind the shim's performance changes (bench/README.md).

    python3 bench/micro.py

Each line is CPU time per operation (``time.process_time``), old way against new way,
measured in this process on uvloop, so the two sides of each pair share the machine's
state. Absolute numbers vary with the machine; the ratios are what the changes rest on.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _reexec_in_venv() -> None:
    python = ROOT / ".venv" / "bin" / "python"
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve() and python.exists():
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])  # noqa: S606


async def per_call(n: int, make: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(min(n, 200)):
        await make()
    start = time.process_time()
    for _ in range(n):
        await make()
    return (time.process_time() - start) / n * 1e6


async def main() -> None:
    import httpx
    from starlette.responses import StreamingResponse
    from tenacity import (
        AsyncRetrying,
        retry_if_exception,
        stop_after_attempt,
        wait_random_exponential,
    )

    from shim.config import Config
    from shim.responses import AudioResponse
    from shim.upstream import Upstream
    from shim.wire import raw_body

    rows: list[tuple[str, float, float]] = []

    # 1. The retry wrapper around each upstream call, when the first attempt succeeds.
    async def attempt() -> int:
        return 1

    async def tenacity_always() -> int:
        backoff = wait_random_exponential(multiplier=0.05, max=1.0)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(2),
            retry=retry_if_exception(lambda exc: False),
            wait=backoff,
            reraise=True,
        )
        async for trial in retrying:
            with trial:
                return await attempt()
        raise AssertionError

    upstream = Upstream(Config())
    rows.append(
        (
            "retry wrapper, first attempt succeeds (per upstream call)",
            await per_call(20_000, tenacity_always),
            await per_call(20_000, lambda: upstream._retry(1, attempt)),
        )
    )
    await upstream.aclose()

    # 2. Streaming a response: Starlette's anyio task group vs one watcher task.
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST", "path": "/"}

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError

    async def send(message: Any) -> None:
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 18_000

    async def starlette_response() -> None:
        await StreamingResponse(body(), media_type="audio/mpeg")(scope, receive, send)

    async def audio_response() -> None:
        await AudioResponse(body(), "audio/mpeg")(scope, receive, send)

    rows.append(
        (
            "streaming response with disconnect watch (per response)",
            await per_call(5_000, starlette_response),
            await per_call(5_000, audio_response),
        )
    )

    # 3. Reading a reply body: httpx's aiter_bytes vs the native client's raw body.
    from shim import wire

    class FakeConn:
        encoded = False
        complete = True
        body: list[bytes] = []

        def __init__(self) -> None:
            self.parts = [b"x" * 18_000]

        async def read(self, timeout: float) -> bytes | None:
            return self.parts.pop() if self.parts else None

    class Pool:
        def _release(self, *args: Any, **kwargs: Any) -> None:
            pass

    def response() -> httpx.Response:
        stream = wire._Body(Pool(), ("http", "x", 80), FakeConn(), 1.0)  # type: ignore[arg-type]
        return httpx.Response(200, headers=[(b"content-type", b"audio/mpeg")], stream=stream)

    async def via_httpx() -> None:
        r = response()
        async for _ in r.aiter_bytes():
            pass
        await r.aclose()

    async def via_raw() -> None:
        r = response()
        chunks = raw_body(r)
        assert chunks is not None
        async for _ in chunks:
            pass
        await r.aclose()

    rows.append(
        (
            "reading an upstream body (per response)",
            await per_call(20_000, via_httpx),
            await per_call(20_000, via_raw),
        )
    )

    print(f"{'operation':60} {'before µs':>10} {'after µs':>10}")
    for name, before, after in rows:
        print(f"{name:60} {before:10.1f} {after:10.1f}")


if __name__ == "__main__":
    _reexec_in_venv()
    sys.path.insert(0, str(ROOT))
    import uvloop

    uvloop.run(main())
