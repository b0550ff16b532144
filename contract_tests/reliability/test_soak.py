"""Soak: a thousand mixed requests, faults included, on loopback; no growth in
open descriptors, threads or memory, and every upstream stream closed.

Everything runs in this process (client, shim and mock on real sockets), so the
descriptor and memory figures cover all three; the longer run with the shim in a
process of its own is ``bench/soak.py``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from bench.soak import FAULTS as SOAK_FAULTS
from bench.soak import MIX
from contract_tests.reliability.conftest import AUTH, settle
from shim.testing import MockUpstream, ShimServer
from tests.figures import record

# Not traced for coverage (pytest-cov's no_cover): a thousand requests through shim and
# mock in this process ran 3-4x slower traced, and measure no path the other tests miss.
pytestmark = pytest.mark.no_cover
# A thousand requests in the suite (a leak per failing request shows many times over);
# TTS_SHIM_SOAK=12000 for a longer one, and bench/soak.py for the shim in its own process.
WARMUP, SOAK, CONCURRENCY = 200, int(os.environ.get("TTS_SHIM_SOAK", 1000)), 16
#: Allowed growth after the warm-up: pools may open a few more keep-alive connections,
#: and the allocator keeps some memory; a leak per request would be far beyond both.
FD_SLACK, RSS_SLACK_MB, THREAD_SLACK = 2 * CONCURRENCY, 40, 4

# The same request mix and faults as the long soak in bench/soak.py: one table, so
# the two runs cannot drift apart.
REQUESTS, FAULTS = MIX, SOAK_FAULTS
FAULT_EVERY = 8


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _run(
    client: httpx.AsyncClient, mock: MockUpstream, count: int, seed: int
) -> tuple[Counter[int | str], list[str]]:
    rng = random.Random(seed)
    weights = [r[0] for r in REQUESTS]
    plan = rng.choices(REQUESTS, weights, k=count)
    faults = itertools.cycle(FAULTS)
    statuses: Counter[int | str] = Counter()
    problems: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            if index % FAULT_EVERY == 0:
                mock.scenario([next(faults)])
            _, method, path, body, keyed = plan[index]
            content = body if isinstance(body, str) else json.dumps(body) if body else None
            async with client.stream(
                method, path, content=content, headers=AUTH if keyed else {}
            ) as response:
                parts: list[bytes] = []
                complete = True
                try:
                    async for chunk in response.aiter_raw():
                        parts.append(chunk)
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    complete = False  # an aborted stream: the faults cause some
            statuses[response.status_code if complete else "cut"] += 1
            data = b"".join(parts)
            if response.status_code >= 500 and response.status_code not in (502, 503, 504):
                problems.append(f"{response.status_code} {data[:200]!r}")
            if response.status_code >= 400 and complete:
                error = json.loads(data)["error"]
                if set(error) != {"message", "type", "param", "code"}:
                    problems.append(f"not an envelope: {data[:200]!r}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses, problems


async def test_a_thousand_mixed_requests_leak_nothing(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer]
) -> None:
    shim = tts_shim_factory(
        max_concurrency=CONCURRENCY,
        tts_retries=1,
        audio_retries=1,
        max_retry_wait=0.01,
        generation_timeout=2.0,
        download_timeout=2.0,
        deadline=5.0,
    )
    state = shim.app.state.shim  # type: ignore[attr-defined]
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=shim.url, limits=limits, timeout=30) as client:
        await _run(client, tts_mock, WARMUP, seed=1)
        settle(state)
        gc.collect()
        before = {"rss_mb": _rss_mb(), "fds": _fds(), "threads": threading.active_count()}
        started = time.monotonic()

        statuses, problems = await _run(client, tts_mock, SOAK, seed=2)

        took = time.monotonic() - started
        settle(state)
        gc.collect()
        after = {"rss_mb": _rss_mb(), "fds": _fds(), "threads": threading.active_count()}

    assert problems == []
    assert sum(statuses.values()) == SOAK
    assert statuses[200] > SOAK // 2
    assert state.upstream.stats.open_streams == 0
    assert state.capacity.in_flight == 0
    assert after["fds"] - before["fds"] <= FD_SLACK, (before, after)
    assert after["threads"] - before["threads"] <= THREAD_SLACK, (before, after)
    assert after["rss_mb"] - before["rss_mb"] <= RSS_SLACK_MB, (before, after)
    record(
        "soak_test",
        requests=SOAK,
        warmup=WARMUP,
        concurrency=CONCURRENCY,
        seconds=round(took, 1),
        statuses={str(k): v for k, v in sorted(statuses.items(), key=str)},
        before={k: round(v, 1) for k, v in before.items()},
        after={k: round(v, 1) for k, v in after.items()},
    )
