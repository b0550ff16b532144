"""In-process micro-benchmarks of the per-request costs in the shim's profile (bench/README.md).

    python3 bench/micro.py

Each line is CPU time per operation (``time.process_time``): what the shim does
today against the alternative named on the line, measured in this process on uvloop,
so the two sides of each pair share the machine's state. Absolute numbers vary with
the machine; the differences are what a change would save per request.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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


async def audio_checks() -> list[tuple[str, str, float, float]]:
    """CPU µs to check upstream audio by decoding it (shim.upstream.verifier), per format.

    The benchmark's clip, all in hand (the usual case): its first frames (what audio that
    is not cached gets) against sniffing its signature alone (what the shim did before),
    and all of it (what audio to be cached gets) against its first frames. Then a minute
    of audio streamed in 32 KiB chunks: all of it decoded, against the first frames and
    the framing checks."""
    from bench.run import TEXT
    from mockserver.audio import encode, samples_for, speech_duration
    from shim.upstream.stream import identify
    from shim.upstream.verifier import Verifier, check_whole, first_frames

    rows = []
    short_ms = round(speech_duration(TEXT) * 1000)
    formats = ("mp3", "opus", "aac", "flac", "wav", "pcm")
    for fmt in formats:
        clip = encode("alloy", samples_for(short_ms), fmt)

        async def sniff(clip: bytes = clip, fmt: str = fmt) -> None:
            identify(clip[:128], "audio/" + fmt, fmt)

        def whole(all_: bool, clip: bytes = clip, fmt: str = fmt) -> Callable[[], Awaitable[None]]:
            return lambda: check_whole(clip, fmt, decode_all=all_)

        first = await per_call(300, whole(False))
        rows.append(
            (
                f"audio check, {fmt}, {short_ms / 1000:g} s in hand, first frames",
                "signature only",
                first,
                await per_call(3000, sniff),
            )
        )
        rows.append(
            (
                "  the same, all decoded (to be cached)",
                "first frames",
                await per_call(300, whole(True)),
                first,
            )
        )
    for fmt in formats:
        minute = encode("alloy", samples_for(60_000), fmt)

        def streamed(
            all_: bool, minute: bytes = minute, fmt: str = fmt
        ) -> Callable[[], Awaitable[None]]:
            async def stream() -> None:
                start = await first_frames(minute[:32768], fmt)
                assert start is not None
                verifier = Verifier(fmt, start, decode_all=all_)
                try:
                    for offset in range(0, len(minute), 32768):
                        await verifier.feed(minute[offset : offset + 32768])
                    await verifier.finish()
                finally:
                    verifier.close()

            return stream

        rows.append(
            (
                f"audio check, {fmt}, 60 s streamed, all decoded",
                "first frames",
                await per_call(10, streamed(True)),
                await per_call(50, streamed(False)),
            )
        )
    return rows


async def main() -> None:
    from shim.responses import AudioResponse, SendTimeout
    from shim.upstream.retry import RetryPolicy

    rows: list[tuple[str, str, float, float]] = []

    # 1. The retry policy around each upstream call (two per request), first attempt
    # fine: tenacity's AsyncRetrying as the shim drives it, against a plain await (the
    # floor; ruled out, since a first attempt outside tenacity is a second retry path).
    async def attempt() -> int:
        return 1

    policy = RetryPolicy(2, 1.0)
    rows.append(
        (
            "retry policy, first attempt succeeds (per upstream call)",
            "plain await",
            await per_call(20_000, lambda: policy.run(attempt)),
            await per_call(20_000, attempt),
        )
    )

    # 2. Streaming a response while watching for the client's disconnect: Starlette's own
    # anyio task group, which it runs under uvicorn's ASGI 2.3 (what the shim does),
    # against the plain stream it runs for a server speaking ASGI 2.4 (no watch needed).
    async def send(message: Any) -> None:
        pass

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 18_000

    def streamed(spec: str) -> Callable[[], Awaitable[None]]:
        scope = {"type": "http", "asgi": {"spec_version": spec}, "method": "POST", "path": "/"}

        async def respond() -> None:
            await AudioResponse(body(), "audio/mpeg")(scope, receive, send)

        return respond

    rows.append(
        (
            "streaming response and disconnect watch (per response)",
            "ASGI 2.4 (no watch)",
            await per_call(5_000, streamed("2.3")),
            await per_call(5_000, streamed("2.4")),
        )
    )

    # 2b. The send timeout (--send-timeout), one anyio scope a message, over the three
    # messages of a one-chunk stream, against a plain send.
    def timed_sends(seconds: float | None) -> Callable[[], Awaitable[None]]:
        async def three() -> None:
            out = send if seconds is None else SendTimeout(send, seconds)
            await out({"type": "http.response.start", "status": 200, "headers": []})
            await out({"type": "http.response.body", "body": b"x", "more_body": True})
            await out({"type": "http.response.body", "body": b"", "more_body": False})

        return three

    rows.append(
        (
            "send timeout, three messages (per response)",
            "no send timeout",
            await per_call(20_000, timed_sends(30.0)),
            await per_call(20_000, timed_sends(None)),
        )
    )

    # 3. Checking the audio from upstream by decoding it, before it is relayed or cached.
    rows += await audio_checks()

    print(f"{'operation':58} {'today µs':>9}   {'alternative':20} {'µs':>7}")
    for name, alternative, today, other in rows:
        print(f"{name:58} {today:9.1f}   {alternative:20} {other:7.1f}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.run import reexec_in_venv

    reexec_in_venv(__file__)
    import uvloop

    uvloop.run(main())
