#!/usr/bin/env python3
"""tts-shim's benchmark: one command, every figure of docs/benchmarks.md.

    python3 bench/run.py                 # full run, a few minutes; rewrites docs/benchmarks.*
    python3 bench/run.py --peer litellm  # the same, with the LiteLLM proxy measured beside it
    python3 bench/run.py --quick         # smoke run, under a minute; writes to --out (a temp dir)

It starts, as separate processes on loopback, the mock AI/ML API
(``tts-shim mock``), the shim (``tts-shim serve --upstream-url <mock>``) and a
trivial Starlette app on the same server stack (the CPU floor), and with ``--peer
litellm`` the LiteLLM proxy (``bench/peer.py``), then drives them with
``bench/loadgen.py`` (a lean asyncio/httptools client in its own process) in
interleaved rounds and reads every process's CPU time from /proc.

Linux only (/proc). Runs under the project's ``.venv`` (re-executes itself there).
py-spy (``.venv/bin/pip install py-spy``) is optional: with it, the report includes
the shim's profile under load.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
LOADGEN = ROOT / "bench" / "loadgen.py"
TRIVIAL = ROOT / "bench" / "trivial.py"

# About 2.2 s of speech: the mock answers with ~18 KB of MP3, close to the 16 KB of
# the prototype figures. MP3 in, MP3 out: the shim relays, no transcoding.
TEXT = "Hello there, this is a short one."
SPEECH_BODY = json.dumps(
    {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "mp3"}
)
TTS_BODY = json.dumps(
    {"model": "openai/tts-1", "voice": "alloy", "text": TEXT, "response_format": "mp3"}
)
MIN_AUDIO = 10_000  # a reply shorter than this is counted as an error
PCM_BYTES_PER_MS = 48  # 24 kHz, 16-bit, mono
MB = 1_000_000

CONCURRENCY = (1, 16, 64)
PEER_CONCURRENCY = 16  # where the shim and its peer are compared
PEERS = ("litellm",)


def reexec_in_venv(script: str) -> None:
    """Run ``script`` (a bench file's ``__file__``) again under the project's ``.venv``,
    with the same arguments, unless that is where it runs already."""
    python = VENV_BIN / "python"
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve() and python.exists():
        os.execv(str(python), [str(python), script, *sys.argv[1:]])  # noqa: S606


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    def __init__(
        self,
        name: str,
        args: list[str],
        port: int,
        logdir: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.port = port
        self.log = (logdir / f"{name}.log").open("wb")
        self.popen = subprocess.Popen(
            args,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **env} if env else None,
        )
        self.pid = self.popen.pid

    def wait_ready(self, path: str, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise SystemExit(f"{self.name} exited early; see {self.log.name}")
            try:
                url = f"http://127.0.0.1:{self.port}{path}"
                with urllib.request.urlopen(url, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"{self.name} did not start within {limit} s")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.log.close()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of ``pid``; False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# -- measurements ---------------------------------------------------------------------


def loadgen(*args: str, watch: dict[str, int] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(LOADGEN), *args]
    for name, pid in (watch or {}).items():
        cmd += ["--watch", f"{name}={pid}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def post_json(url: str, payload: Any) -> Any:
    request = urllib.request.Request(  # noqa: S310 (http on loopback only)
        url,
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer bench-key"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 (http, loopback)
        return json.loads(reply.read())


def fetch_audio(mock_url: str) -> bytes:
    """The MP3 the mock serves for the benchmark's text, fetched by hand (two steps)."""
    url = post_json(f"{mock_url}/v1/tts", json.loads(TTS_BODY))["audio"]["url"]
    with urllib.request.urlopen(url, timeout=30) as reply:  # noqa: S310 (http, loopback)
        audio: bytes = reply.read()
    return audio


def load_average() -> float:
    """The 1-minute load average (on this shared machine, other work is part of it)."""
    return os.getloadavg()[0]


class Bench:
    def __init__(self, args: argparse.Namespace, logdir: Path) -> None:
        self.args = args
        self.logdir = logdir
        self.procs: list[Proc] = []
        self.results: dict[str, Any] = {
            "runs": {},
            "streams": [],
            "profile": None,
            "peer": None,
            "load": [],
        }

    def start(
        self, name: str, args: list[str], ready: str, env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> Proc:  # fmt: skip
        port = free_port()
        argv = [a.replace("{port}", str(port)) for a in args]
        proc = Proc(name, argv, port, self.logdir, env, cwd)
        self.procs.append(proc)
        proc.wait_ready(ready)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def run(self) -> dict[str, Any]:
        from bench import peer

        a = self.args
        tts_shim = str(VENV_BIN / "tts-shim")
        self.mock = self.start(
            "mock",
            [tts_shim, "mock", "--port", "{port}", "--log-level", "warning"],
            "/__bench_ready",
        )
        mock_url = f"http://127.0.0.1:{self.mock.port}"
        self.shim = self.start(
            "shim",
            # No cache: every request is the whole path (bench/features.py measures hits).
            [tts_shim, "serve", "--port", "{port}", "--upstream-url", mock_url, "--no-cache"],
            "/__bench_ready",
        )
        # The floor doubles as the peer's upstream: the cheapest OpenAI-compatible speech
        # endpoint, answering with the very bytes the mock's CDN serves the shim.
        audio = self.logdir / "speech.mp3"
        audio.write_bytes(fetch_audio(mock_url))
        self.trivial = self.start(
            "trivial",
            [sys.executable, str(TRIVIAL), "--port", "{port}", "--audio", str(audio)],
            "/__bench_ready",
        )
        self.peer = self._start_peer() if a.peer else None
        print(f"processes up; logs in {self.logdir}", flush=True)

        d = ["--duration", str(a.duration), "--warmup", str(a.warmup)]
        size = ["--min-size", str(MIN_AUDIO)]
        plan: list[tuple[str, list[str], dict[str, int]]] = []
        for c in CONCURRENCY:
            conc = ["--concurrency", str(c), *d]
            plan.append((
                f"trivial c={c}",
                ["--mode", "get", "--path", "/ping", "--port", str(self.trivial.port), *conc],
                {"server": self.trivial.pid},
            ))  # fmt: skip
            plan.append((
                f"two-step c={c}",
                ["--mode", "twostep", "--body", TTS_BODY, "--port", str(self.mock.port),
                 *conc, *size],
                {"mock": self.mock.pid},
            ))  # fmt: skip
            plan.append((
                f"shim c={c}",
                ["--mode", "speech", "--body", SPEECH_BODY, "--port", str(self.shim.port),
                 *conc, *size],
                {"server": self.shim.pid, "mock": self.mock.pid},
            ))  # fmt: skip
            if self.peer is not None and c == PEER_CONCURRENCY:
                plan.append((
                    f"{a.peer} c={c}",
                    ["--mode", "speech", "--body", SPEECH_BODY, "--port", str(self.peer.port),
                     "--token", peer.MASTER_KEY, *conc, *size],
                    {"server": self.peer.pid, "upstream": self.trivial.pid},
                ))  # fmt: skip
        # The machine is shared: each configuration runs in several short rounds,
        # interleaved with all the others, so a burst of outside load spreads over
        # every configuration instead of spoiling one.
        # A first pass of each server at the comparison point, not recorded: LiteLLM, for
        # one, imports its provider code on the first requests (its first second at c=16
        # runs at a tenth of its later rate).
        for key, argv, watch in plan:
            if key.endswith(f" c={PEER_CONCURRENCY}"):
                loadgen(*[*argv, "--duration", str(a.first_pass), "--warmup", "0"], watch=watch)
        rounds: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in plan}
        for number in range(a.rounds):
            print(
                f"round {number + 1} of {a.rounds}; load average {load_average():.2f}", flush=True
            )
            for key, argv, watch in plan:
                rounds[key].append(loadgen(*argv, watch=watch))
                self.results["load"].append(load_average())
                self._say(key, rounds[key][-1])
        self.results["runs"] = {key: merge(parts) for key, parts in rounds.items()}

        for mb in a.stream_mb:
            self.results["streams"].append(self.stream(mb))
        if a.profile:
            self.results["profile"] = self.profile()
        return self.results

    def _start_peer(self) -> Proc:
        """The peer proxy, installed on first use, routed to the floor's speech route."""
        from bench import peer

        litellm = peer.ensure_installed()
        home = Path(tempfile.mkdtemp(prefix="tts-shim-bench-peer-"))
        upstream = f"http://127.0.0.1:{self.trivial.port}"
        config_file = peer.write_config(home, upstream)
        self.results["peer"] = {
            "name": self.args.peer,
            "version": peer.version(),
            "packages": list(peer.PACKAGES),
            "config": peer.config(upstream),
        }
        return self.start(
            self.args.peer, peer.command(litellm, config_file), peer.READY, peer.ENV, cwd=home
        )

    def _say(self, key: str, r: dict[str, Any]) -> None:
        cpu = r["cpu_us_per_request"]
        server = cpu.get("server") or cpu.get("mock")
        print(
            f"  {key:22} {r['rps']:8.0f} req/s  p50 {r['p50_us'] / 1000:7.2f} ms  "
            f"p99 {r['p99_us'] / 1000:7.2f} ms  cpu {server:7.1f} us/req  errors {r['errors']}",
            flush=True,
        )

    # -- streaming ------------------------------------------------------------------

    def _clip_url(self, mb: int) -> str:
        ms = -(-mb * MB // PCM_BYTES_PER_MS)
        return (
            f"http://127.0.0.1:{self.mock.port}/generations/alloy/"
            f"1760948051400-00000000-0000-4000-8000-{mb:012d}.pcm?duration_ms={ms}"
        )

    def _push_url(self, url: str) -> None:
        post_json(f"http://127.0.0.1:{self.mock.port}/__mock__/scenario", {"steps": [
            {"route": "tts", "audio_url": url}
        ]})  # fmt: skip

    def stream(self, mb: int) -> dict[str, Any]:
        """TTFB (CDN alone, two-step by hand, through the shim) and the shim's peak RSS
        while a slow reader takes ``mb`` MB of PCM through it."""
        a = self.args
        url = self._clip_url(mb)
        path = url.split(str(self.mock.port), 1)[1]
        shim = self.shim
        pcm_speech = json.dumps({**json.loads(SPEECH_BODY), "response_format": "pcm"})
        pcm_tts = json.dumps({**json.loads(TTS_BODY), "response_format": "pcm"})
        common = ["--mode", "stream", "--first-byte-only", "--timeout", "120"]
        ttfb: dict[str, list[float]] = {"cdn": [], "two-step": [], "shim": []}
        for _ in range(a.ttfb_reps):
            r = loadgen(
                *common, "--stream-of", "get", "--path", path, "--port", str(self.mock.port)
            )
            ttfb["cdn"].append(r["ttfb_ms"])
            self._push_url(url)
            r = loadgen(
                *common, "--stream-of", "twostep", "--body", pcm_tts, "--port", str(self.mock.port)
            )
            ttfb["two-step"].append(r["ttfb_ms"])
            self._push_url(url)
            r = loadgen(
                *common, "--stream-of", "speech", "--body", pcm_speech, "--port", str(shim.port)
            )
            ttfb["shim"].append(r["ttfb_ms"])

        # The slow, complete download through the shim, sampling its RSS meanwhile.
        time.sleep(0.3)
        base = rss_kb(shim.pid)
        exact = reset_peak(shim.pid)
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    samples.append(rss_kb(shim.pid))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        self._push_url(url)
        full = loadgen(
            "--mode", "stream", "--stream-of", "speech", "--body", pcm_speech,
            "--port", str(shim.port), "--rate", str(a.slow_rate * MB), "--timeout", "300",
        )  # fmt: skip
        stop.set()
        sampler.join()
        peak = max([*samples, base])
        if exact:
            peak = max(peak, peak_kb(shim.pid))
        median = {k: sorted(v)[len(v) // 2] for k, v in ttfb.items()}
        result = {
            "mb": mb,
            "ttfb_ms": median,
            "ttfb_all_ms": ttfb,
            "bytes": full.get("bytes"),
            "status": full.get("status"),
            "read_mb_per_s": full.get("mb_per_s"),
            "rss_base_kb": base,
            "rss_peak_kb": peak,
            "rss_growth_kb": peak - base,
            "peak_exact": exact,
        }
        print(
            f"  stream {mb:4d} MB: ttfb cdn {median['cdn']:.2f} ms, two-step "
            f"{median['two-step']:.2f} ms, shim {median['shim']:.2f} ms; "
            f"rss +{(peak - base) / 1024:.1f} MiB; read {full.get('bytes', 0) / MB:.0f} MB "
            f"at {full.get('mb_per_s', 0):.0f} MB/s",
            flush=True,
        )
        return result

    # -- profile --------------------------------------------------------------------

    def profile(self) -> dict[str, Any] | None:
        py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
        if not Path(py_spy).exists():
            print("  (py-spy not installed: no profile; .venv/bin/pip install py-spy)")
            return None
        shim = self.shim
        raw = self.logdir / "profile.txt"
        seconds = max(2, round(self.args.duration * self.args.rounds))
        spy = subprocess.Popen(
            [py_spy, "record", "-p", str(shim.pid), "-d", str(seconds + 1), "-r", "250",
             "-f", "raw", "-o", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        loadgen(
            "--mode", "speech", "--body", SPEECH_BODY, "--port", str(shim.port),
            "--concurrency", str(PEER_CONCURRENCY), "--duration", str(seconds), "--warmup", "0.2",
        )  # fmt: skip
        spy.wait(60)
        if not raw.exists():
            return None
        return summarise_profile(raw)


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per configuration from its rounds: counts, CPU and time add up (so
    CPU per request is total CPU over total requests); latency percentiles are the
    median of the rounds'."""

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[len(ordered) // 2]

    count = sum(p["count"] for p in parts)
    elapsed = sum(p["elapsed_s"] for p in parts)
    cpu: dict[str, float] = {}
    for p in parts:
        for name, seconds in p["cpu_s"].items():
            cpu[name] = cpu.get(name, 0.0) + seconds
    return {
        "mode": parts[0]["mode"],
        "concurrency": parts[0]["concurrency"],
        "rounds": len(parts),
        "count": count,
        "errors": sum(p["errors"] for p in parts),
        "error_samples": [e for p in parts for e in p["error_samples"]][:5],
        "elapsed_s": elapsed,
        "rps": count / elapsed if elapsed else 0.0,
        "rps_rounds": [p["rps"] for p in parts],
        "bytes_per_request": median([p["bytes_per_request"] for p in parts]),
        "p50_us": median([p["p50_us"] for p in parts]),
        "p90_us": median([p["p90_us"] for p in parts]),
        "p99_us": median([p["p99_us"] for p in parts]),
        "cpu_s": cpu,
        "cpu_us_per_request": {k: v / count * 1e6 if count else None for k, v in cpu.items()},
    }


def summarise_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack.strip():
            continue
        n = int(count)
        total += n
        names = []
        for frame in stack.split(";"):
            func, _, where = frame.partition(" (")
            filename = where.split(":")[0].rsplit("/", 1)[-1]
            names.append(f"{func} ({filename})" if filename else func)
        own[names[-1]] += n
        layers[layer_of(stack.split(";")[-1])] += n
        for name in set(names):
            inclusive[name] += n
    entry = max(inclusive.values(), default=0)
    return {
        "samples": total,
        "self": [(k, v / total) for k, v in own.most_common(top)],
        # Leave out the chain every sample shares (the command line, the event loop).
        "inclusive": [(k, v / total) for k, v in inclusive.most_common(top * 3) if v < entry][
            : top * 2
        ],
        "layers": [(k, v / total) for k, v in layers.most_common()],
    }


# Where a sample's innermost frame lives, by path: which layer pays for it.
LAYERS = (
    ("uvicorn/protocols", "uvicorn: HTTP parsing and socket writes of the shim's own responses"),
    ("asyncio/runners", "event loop (uvloop, C): epoll, socket reads, callbacks"),
    ("aiohttp/http_writer", "aiohttp: writing upstream requests (incl. their socket writes)"),
    ("aiohttp/", "aiohttp: the upstream connections, requests and replies"),
    ("prometheus_client/", "prometheus_client: the metrics"),
    ("shim/logs", "shim: access log (JSON lines)"),
    ("logging/", "logging module"),
    ("starlette/", "Starlette: routing, middleware, request and response objects"),
    ("anyio/", "anyio: cancel scopes (deadline), thread-safety helpers"),
    ("pydantic", "pydantic: request validation"),
    ("tenacity/", "tenacity"),
    ("json/", "json"),
    ("shim/", "shim: its own code (validation, upstream logic, middleware)"),
    ("asyncio/", "asyncio (Python parts)"),
)


def layer_of(frame: str) -> str:
    where = frame.partition(" (")[2]
    for marker, label in LAYERS:
        if marker in where:
            return label
    return "other"


# -- report ---------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = [
        "tts-shim", "uvicorn", "starlette", "aiohttp", "uvloop", "httptools", "tenacity",
        "anyio", "pydantic", "prometheus-client",
    ]  # fmt: skip
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (absent)")
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": ", ".join(versions),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main() -> int:
    reexec_in_venv(__file__)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--out", type=Path, help="where the .md/.png/.json go (default docs/)")
    parser.add_argument("--duration", type=float, help="seconds per load run (default 3)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--peer",
        choices=PEERS,
        help="also measure this proxy doing one speech hop (installs it into .venv-<peer>)",
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    args = parser.parse_args()
    if args.quick:
        args.duration = args.duration or 0.6
        args.rounds = args.rounds or 1
        args.first_pass = 1.0
        args.warmup = 0.2
        args.stream_mb = [1, 16]
        args.ttfb_reps = 1
        args.slow_rate = 64
        args.out = args.out or Path(tempfile.mkdtemp(prefix="tts-shim-bench-"))
    else:
        args.duration = args.duration or 1.5
        args.rounds = args.rounds or 5
        args.first_pass = 3.0
        args.warmup = 0.3
        args.stream_mb = [1, 16, 128]
        args.ttfb_reps = 5
        args.slow_rate = 32  # MB/s: slower than the mock and the shim can send
        args.out = args.out or ROOT / "docs"
    args.out.mkdir(parents=True, exist_ok=True)

    from bench import report

    started = time.monotonic()
    load_before = os.getloadavg()
    logdir = Path(tempfile.mkdtemp(prefix="tts-shim-bench-logs-"))
    bench = Bench(args, logdir)
    try:
        results = bench.run()
    finally:
        bench.stop_all()
    results["machine"] = machine()
    results["settings"] = {
        "duration_s": args.duration,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "first_pass_s": args.first_pass,
        "concurrency": list(CONCURRENCY),
        "peer_concurrency": PEER_CONCURRENCY,
        "peer": args.peer,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "slow_reader_mb_per_s": args.slow_rate,
        "quick": args.quick,
        "wall_s": round(time.monotonic() - started, 1),
    }
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=1) + "\n")
    report.write(results, args.out)
    print(
        f"wrote {args.out / 'benchmarks.md'} and benchmarks.png "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
