"""The benchmark's load generator: a lean HTTP/1.1 client, run in a process of its own.

Why not an off-the-shelf client library: the figures being measured are tens of
microseconds of server CPU per request, and a general-purpose Python client (httpx,
aiohttp) spends more than that per request itself; on this 2-core machine its CPU
would be taken from the servers under test. This client is a plain asyncio protocol
on uvloop with httptools (the C parser uvicorn itself uses): request bytes are built
once, responses are parsed in C, and bodies are counted, not kept (except the small
JSON reply of the two-step call, which must be read for its audio URL). It reports
its own CPU time, so the report can show it is not the bottleneck.

Each of ``--concurrency`` virtual users holds one keep-alive connection and sends
its next request when the previous reply is complete (a closed loop, like wrk).

Modes:
  speech   POST ``--path`` (default /v1/audio/speech) with ``--body``: one request.
  twostep  POST /v1/tts with ``--body``, read ``audio.url`` from the JSON reply, GET
           it on the same keep-alive connection: what a user writes by hand.
  get      GET ``--path``: the trivial endpoint, for the CPU floor.
  stream   one request (speech or twostep) read at ``--rate`` bytes/s; reports time to
           first body byte. With ``--first-byte-only`` it hangs up after that byte.

Output: one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency of the shim
    uvloop = None  # type: ignore[assignment]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Reply:
    __slots__ = ("body", "first_byte", "keep", "size", "status")

    def __init__(self, keep: bool) -> None:
        self.status = 0
        self.size = 0
        self.first_byte = 0
        self.keep = keep
        self.body: list[bytes] = []


class Conn(asyncio.Protocol):
    """One keep-alive connection, one request in flight at a time."""

    def __init__(self, rate: float = 0.0) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reply: Reply | None = None
        self.done: asyncio.Future[Reply] | None = None
        self.first: asyncio.Future[None] | None = None
        self.lost = False
        self.rate = rate  # bytes per second, 0 for as fast as possible
        self.started = 0.0
        self.received = 0
        self.loop = asyncio.get_event_loop()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            return
        if self.rate and self.transport is not None:
            self.received += len(data)
            ahead = self.received / self.rate - (time.perf_counter() - self.started)
            if ahead > 0.001:
                self.transport.pause_reading()
                self.loop.call_later(ahead, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionResetError("connection closed"))

    def _fail(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        if self.first is not None and not self.first.done():
            self.first.set_exception(exc)

    # -- httptools callbacks
    def on_status(self, status: bytes) -> None:
        assert self.reply is not None
        self.reply.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        reply = self.reply
        assert reply is not None
        if not reply.size:
            reply.first_byte = time.perf_counter_ns()
            if self.first is not None and not self.first.done():
                self.first.set_result(None)
        reply.size += len(body)
        if reply.keep:
            reply.body.append(body)

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.reply)

    # -- use
    def send(self, raw: bytes, keep: bool = False, first: bool = False) -> asyncio.Future[Reply]:
        if self.lost or self.transport is None:
            raise ConnectionResetError("connection closed")
        self.reply = Reply(keep)
        self.done = self.loop.create_future()
        self.first = self.loop.create_future() if first else None
        self.started = time.perf_counter()
        self.received = 0
        self.transport.write(raw)
        return self.done

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def post(path: str, host: str, body: bytes, token: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


def get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()


class Stats:
    def __init__(self) -> None:
        self.latencies: list[int] = []  # ns
        self.errors = 0
        self.error_samples: list[str] = []
        self.bytes = 0
        self.recording = False

    def error(self, what: str) -> None:
        if self.recording:
            self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.hostport = f"{args.host}:{args.port}"
        self.body = args.body.encode()
        self.min_size = args.min_size

    async def connect(self, rate: float = 0.0) -> Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Conn(rate), self.args.host, self.args.port)
        return conn

    async def one(self, conn: Conn) -> tuple[int, int, str | None]:
        """One user action; (status, bytes, error) with latency measured by the caller."""
        a = self.args
        if a.mode == "get":
            r = await conn.send(get(a.path, self.hostport))
            return r.status, r.size, None if r.status == 200 else f"status {r.status}"
        if a.mode == "speech":
            r = await conn.send(post(a.path, self.hostport, self.body, a.token))
            if r.status != 200:
                return r.status, r.size, f"status {r.status}"
            if r.size < self.min_size:
                return r.status, r.size, f"short body {r.size}"
            return r.status, r.size, None
        # twostep
        r = await conn.send(post("/v1/tts", self.hostport, self.body, a.token), keep=True)
        if r.status not in (200, 201):
            return r.status, r.size, f"tts status {r.status}"
        url = urlsplit(json.loads(b"".join(r.body))["audio"]["url"])
        path = url.path + ("?" + url.query if url.query else "")
        r = await conn.send(get(path, self.hostport))
        if r.status != 200:
            return r.status, r.size, f"audio status {r.status}"
        if r.size < self.min_size:
            return r.status, r.size, f"short body {r.size}"
        return r.status, r.size, None

    async def user(self, stats: Stats, stop_at: float) -> None:
        conn = await self.connect()
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter_ns()
                try:
                    _, size, err = await asyncio.wait_for(self.one(conn), self.args.timeout)
                except (OSError, asyncio.TimeoutError, httptools.HttpParserError, ValueError) as e:
                    stats.error(f"{type(e).__name__}: {e}")
                    conn.close()
                    await asyncio.sleep(0.01)  # do not spin on a server that is down
                    conn = await self.connect()
                    continue
                t1 = time.perf_counter_ns()
                if err is not None:
                    stats.error(err)
                elif stats.recording:
                    stats.latencies.append(t1 - t0)
                    stats.bytes += size
        finally:
            conn.close()


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    index = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return sorted_ns[index] / 1000.0  # microseconds


async def load(args: argparse.Namespace) -> dict[str, Any]:
    client = Client(args)
    stats = Stats()
    start = time.perf_counter()
    stop_at = start + args.warmup + args.duration
    users = [asyncio.ensure_future(client.user(stats, stop_at)) for _ in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    # The measured window: CPU of the watched processes and of this one.
    watched = {name: proc_cpu_seconds(pid) for name, pid in args.watch}
    own = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    stats.recording = True
    await asyncio.sleep(args.duration)
    stats.recording = False
    elapsed = time.perf_counter() - t0
    cpu = {name: proc_cpu_seconds(pid) - watched[name] for name, pid in args.watch}
    own2 = resource.getrusage(resource.RUSAGE_SELF)
    cpu["loadgen"] = (own2.ru_utime + own2.ru_stime) - (own.ru_utime + own.ru_stime)
    await asyncio.gather(*users, return_exceptions=True)
    lat = sorted(stats.latencies)
    count = len(lat)
    return {
        "mode": args.mode,
        "concurrency": args.concurrency,
        "count": count,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "elapsed_s": elapsed,
        "rps": count / elapsed,
        "bytes_per_request": stats.bytes / count if count else 0,
        "p50_us": percentile(lat, 0.50),
        "p90_us": percentile(lat, 0.90),
        "p99_us": percentile(lat, 0.99),
        "cpu_s": cpu,
        "cpu_us_per_request": {k: v / count * 1e6 if count else None for k, v in cpu.items()},
    }


async def stream(args: argparse.Namespace) -> dict[str, Any]:
    """One slow download; time to first body byte, and how long the whole took."""
    client = Client(args)
    conn = await client.connect(args.rate)
    try:
        t0 = time.perf_counter_ns()
        if args.stream_of == "twostep":
            r = await conn.send(
                post("/v1/tts", client.hostport, client.body, args.token), keep=True
            )
            if r.status not in (200, 201):
                return {"error": f"tts status {r.status}"}
            url = urlsplit(json.loads(b"".join(r.body))["audio"]["url"])
            raw = get(url.path + "?" + url.query, client.hostport)
        elif args.stream_of == "get":
            raw = get(args.path, client.hostport)
        else:
            raw = post(args.path, client.hostport, client.body, args.token)
        done = conn.send(raw, first=True)
        assert conn.first is not None
        await asyncio.wait_for(conn.first, args.timeout)
        assert conn.reply is not None
        ttfb_ms = (conn.reply.first_byte - t0) / 1e6
        if args.first_byte_only:
            return {"ttfb_ms": ttfb_ms, "status": conn.reply.status}
        reply = await asyncio.wait_for(done, args.timeout)
        total_s = (time.perf_counter_ns() - t0) / 1e9
        return {
            "ttfb_ms": ttfb_ms,
            "status": reply.status,
            "bytes": reply.size,
            "total_s": total_s,
            "mb_per_s": reply.size / total_s / 1e6,
        }
    finally:
        conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=["speech", "twostep", "get", "stream"], required=True)
    p.add_argument("--stream-of", choices=["speech", "twostep", "get"], default="speech")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/audio/speech")
    p.add_argument("--body", default="{}")
    p.add_argument("--token", default="bench-key")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--min-size", type=int, default=1, help="smallest acceptable body")
    p.add_argument("--rate", type=float, default=0.0, help="stream: read at most this B/s")
    p.add_argument("--first-byte-only", action="store_true")
    p.add_argument(
        "--watch",
        action="append",
        default=[],
        type=lambda s: (s.split("=")[0], int(s.split("=")[1])),
        help="name=pid: report this process's CPU time over the measured window",
    )
    args = p.parse_args()
    runner = load if args.mode != "stream" else stream
    result = uvloop.run(runner(args)) if uvloop is not None else asyncio.run(runner(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
