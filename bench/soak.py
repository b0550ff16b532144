#!/usr/bin/env python3
"""The long soak: the shim as a process of its own, watched from outside.

    .venv/bin/python bench/soak.py                       # 30 000 requests, about 2 minutes
    .venv/bin/python bench/soak.py --requests 200000     # longer
    .venv/bin/python bench/soak.py --duration 600        # or for a time

Starts the mock AI/ML API (``tts-shim mock``) and the shim (``tts-shim serve
--upstream-url <mock>``) as separate processes on loopback, then sends a mix of
speech, SSE, chat, catalogue, health and bad requests from ``--concurrency``
clients, with a fault queued on the mock every ``--fault-every`` requests (resets,
garbage, truncated bodies, error statuses, a WAV reply that makes the shim
transcode). Every ``--sample-every`` requests it reads the *shim process's*
resident memory, open descriptors and threads from /proc, and ``/readyz``.

Prints one JSON object: the samples, the status counts, and a verdict: the growth
of memory and descriptors over the second half of the run (after the warm-up, a
leak shows as steady growth there), and whether every upstream stream was closed
at the end. Exit status 1 if any answer was a 5xx other than the upstream-failure
statuses (502/503/504), or streams were left open. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "sk-soak-0000"  # noqa: S105 - a stand-in; the mock accepts any key
SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Soak test."}
CHAT = {"model": "tts-1", "messages": [{"role": "user", "content": "Soak test."}]}
MIX: list[tuple[int, str, str, Any, bool]] = [  # weight, method, path, body, keyed
    (40, "POST", "/v1/audio/speech", SPEECH, True),
    (6, "POST", "/v1/audio/speech", {**SPEECH, "stream_format": "sse"}, True),
    (4, "POST", "/v1/audio/speech", {**SPEECH, "response_format": "wav"}, True),
    (6, "POST", "/v1/chat/completions", CHAT, True),
    (6, "POST", "/v1/chat/completions", {**CHAT, "stream": True}, True),
    (5, "GET", "/v1/models", None, True),
    (3, "GET", "/v1/audio/voices", None, True),
    (3, "GET", "/healthz", None, False),
    (2, "GET", "/readyz", None, False),
    (5, "POST", "/v1/audio/speech", "{not json", True),
    (3, "POST", "/v1/audio/speech", {"model": "whisper-1", "input": "x"}, True),
    (3, "POST", "/v1/audio/speech", SPEECH, False),
]
FAULTS: list[dict[str, Any]] = [
    {"fault": "reset"},
    {"fault": "garbage", "times": 2},
    {"fault": "truncated", "times": 2},
    {"status": 503},
    {"status": 429, "headers": {"retry-after": "0"}, "times": 2},
    {"shape": "binary"},
    {"route": "audio", "fault": "reset", "times": 2},
    {"route": "audio", "fault": "truncated"},
    {"route": "audio", "fault": "garbage"},
    {"route": "audio", "status": 502, "times": 2},
]
UPSTREAM_FAILURES = (502, 503, 504)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listened on {port}")


def _proc_figures(pid: int) -> dict[str, float]:
    figures: dict[str, float] = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                figures["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("Threads:"):
                figures["threads"] = int(line.split()[1])
    return figures


async def _drive(args: argparse.Namespace, shim_url: str, mock_url: str, pid: int) -> Any:
    rng = random.Random(args.seed)
    faults = itertools.cycle(FAULTS)
    statuses: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    bad: list[str] = []
    sent = 0
    started = time.monotonic()
    limits = httpx.Limits(max_connections=args.concurrency)

    def more() -> bool:
        if args.duration:
            return time.monotonic() - started < args.duration
        return sent < args.requests

    async def sample(client: httpx.AsyncClient) -> None:
        ready = (await client.get("/readyz")).json()
        samples.append(
            {
                "requests": sent,
                "seconds": round(time.monotonic() - started, 1),
                **_proc_figures(pid),
                "open_streams": ready["open_streams"],
                "in_flight": ready["in_flight"],
            }
        )

    async with (
        httpx.AsyncClient(base_url=shim_url, limits=limits, timeout=60) as client,
        httpx.AsyncClient(base_url=mock_url, timeout=10) as control,
    ):
        await sample(client)

        async def worker() -> None:
            nonlocal sent
            while more():
                sent += 1
                number = sent
                if number % args.fault_every == 0:
                    await control.post("/__mock__/scenario", json={"steps": [next(faults)]})
                if number % args.sample_every == 0:
                    await sample(client)
                _, method, path, body, keyed = rng.choices(MIX, [m[0] for m in MIX])[0]
                content = body if isinstance(body, str) else json.dumps(body) if body else None
                headers = {"authorization": f"Bearer {TOKEN}"} if keyed else {}
                async with client.stream(method, path, content=content, headers=headers) as r:
                    try:
                        async for _ in r.aiter_raw():
                            pass
                        statuses[str(r.status_code)] += 1
                    except (httpx.RemoteProtocolError, httpx.ReadError):
                        statuses["cut"] += 1
                    if r.status_code >= 500 and r.status_code not in UPSTREAM_FAILURES:
                        bad.append(f"{method} {path} -> {r.status_code}")

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        for _ in range(100):  # let the last streams close
            if (await client.get("/readyz")).json()["open_streams"] == 0:
                break
            await asyncio.sleep(0.05)
        await sample(client)
    return statuses, samples, bad, time.monotonic() - started


def _growth(samples: list[dict[str, Any]], key: str) -> float:
    """Change of ``key`` over the second half of the run."""
    half = samples[len(samples) // 2]
    return round(samples[-1][key] - half[key], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; overrides --requests")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fault-every", type=int, default=8)
    parser.add_argument("--sample-every", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    tts_shim = [sys.executable, "-m", "shim"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIMLAPI_", "TTS_SHIM_"))}
    mock_port, shim_port = _free_port(), _free_port()
    with contextlib.ExitStack() as stack:
        mock = subprocess.Popen(
            [*tts_shim, "mock", "--port", str(mock_port), "--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(mock.kill)
        _wait_listening(mock_port, mock)
        mock_url = f"http://127.0.0.1:{mock_port}"
        shim = subprocess.Popen(
            [*tts_shim, "serve", "--port", str(shim_port), "--upstream-url", mock_url,
             "--tts-retries", "1", "--audio-retries", "1", "--max-retry-wait", "0.01",
             "--max-concurrency", str(args.concurrency), "--no-cache"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # the access log is written, as in production
        )  # fmt: skip
        stack.callback(shim.kill)
        _wait_listening(shim_port, shim)
        statuses, samples, bad, took = asyncio.run(
            _drive(args, f"http://127.0.0.1:{shim_port}", mock_url, shim.pid)
        )
        shim.send_signal(signal.SIGTERM)
        exit_code = shim.wait(30)

    total = sum(statuses.values())
    report = {
        "requests": total,
        "seconds": round(took, 1),
        "requests_per_second": round(total / took, 1),
        "concurrency": args.concurrency,
        "statuses": dict(sorted(statuses.items())),
        "first": samples[0],
        "after_warmup": samples[1] if len(samples) > 2 else samples[0],
        "last": samples[-1],
        "second_half_growth": {k: _growth(samples, k) for k in ("rss_mb", "fds", "threads")},
        "open_streams_at_end": samples[-1]["open_streams"],
        "exit_code_on_sigterm": exit_code,
        "unexpected_5xx": bad[:20],
        "samples": samples,
    }
    print(json.dumps(report, indent=2))
    return 1 if bad or samples[-1]["open_streams"] or exit_code else 0


if __name__ == "__main__":
    sys.exit(main())
