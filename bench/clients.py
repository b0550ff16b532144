#!/usr/bin/env python3
"""The upstream client under concurrency: aiohttp (what the shim uses) against httpx's
own transport (httpcore), with its default and with tuned ``httpx.Limits``, and httpx's
API over aiohttp's connections (httpx-aiohttp), at c=16 and c=64 (issue 28, build 2).

    python3 bench/clients.py              # ~1 minute
    python3 bench/clients.py --quick      # ~20 s
    python3 bench/clients.py --rounds 3 --concurrency 16,64 --seconds 5

Each client makes the shim's two upstream calls per request (``POST`` a small JSON body,
read an ~18 KB reply; then ``GET``, read it streamed) against ``bench/trivial.py`` in
another process, closed loop, keep-alive, ``c`` callers in this process on uvloop. Per
client and concurrency: pairs per second, this process's CPU time per pair (the client
side only: the server's is not counted), p50 / p99 of a pair, and errors. Clients take
turns within each round, so outside load spreads over all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import reexec_in_venv  # noqa: E402

reexec_in_venv(__file__)  # before the imports only the project's .venv has

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import uvloop  # noqa: E402

from bench.run import TRIVIAL, Proc, free_port  # noqa: E402

BODY, HEADERS = b'{"model":"tts-1","input":"hello"}', {"content-type": "application/json"}

#: httpx's pool with no cap on connections and every idle one kept (as aiohttp's
#: ``limit=0``), dropped after 4 s idle as the shim's aiohttp pool does.
TUNED = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=4.0)

Pair = Callable[[], Awaitable[None]]


@dataclass
class Result:
    client: str
    concurrency: int
    pairs_per_s: float
    cpu_us: float
    p50_ms: float
    p99_ms: float
    errors: int


def _aiohttp(root: str) -> tuple[Pair, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0),
        cookie_jar=aiohttp.DummyCookieJar(),
    )

    async def pair() -> None:
        async with session.post(root + "/v1/audio/speech", data=BODY, headers=HEADERS) as r:
            await r.read()
        async with session.get(root + "/ping") as r:
            async for _ in r.content.iter_any():
                pass

    return pair, session.close


def _httpx(root: str, client: httpx.AsyncClient) -> tuple[Pair, Callable[[], Awaitable[None]]]:
    async def pair() -> None:
        async with client.stream(
            "POST", root + "/v1/audio/speech", content=BODY, headers=HEADERS
        ) as r:
            await r.aread()
        async with client.stream("GET", root + "/ping") as r:
            async for _ in r.aiter_raw():
                pass

    return pair, client.aclose


def _client(name: str, root: str) -> tuple[Pair, Callable[[], Awaitable[None]]]:
    if name == "aiohttp":
        return _aiohttp(root)
    if name == "httpx default Limits":
        return _httpx(root, httpx.AsyncClient(trust_env=False))
    if name == "httpx tuned Limits":
        return _httpx(root, httpx.AsyncClient(trust_env=False, limits=TUNED))
    from httpx_aiohttp import HttpxAiohttpClient

    return _httpx(root, HttpxAiohttpClient(trust_env=False, limits=TUNED))


CLIENTS = ("aiohttp", "httpx default Limits", "httpx tuned Limits", "httpx over aiohttp")


async def measure(
    name: str, concurrency: int, root: str, seconds: float, warmup: float = 1.0
) -> Result:
    """``concurrency`` callers making pairs through client ``name`` for ``seconds``
    after ``warmup``: pairs/s, this process's CPU per pair, p50 / p99, errors."""
    pair, close = _client(name, root)
    latencies: list[float] = []
    counts = {"done": 0, "errors": 0}
    running = True

    async def caller() -> None:
        while running:
            start = time.perf_counter()
            try:
                await pair()
            except Exception:  # counted, not raised: the figure is how many fail
                counts["errors"] += 1
            else:
                counts["done"] += 1
                latencies.append(time.perf_counter() - start)

    callers = [asyncio.create_task(caller()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)  # connections opened, code paths warm; not recorded
    latencies.clear()
    counts.update(done=0, errors=0)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done, errors = counts["done"], counts["errors"]
    running = False
    await asyncio.gather(*callers, return_exceptions=True)
    await close()
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(int(len(latencies) * q), len(latencies) - 1)] * 1e3

    return Result(
        name,
        concurrency,
        done / wall,
        cpu / max(done, 1) * 1e6,
        quantile(0.5) if latencies else 0.0,
        quantile(0.99) if latencies else 0.0,
        errors,
    )


def start_server() -> tuple[Proc, str]:
    """``bench/trivial.py`` serving ~18 KB of speech, in its own process; and its root URL."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-clients-"))
    audio = workdir / "speech.mp3"
    audio.write_bytes(bytes(18_000))
    server = Proc(
        "trivial",
        [sys.executable, str(TRIVIAL), "--port", str(port), "--audio", str(audio)],
        port,
        workdir,
    )
    try:
        server.wait_ready("/ping")
    except BaseException:
        server.stop()
        raise
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 s")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="recorded per measurement")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated")
    args = parser.parse_args()
    rounds, seconds = (1, 3.0) if args.quick else (args.rounds, args.seconds)
    levels = [int(c) for c in args.concurrency.split(",")]
    names = args.clients.split(",")

    server, root = start_server()
    results: list[Result] = []
    try:
        for _ in range(rounds):
            for level in levels:
                for name in names:
                    results.append(uvloop.run(measure(name, level, root, seconds)))
    finally:
        server.stop()

    print("| client | c | pairs/s | client CPU µs/pair | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for level in levels:
        for name in names:
            mine = [r for r in results if r.client == name and r.concurrency == level]
            print(
                f"| {name} | {level} | {_median([r.pairs_per_s for r in mine]):,.0f} "
                f"| {_median([r.cpu_us for r in mine]):,.0f} "
                f"| {_median([r.p50_ms for r in mine]):,.1f} "
                f"| {_median([r.p99_ms for r in mine]):,.1f} "
                f"| {sum(r.errors for r in mine)} |"
            )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


if __name__ == "__main__":
    main()
