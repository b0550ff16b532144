"""The Grafana dashboard (docs/grafana-dashboard.json) and its picture (docs/dashboard.png).

Grafana is not available offline, so the picture is a facsimile: the same panels,
titled as in the dashboard, drawn with matplotlib from ``/metrics`` scraped every
second during a real run of ``tts-shim serve --mock`` (three named keys, one of them
limited, mixed models). The panel list below is the one
source of both files.

    python3 bench/dashboard.py            # ~40 s: run, scrape, write both files
    python3 bench/dashboard.py --json     # only the dashboard JSON
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: (title, unit, [(PromQL, legend)]): the dashboard's panels, in order.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Requests per second by status",
        "reqps",
        [("sum by (status) (rate(tts_shim_requests_total[1m]))", "{{status}}")],
    ),
    (
        "Time to first byte, p50 / p95",
        "s",
        [
            (
                "histogram_quantile(0.5, sum by (le) "
                "(rate(tts_shim_time_to_first_byte_seconds_bucket[1m])))",
                "p50",
            ),
            (
                "histogram_quantile(0.95, sum by (le) "
                "(rate(tts_shim_time_to_first_byte_seconds_bucket[1m])))",
                "p95",
            ),
        ],
    ),
    (
        "Estimated spend by key (USD, cumulative)",
        "currencyUSD",
        [("sum by (key) (tts_shim_usd_total)", "{{key}}")],
    ),
    (
        "Characters generated per second by model",
        "short",
        [("sum by (model) (rate(tts_shim_characters_total[1m]))", "{{model}}")],
    ),
    (
        "Upstream calls per second by kind and outcome",
        "reqps",
        [
            (
                "sum by (kind, outcome) (rate(tts_shim_upstream_calls_total[1m]))",
                "{{kind}} {{outcome}}",
            )
        ],
    ),
    (
        "Requests refused by key limits",
        "short",
        [("sum by (key, code) (tts_shim_limited_requests_total)", "{{key}} {{code}}")],
    ),
    (
        "Slots in use and queue",
        "short",
        [("sum(tts_shim_slots_in_use)", "slots"), ("sum(tts_shim_queue_length)", "queued")],
    ),
    (
        "Cache: hits, misses, USD saved",
        "short",
        [
            ("sum(tts_shim_cache_hits_total)", "hits"),
            ("sum(tts_shim_cache_misses_total)", "misses"),
            ("sum(tts_shim_cache_saved_usd_total)", "USD saved"),
        ],
    ),
]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard model (schema 39), a Prometheus data source chosen on import."""
    panels = []
    for number, (title, unit, queries) in enumerate(PANELS):
        panels.append(
            {
                "id": number + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (number % 2), "y": 8 * (number // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(65 + i), "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(queries)
                ],
            }
        )
    return {
        "title": "tts-shim",
        "uid": "tts-shim",
        "schemaVersion": 39,
        "version": 1,
        "tags": ["tts-shim"],
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "panels": panels,
    }


# -- a real run, scraped ----------------------------------------------------------------

