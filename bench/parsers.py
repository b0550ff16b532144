#!/usr/bin/env python3
"""uvicorn's HTTP/1.1 parsers under the shim, side by side: what each costs per
request, and what a 100 MB request header costs each (docs/reliability.md).

    python3 bench/parsers.py            # ~1 minute
    python3 bench/parsers.py --quick    # ~20 s

For each parser (``httptools``, uvicorn's default when installed; ``capped``, httptools
with the shim's guard on the request head (``shim._http_guard``), what
``tts-shim serve`` uses; ``h11`` with ``h11_max_incomplete_event_size``, what it used
before; and ``zttp`` where installed) it starts the shim as its own process in front of the mock
(``tts-shim mock``), then:

* drives ``GET /healthz`` and ``POST /v1/audio/speech`` with ``bench/loadgen.py``
  (keep-alive, closed loop) and reads the shim's CPU time per request from /proc; the
  parsers take turns over several short rounds, so outside load spreads over both;
* sends one request whose header is 100 MB (``X-Pad: aaaa...``) on its own connection
  while a second client probes ``/healthz`` every 20 ms, and reports the shim's CPU
  time for the attack, the slowest probe, and how many bytes the shim took before it
  closed the connection.

Output: a table on stdout, and one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import reexec_in_venv  # noqa: E402

reexec_in_venv(__file__)  # before the imports only the project's .venv has

from bench.loadgen import proc_cpu_seconds as cpu_seconds  # noqa: E402
from bench.run import (  # noqa: E402
    LOADGEN,
    SPEECH_BODY,
    VENV_BIN,
    Proc,
    free_port,
    rss_kb,
)

#: uvicorn's newer ``zttp`` parser is measured too where the ``zttp`` package is installed
#: (it is not a dependency of the shim).
PARSERS = (
    "httptools",
    "capped",
    "h11",
    *(("zttp",) if importlib.util.find_spec("zttp") else ()),
)
#: The header cap ``tts-shim serve`` sets (shim._http_guard.MAX_HEADER_BYTES).
CAP = 64 * 1024
ATTACK_BYTES = 100 * 1024 * 1024


def serve(parser: str, port: int, upstream: str) -> None:
    """The child: the shim on ``parser``, as ``tts-shim serve`` runs it otherwise."""
    import uvicorn

    from shim._http_guard import guarded
    from shim.app import create_app
    from shim.config import Config

    config = Config(upstream_url=upstream, port=port)
    app: Any = create_app(config)
    options: dict[str, Any] = {"http": parser}
    if parser == "h11":
        options["h11_max_incomplete_event_size"] = CAP
    elif parser == "capped":
        app, options = guarded(app, head_timeout=config.head_timeout)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        log_level="warning",
        access_log=False,
        server_header=False,
        **options,
    )


def loadgen(*args: str, pid: int) -> dict[str, Any]:
    cmd = [sys.executable, str(LOADGEN), *args, "--watch", f"server={pid}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def attack(port: int, pid: int, size: int) -> dict[str, Any]:
    """One ``size``-byte header while /healthz is probed; the shim's cost of it."""
    probes: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                sock.recv(4096)
            probes.append(time.perf_counter() - started)
            stop.wait(0.02)

    def send() -> tuple[int, bytes]:
        sent = 0
        chunk = b"a" * (1024 * 1024)
        head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pad: ".encode()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            try:
                sock.sendall(head)
                while sent < size:
                    sock.sendall(chunk)
                    sent += len(chunk)
                sock.sendall(b"\r\n\r\n")
                return sent, sock.recv(200)
            except OSError:
                return sent, b""

    def settle() -> float:
        # The shim may still be chewing on what it took: wait until its CPU time stops.
        previous = -1.0
        while (now := cpu_seconds(pid)) != previous:
            previous = now
            time.sleep(0.3)
        return now

    # First alone, for the CPU it costs; then again while /healthz is probed.
    cpu_before, rss_before = settle(), rss_kb(pid)
    started = time.perf_counter()
    closed_after, reply = send()
    cpu = settle() - cpu_before
    wall = time.perf_counter() - started
    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    send()
    time.sleep(0.5)
    stop.set()
    prober.join(30)
    return {
        "header_bytes": size,
        "shim_cpu_s": round(cpu, 3),
        "wall_s": round(wall, 2),
        "healthz_max_ms": round(max(probes) * 1000, 1) if probes else None,
        "healthz_probes": len(probes),
        "client_sent_before_close": closed_after,
        "reply": reply.split(b"\r\n", 1)[0].decode("latin-1"),
        "rss_growth_mb": round((rss_kb(pid) - rss_before) / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--serve", choices=PARSERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.upstream)
        return 0

    rounds, duration = (1, 1.0) if args.quick else (3, 2.0)
    logdir = Path(tempfile.mkdtemp(prefix="tts-shim-parsers-"))
    procs: list[Proc] = []
    try:
        mock_port = free_port()
        mock = Proc(
            "mock",
            [str(VENV_BIN / "tts-shim"), "mock", "--port", str(mock_port), "--log-level", "error"],
            mock_port,
            logdir,
        )
        procs.append(mock)
        mock.wait_ready("/healthz")
        shims: dict[str, Proc] = {}
        for name in PARSERS:
            port = free_port()
            shims[name] = Proc(
                f"shim-{name}",
                [sys.executable, __file__, "--serve", name, "--port", str(port),
                 "--upstream", f"http://127.0.0.1:{mock_port}"],
                port,
                logdir,
            )  # fmt: skip
            procs.append(shims[name])
            shims[name].wait_ready("/healthz")
        plan = {
            "healthz c=1": ["--mode", "get", "--path", "/healthz", "--concurrency", "1"],
            "healthz c=32": ["--mode", "get", "--path", "/healthz", "--concurrency", "32"],
            "speech c=32": ["--mode", "speech", "--body", SPEECH_BODY, "--concurrency", "32"],
        }
        runs: dict[str, dict[str, list[float]]] = {
            f"{name} {key}": {"cpu": [], "rps": []} for name in PARSERS for key in plan
        }
        timing = ["--duration", str(duration), "--warmup", "0.5"]
        for _ in range(rounds):
            for key, argv in plan.items():
                for name, shim in shims.items():
                    r = loadgen(*argv, *timing, "--port", str(shim.port), pid=shim.pid)
                    runs[f"{name} {key}"]["cpu"].append(r["cpu_us_per_request"]["server"])
                    runs[f"{name} {key}"]["rps"].append(r["rps"])
        results: dict[str, Any] = {"load": {}, "attack": {}}
        for key, values in runs.items():
            results["load"][key] = {
                "cpu_us_per_request": round(sorted(values["cpu"])[len(values["cpu"]) // 2], 1),
                "rps": round(sorted(values["rps"])[len(values["rps"]) // 2]),
            }
        for name, shim in shims.items():
            results["attack"][name] = attack(shim.port, shim.pid, ATTACK_BYTES)
    finally:
        for proc in reversed(procs):
            proc.stop()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'run':28} {'shim CPU/request':>18} {'req/s':>8}")
    for key, value in results["load"].items():
        print(f"{key:28} {value['cpu_us_per_request']:15.1f} us {value['rps']:8}")
    print()
    for name, value in results["attack"].items():
        print(f"{name}: 100 MB header -> {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
