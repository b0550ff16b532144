"""The benchmark's bookkeeping, on made-up figures (the timed runs are not tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.loadgen import percentile
from bench.run import merge, summarise_profile


def run(rps: float, cpu: float, p50: float, errors: int = 0) -> dict[str, Any]:
    count = int(rps)
    return {
        "mode": "speech",
        "concurrency": 1,
        "count": count,
        "errors": errors,
        "error_samples": [],
        "elapsed_s": 1.0,
        "rps": rps,
        "bytes_per_request": 18068.0,
        "p50_us": p50,
        "p90_us": p50 * 1.2,
        "p99_us": p50 * 2,
        "cpu_s": {"server": cpu * count / 1e6, "mock": 0.1, "loadgen": 0.05},
        "cpu_us_per_request": {"server": cpu},
    }


def results() -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for c in (1, 32, 64):
        runs[f"trivial c={c}"] = run(20000, 25, 50)
        runs[f"two-step c={c}"] = run(3000, 0, 400)
        runs[f"two-step c={c}"]["cpu_us_per_request"] = {"mock": 280.0}
        runs[f"shim-native c={c}"] = run(1500, 140, 550)
    stream = {
        "mb": 128,
        "transport": "native",
        "ttfb_ms": {"cdn": 1.5, "two-step": 2.0, "shim": 2.8},
        "bytes": 128_000_000,
        "status": 200,
        "read_mb_per_s": 32.0,
        "rss_base_kb": 90_000,
        "rss_peak_kb": 92_000,
        "rss_growth_kb": 2_000,
    }
    return {
        "runs": runs,
        "streams": [stream],
        "profile": {
            "samples": 10,
            "self": [("send (x.py)", 0.5)],
            "inclusive": [("app (y.py)", 0.9)],
            "layers": [("uvicorn", 0.5)],
        },
        "machine": {
            "cpu": "Test CPU",
            "cores": "2",
            "kernel": "6",
            "python": "3.11",
            "packages": "x 1",
            "date": "today",
        },
        "settings": {
            "duration_s": 1.0,
            "rounds": 1,
            "warmup_s": 0.1,
            "transports": ["native"],
            "slow_reader_mb_per_s": 32,
            "quick": True,
            "wall_s": 1.0,
        },
    }


def test_rounds_add_up_cpu_and_requests() -> None:
    merged = merge([run(1000, 100, 500), run(3000, 200, 700), run(2000, 150, 600, errors=1)])
    assert merged["count"] == 6000
    assert merged["errors"] == 1
    assert merged["rps"] == pytest.approx(2000)
    assert merged["p50_us"] == 600  # the median round
    expected = (0.1 + 0.6 + 0.3) / 6000 * 1e6
    assert merged["cpu_us_per_request"]["server"] == pytest.approx(expected)


def test_percentile_of_sorted_latencies() -> None:
    values = [i * 1000 for i in range(101)]  # ns
    assert percentile(values, 0.5) == 50.0  # µs
    assert percentile(values, 0.99) == 99.0


def test_profile_summary_by_function_and_layer(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "main (tts-shim:1);send (uvicorn/protocols/http/httptools_impl.py:5) 3\n"
        "main (tts-shim:1);request (shim/wire.py:9) 1\n"
    )
    summary = summarise_profile(raw)
    assert summary["samples"] == 4
    assert summary["self"][0] == ("send (httptools_impl.py)", 0.75)
    assert summary["layers"][0][1] == 0.75
    assert "uvicorn" in summary["layers"][0][0]


def test_report_states_each_target(tmp_path: Path) -> None:
    text = report.markdown(results())
    assert "| CPU per speech request ≤ 6x the trivial floor | 5.60x at c=32" in text
    assert "p50 at c=1 ≤ 1.5x the two-step call | 1.38x" in text
    assert "peak RSS growth streaming 128 MB < 8 MiB | 2.0 MiB | yes" in text
    assert "Test CPU, 2 cores" in text


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report.chart(results(), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