KEYS = """\
[keys.mobile-app]
key = "sk-dash-mobile-0001"
characters_per_minute = 6000

[keys.batch]
key = "sk-dash-batch-00002"

[keys.web]
key = "sk-dash-web-000003"
requests_per_minute = 40
"""
TOKENS = {
    "mobile-app": "sk-dash-mobile-0001",
    "batch": "sk-dash-batch-00002",
    "web": "sk-dash-web-000003",
}
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "hex",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def _load(url: str, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            name = rng.choice(list(TOKENS))
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))) + "."
            model = rng.choice(["tts-1", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"])
            client.post(
                url + "/v1/audio/speech",
                json={"model": model, "input": text, "response_format": "mp3"},
                headers={"authorization": f"Bearer {TOKENS[name]}"},
            )
            stop.wait(rng.uniform(0.05, 0.3))


def run(seconds: float) -> list[tuple[float, dict[Any, float]]]:
    """Serve on the mock, drive it from 4 threads, scrape once a second."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp, "keys.toml")
        keys.write_text(KEYS)
        proc = subprocess.Popen(
            [sys.executable, "-m", "shim", "serve", "--mock", "--port", str(port),
             "--keys-file", str(keys), "--log-level", "warning"],
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    httpx.get(url + "/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            stop = threading.Event()
            threads = [threading.Thread(target=_load, args=(url, stop, n)) for n in range(4)]
            for thread in threads:
                thread.start()
            scrapes = []
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                text = httpx.get(url + "/metrics").text
                scrapes.append((time.monotonic() - started, _samples(text)))
                time.sleep(1.0)
            stop.set()
            for thread in threads:
                thread.join()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return scrapes


def _series(
    scrapes: list[tuple[float, dict[Any, float]]], name: str, by: tuple[str, ...]
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(scrapes))
    for i, (_, samples) in enumerate(scrapes):
        for (sample, labels), value in samples.items():
            if sample == name:
                found = dict(labels)
                out[" ".join(found.get(k, "") for k in by) or "all"][i] += value
    return dict(out)


def _rate(values: list[float], times: list[float], window: int = 10) -> list[float]:
    rates = []
    for i in range(len(values)):
        j = max(0, i - window)
        span = times[i] - times[j]
        rates.append((values[i] - values[j]) / span if span > 0 else 0.0)
    return rates


def _quantile(
    scrapes: list[tuple[float, dict[Any, float]]], q: float, window: int = 10
) -> list[float]:
    name = "tts_shim_time_to_first_byte_seconds_bucket"
    result = []
    for i in range(len(scrapes)):
        j = max(0, i - window)
        now: dict[float, float] = defaultdict(float)
        then: dict[float, float] = defaultdict(float)
        for target, k in ((now, i), (then, j)):
            for (sample, labels), value in scrapes[k][1].items():
                if sample == name:
                    target[float(dict(labels)["le"])] += value
        buckets = sorted((le, now[le] - then[le]) for le in now)
        total = buckets[-1][1] if buckets else 0
        answer = float("nan")
        for le, count in buckets:
            if total and count >= q * total:
                answer = le
                break
        result.append(answer)
    return result


def render(scrapes: list[tuple[float, dict[Any, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [t for t, _ in scrapes]
    fig, axes = plt.subplots(4, 2, figsize=(14, 13))
    fig.patch.set_facecolor("#111217")
    plots: list[dict[str, list[float]]] = [
        {
            k: _rate(v, times)
            for k, v in _series(scrapes, "tts_shim_requests_total", ("status",)).items()
        },
        {"p50": _quantile(scrapes, 0.5), "p95": _quantile(scrapes, 0.95)},
        _series(scrapes, "tts_shim_usd_total", ("key",)),
        {
            k: _rate(v, times)
            for k, v in _series(scrapes, "tts_shim_characters_total", ("model",)).items()
        },
        {
            k: _rate(v, times)
            for k, v in _series(
                scrapes, "tts_shim_upstream_calls_total", ("kind", "outcome")
            ).items()
        },
        _series(scrapes, "tts_shim_limited_requests_total", ("key", "code")),
        {
            "slots": _series(scrapes, "tts_shim_slots_in_use", ()).get("all", []),
            "queued": _series(scrapes, "tts_shim_queue_length", ()).get("all", []),
        },
        {
            "hits": _series(scrapes, "tts_shim_cache_hits_total", ()).get(
                "all", [0.0] * len(times)
            ),
            "misses": _series(scrapes, "tts_shim_cache_misses_total", ()).get(
                "all", [0.0] * len(times)
            ),
        },
    ]
    for ax, (title, _unit, _queries), lines in zip(axes.flat, PANELS, plots, strict=True):
        ax.set_facecolor("#181b1f")
        ax.set_title(title, color="#d8d9da", fontsize=10, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.grid(color="#2c3235", linewidth=0.5)
        for label, values in sorted(lines.items()):
            if values:
                ax.plot(times, values, label=label, linewidth=1.4)
        if lines:
            ax.legend(fontsize=7, facecolor="#181b1f", labelcolor="#d8d9da", edgecolor="#2c3235")
        if title.startswith("Cache"):
            ax.text(
                0.5,
                0.5,
                "cache not yet on the request path:\nno look-ups in this run",
                transform=ax.transAxes,
                ha="center",
                color="#8e8e8e",
                fontsize=9,
            )
        ax.set_xlabel("seconds into the run", color="#8e8e8e", fontsize=8)
    fig.suptitle(
        "tts-shim dashboard (facsimile drawn with matplotlib from /metrics scraped during a "
        "real run of tts-shim serve --mock)",
        color="#d8d9da",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90, facecolor=fig.get_facecolor())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="write the dashboard JSON only")
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    (DOCS / "grafana-dashboard.json").write_text(json.dumps(dashboard(), indent=2) + "\n")
    if args.json:
        return
    render(run(args.seconds), DOCS / "dashboard.png")


if __name__ == "__main__":
    main()
