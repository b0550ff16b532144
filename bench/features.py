#!/usr/bin/env python3
"""Benchmarks of two features: the audio cache (issue 11) and long text (issue 12).

    python3 bench/features.py            # ~4 minutes; writes the "features" section of
                                         # docs/benchmarks.md and docs/long-text.png
    python3 bench/features.py --quick    # ~1 minute smoke run into a temporary directory

Cache: the mock with a 300 ms generation delay, a shim with the embedded cache (in a
temporary directory) and a shim with ``--no-cache``, side by side. For about 2 KB
(0.5 s of Opus, the mock's shortest clip) and about 1 MB (21 s of PCM) of audio: time to
first byte of a hit, of a miss, and of the two-step call made by hand straight to the mock;
CPU per request of each server. Then 20 identical concurrent requests, half to each of two
shim replicas sharing a real ``redis-server``, and the number of generations the mock's
journal shows for them.

Long text: the mock at ``0.3s+4ms/char``, a shim as shipped (split) and one with
``--no-split``, both without a cache (every request generates); time to first audio
byte against input length, median of ``--reps`` runs, interleaved.

The processes, the load generator and the CPU readings are bench/run.py's and
bench/loadgen.py's. Runs under the project's ``.venv`` (re-executes itself there).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import FEATURES_END as MARK_END  # noqa: E402
from bench.report import FEATURES_START as MARK_START  # noqa: E402
from bench.report import write_section  # noqa: E402
from bench.run import VENV_BIN, Bench, load_average, loadgen, machine, reexec_in_venv  # noqa: E402

# Audio sizes for the cache: (label, input text, format). The mock speaks 15 characters a
# second, never less than 0.5 s; PCM is 48 bytes a millisecond.
SIZES = (
    ("~2 KB", "Thanks.", "opus"),
    ("~1 MB", ("Please hold the line, your call matters to us. " * 7)[:313], "pcm"),
)
CACHE_LATENCY = "300ms"
LONG_LATENCY = "0.3s+4ms/char"
LENGTHS = (300, 1000, 2000, 3000, 4000, 20000)
UNSPLIT_MAX = 4096  # longer inputs are refused by a --no-split shim
CONCURRENT = 20
# /proc counts CPU in 10 ms ticks: a miss takes 300 ms, so many must run at once for the
# CPU per miss to be resolved to some tens of µs.
CPU_CONCURRENCY = 16

_SENTENCE = (
    "the river ran past the old mill and the miller watched the light fall across "
    "water while children called from the bridge about supper and rain and a dog "
    "that would not come home before dark"
)
_WORDS = _SENTENCE.split()


def prose(length: int, seed: int = 12) -> str:
    """``length`` characters of plain sentences (so the splitter finds boundaries)."""
    rng = random.Random(seed)
    sentences = []
    total = 0
    while total < length + 200:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
        sentence = " ".join(words).capitalize() + "."
        sentences.append(sentence)
        total += len(sentence) + 1
    text = " ".join(sentences)[: length - 1].rstrip()
    return text + "." + " " * (length - len(text) - 1)  # exactly ``length`` characters


def speech_body(text: str, fmt: str) -> str:
    return json.dumps({"model": "tts-1", "voice": "alloy", "input": text, "response_format": fmt})


def tts_body(text: str, fmt: str) -> str:
    return json.dumps(
        {"model": "openai/tts-1", "voice": "alloy", "text": text, "response_format": fmt}
    )


def ttfb(port: int, body: str, of: str = "speech") -> float:
    """Milliseconds to the first body byte of one request (a fresh connection)."""
    r = loadgen(
        "--mode", "stream", "--stream-of", of, "--first-byte-only", "--timeout", "120",
        "--port", str(port), "--body", body,
    )  # fmt: skip
    if "ttfb_ms" not in r or r.get("status") != 200:
        raise SystemExit(f"request failed on port {port}: {r}")
    return float(r["ttfb_ms"])


def journal(mock_port: int) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{mock_port}/__mock__/requests"
    with urllib.request.urlopen(url, timeout=10) as reply:
        entries: list[dict[str, Any]] = json.loads(reply.read())["requests"]
    return entries


def generations(mock_port: int, after: int) -> int:
    """``POST /v1/tts`` calls in the mock's journal with a sequence number past ``after``
    (the journal is bounded: comparing its counts before and after would not do)."""
    return sum(
        1
        for e in journal(mock_port)
        if e["seq"] > after and e.get("method") == "POST" and e.get("path") == "/v1/tts"
    )


def speak(port: int, body: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/audio/speech",
        data=body.encode(),
        headers={"content-type": "application/json", "authorization": "Bearer bench-key"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:  # noqa: S310
        return reply.status, reply.headers.get("x-cache", ""), reply.read()


def median(values: list[float]) -> float:
    return statistics.median(values)


class Features:
    def __init__(self, args: argparse.Namespace, logdir: Path) -> None:
        self.args = args
        self.procs = Bench(args, logdir)  # run.py's process starter (free ports, logs, stop)
        self.tts_shim = str(VENV_BIN / "tts-shim")
        self.results: dict[str, Any] = {}

    def mock(self, name: str, latency: str) -> Any:
        return self.procs.start(
            name,
            [self.tts_shim, "mock", "--port", "{port}", "--log-level", "warning",
             "--generation-latency", latency],
            "/__bench_ready",
        )  # fmt: skip

    def shim(self, name: str, mock: Any, *extra: str) -> Any:
        return self.procs.start(
            name,
            [self.tts_shim, "serve", "--port", "{port}", "--log-level", "warning",
             "--upstream-url", f"http://127.0.0.1:{mock.port}", *extra],
            "/__bench_ready",
        )  # fmt: skip

    # -- issue 11 -------------------------------------------------------------------

    def cache(self) -> None:
        a = self.args
        cache_dir = tempfile.mkdtemp(prefix="tts-shim-bench-cache-")
        mock = self.mock("mock-300ms", CACHE_LATENCY)
        hit_shim = self.shim("shim-cache", mock, "--cache-dir", cache_dir)
        miss_shim = self.shim("shim-nocache", mock, "--no-cache")
        rows = []
        for label, text, fmt in SIZES:
            body, direct = speech_body(text, fmt), tts_body(text, fmt)
            status, header, audio = speak(hit_shim.port, body)  # fills the cache
            if status != 200 or header != "MISS":
                raise SystemExit(f"first request: status {status}, x-cache {header!r}")
            times: dict[str, list[float]] = {"hit": [], "miss": [], "two-step": []}
            for _ in range(a.reps):  # interleaved, so outside load spreads over all three
                times["hit"].append(ttfb(hit_shim.port, body))
                times["miss"].append(ttfb(miss_shim.port, body))
                times["two-step"].append(ttfb(mock.port, direct, of="twostep"))
            load = ["--concurrency", str(CPU_CONCURRENCY), "--duration", str(a.cpu_seconds),
                    "--warmup", "0.3", "--min-size", str(len(audio))]  # fmt: skip
            watch = {"server": 0, "mock": mock.pid}
            cpu = {
                "hit": loadgen("--mode", "speech", "--body", body, "--port", str(hit_shim.port),
                               *load, watch={**watch, "server": hit_shim.pid}),
                "miss": loadgen("--mode", "speech", "--body", body,
                                "--port", str(miss_shim.port), *load,
                                watch={**watch, "server": miss_shim.pid}),
                "two-step": loadgen("--mode", "twostep", "--body", direct,
                                    "--port", str(mock.port), *load, watch={"mock": mock.pid}),
            }  # fmt: skip
            for kind, r in cpu.items():
                if r["errors"]:
                    raise SystemExit(f"{label} {kind}: {r['errors']} errors {r['error_samples']}")
            row: dict[str, Any] = {
                "size": label,
                "format": fmt,
                "bytes": len(audio),
                "ttfb_ms": {k: median(v) for k, v in times.items()},
                "ttfb_all_ms": times,
                "cpu_us": {k: r["cpu_us_per_request"] for k, r in cpu.items()},
                "requests": {k: r["count"] for k, r in cpu.items()},
            }
            row["ratio"] = row["ttfb_ms"]["miss"] / row["ttfb_ms"]["hit"]
            rows.append(row)
            t = row["ttfb_ms"]
            print(
                f"  {label} {fmt} ({len(audio)} B): ttfb hit {t['hit']:.2f} ms, miss "
                f"{t['miss']:.1f} ms, two-step {t['two-step']:.1f} ms; miss/hit "
                f"{row['ratio']:.0f}x; shim CPU hit {row['cpu_us']['hit']['server']:.0f} us, "
                f"miss {row['cpu_us']['miss']['server']:.0f} us",
                flush=True,
            )
        self.results["cache"] = rows
        self.results["single_flight"] = self.single_flight(mock)

    def single_flight(self, mock: Any) -> dict[str, Any]:
        """20 identical requests at once, half to each of two replicas on one Redis."""
        from tests.redis_server import RedisServer

        redis = RedisServer().start()
        try:
            replicas = [
                self.shim(f"shim-redis-{n}", mock, "--redis-url", redis.url) for n in (1, 2)
            ]
            text = f"Single flight check {time.time_ns()}: one generation for all of us."
            body = speech_body(text, "mp3")
            before = max((e["seq"] for e in journal(mock.port)), default=0)
            barrier = threading.Barrier(CONCURRENT)

            def one(n: int) -> tuple[int, str, bytes]:
                barrier.wait()
                return speak(replicas[n % 2].port, body)

            started = time.monotonic()
            with ThreadPoolExecutor(CONCURRENT) as pool:
                answers = list(pool.map(one, range(CONCURRENT)))
            wall = time.monotonic() - started
            made = generations(mock.port, after=before)
        finally:
            for proc in [p for p in self.procs.procs if p.name.startswith("shim-redis")]:
                proc.stop()
                self.procs.procs.remove(proc)
            redis.stop()
        result = {
            "requests": CONCURRENT,
            "replicas": 2,
            "generations": made,
            "ok": sum(1 for status, _, _ in answers if status == 200),
            "identical": len({audio for _, _, audio in answers}) == 1,
            "x_cache": dict(Counter(header for _, header, _ in answers)),
            "wall_s": wall,
        }
        print(
            f"  {CONCURRENT} concurrent identical requests on 2 replicas + Redis: "
            f"{made} generation(s), x-cache {result['x_cache']}, identical {result['identical']}",
            flush=True,
        )
        return result

    # -- issue 12 -------------------------------------------------------------------

    def long_text(self) -> None:
        a = self.args
        mock = self.mock("mock-realistic", LONG_LATENCY)
        split = self.shim("shim-split", mock, "--no-cache")
        unsplit = self.shim("shim-unsplit", mock, "--no-cache", "--no-split")
        times: dict[int, dict[str, list[float]]] = {
            n: {"split": [], "unsplit": []} for n in a.lengths
        }
        for rep in range(a.reps):
            print(f"  long text, run {rep + 1} of {a.reps}; load {load_average():.2f}", flush=True)
            for n in a.lengths:
                body = speech_body(prose(n), "mp3")
                times[n]["split"].append(ttfb(split.port, body))
                if n <= UNSPLIT_MAX:
                    times[n]["unsplit"].append(ttfb(unsplit.port, body))
        rows = []
        for n in a.lengths:
            row: dict[str, Any] = {
                "chars": n,
                "split_ms": median(times[n]["split"]),
                "unsplit_ms": median(times[n]["unsplit"]) if times[n]["unsplit"] else None,
                "all_ms": times[n],
            }
            if row["unsplit_ms"]:
                row["ratio"] = row["split_ms"] / row["unsplit_ms"]
            rows.append(row)
            unsplit_text = f"{row['unsplit_ms']:8.0f} ms" if row["unsplit_ms"] else "  refused"
            print(f"  {n:6d} chars: split {row['split_ms']:7.0f} ms, unsplit {unsplit_text}")
        self.results["long_text"] = rows

    def run(self) -> dict[str, Any]:
        try:
            print("cache (issue 11)", flush=True)
            self.cache()
            print("long text (issue 12)", flush=True)
            self.long_text()
        finally:
            self.procs.stop_all()
        return self.results


# -- report ---------------------------------------------------------------------------


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def section(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    lines = [
        MARK_START,
        "## Features: cache hits and long text",
        "",
        f"`python3 bench/features.py`, {m['date']}, {m['cpu']} ({m['cores']} cores, shared with "
        f"other work; 1-minute load average {s['load_before'][0]:.1f} before, "
        f"{s['load_after'][0]:.1f} after), {s['wall_s']:.0f} s. Mock, shims and load generator "
        "are separate processes on loopback; times to first byte are medians of "
        f"{s['reps']} interleaved runs, each a fresh connection; CPU per request is read from "
        f"/proc over {s['cpu_seconds']:g} s of load at {CPU_CONCURRENCY} concurrent requests "
        "(the same for hits, misses and two-step calls).",
        "",
        "### Cache hits (issue 11): mock with a 300 ms generation delay",
        "",
        "*hit*: a shim with the embedded cache (diskcache in a temporary directory), audio "
        "cached; *miss*: a shim with `--no-cache` (generates every time); *two-step*: "
        "`POST /v1/tts`, then `GET` of the CDN link, by hand, straight to the mock (no shim).",
        "",
        "| audio | TTFB hit | TTFB miss | TTFB two-step | miss / hit | ≥ 10x | shim CPU/req hit "
        "| shim CPU/req miss | mock CPU/req miss | mock CPU/req two-step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["cache"]:
        t, c = r["ttfb_ms"], r["cpu_us"]
        lines.append(
            f"| {r['size']} ({r['bytes']:,} B {r['format']}) | {t['hit']:.2f} ms "
            f"| {t['miss']:.1f} ms | {t['two-step']:.1f} ms | {r['ratio']:.0f}x "
            f"| {_yes(r['ratio'] >= 10)} | {c['hit']['server']:.0f} µs "
            f"| {c['miss']['server']:.0f} µs | {c['miss']['mock']:.0f} µs "
            f"| {c['two-step']['mock']:.0f} µs |"
        )
    fewest = min(n for r in results["cache"] for n in r["requests"].values())
    resolution = 1e6 / os.sysconf("SC_CLK_TCK") / fewest
    sf = results["single_flight"]
    lines += [
        "",
        "The smallest clip the mock makes is 0.5 s, so the small size is ~2 KB of Opus rather "
        "than 1 KB. A hit costs the mock nothing (no request reaches it). The miss column of "
        "the mock is its CPU for the shim's two calls. /proc counts CPU in ticks of "
        f"{1000 / os.sysconf('SC_CLK_TCK'):g} ms, so with {fewest} requests in the shortest "
        f"window a CPU figure is resolved to about {resolution:.0f} µs.",
        "",
        f"**Single flight**: {sf['requests']} identical concurrent requests, alternately to "
        f"two shim replicas sharing one real `redis-server`: **{sf['generations']} "
        f"generation{'s' if sf['generations'] != 1 else ''}** in the mock's journal "
        f"(one: {_yes(sf['generations'] == 1)}); "
        f"{sf['ok']} answered 200, bytes identical: {_yes(sf['identical'])}; `x-cache`: "
        + ", ".join(f"{k or '(none)'} {v}" for k, v in sorted(sf["x_cache"].items()))
        + f"; all done in {sf['wall_s']:.2f} s.",
        "",
        f"### Long text (issue 12): mock at `{LONG_LATENCY}` (`--generation-latency realistic`)",
        "",
        "Time to the first audio byte (MP3), split (the default: texts longer than 1,000 "
        "characters, so 300 and 1,000 are not split) and unsplit (`--no-split`; over 4,096 "
        "characters it is refused). Both shims without a cache, so every run generates.",
        "",
        "| characters | split | unsplit | split / unsplit |",
        "|---|---|---|---|",
    ]
    for r in results["long_text"]:
        unsplit = f"{r['unsplit_ms'] / 1000:.2f} s" if r["unsplit_ms"] else "refused"
        ratio = f"{r['ratio']:.0%}" if r.get("ratio") else "-"
        lines.append(f"| {r['chars']:,} | {r['split_ms'] / 1000:.2f} s | {unsplit} | {ratio} |")
    at3000 = next((r for r in results["long_text"] if r["chars"] == 3000), None)
    if at3000 and at3000.get("ratio"):
        lines += [
            "",
            f"At 3,000 characters the split first byte comes at **{at3000['ratio']:.0%}** of "
            f"the unsplit one (target < 25%: {_yes(at3000['ratio'] < 0.25)}).",
        ]
    lines += ["", "![time to first audio against input length](long-text.png)", "", MARK_END]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["long_text"]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    ax.plot(
        [r["chars"] for r in rows], [r["split_ms"] / 1000 for r in rows],
        "o-", label="split (default)",
    )  # fmt: skip
    unsplit = [r for r in rows if r["unsplit_ms"]]
    ax.plot(
        [r["chars"] for r in unsplit], [r["unsplit_ms"] / 1000 for r in unsplit],
        "s-", label="unsplit (--no-split; refused over 4,096)",
    )  # fmt: skip
    ax.axvline(UNSPLIT_MAX, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([r["chars"] for r in rows], [f"{r['chars']:,}" for r in rows])
    ax.set_xlabel("input length (characters)")
    ax.set_ylabel("time to first audio byte (s)")
    ax.set_title(
        f"tts-shim, mock at {LONG_LATENCY}: median of {results['settings']['reps']} runs, "
        f"{results['machine']['date']}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    reexec_in_venv(__file__)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--out", type=Path, help="where benchmarks.md/long-text.png go")
    parser.add_argument("--reps", type=int, help="runs per time to first byte (default 3)")
    args = parser.parse_args()
    if args.quick:
        args.reps = args.reps or 1
        args.cpu_seconds = 1.0
        args.lengths = (300, 2000, 5000)
        args.out = args.out or Path(tempfile.mkdtemp(prefix="tts-shim-bench-"))
    else:
        args.reps = args.reps or 3
        args.cpu_seconds = 3.0
        args.lengths = LENGTHS
        args.out = args.out or ROOT / "docs"
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    load_before = os.getloadavg()
    logdir = Path(tempfile.mkdtemp(prefix="tts-shim-bench-logs-"))
    print(f"logs in {logdir}", flush=True)
    results = Features(args, logdir).run()
    results["machine"] = machine()
    results["settings"] = {
        "reps": args.reps,
        "cpu_seconds": args.cpu_seconds,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "wall_s": round(time.monotonic() - started, 1),
    }
    write_section(args.out / "benchmarks.md", section(results))
    chart(results, args.out / "long-text.png")
    print(f"wrote {args.out / 'benchmarks.md'} (features section) and long-text.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
