"""The benchmark's bookkeeping, on made-up figures (the timed runs are not tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import peer, report
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


def results(with_peer: bool = True) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for c in (1, 16, 64):
        runs[f"trivial c={c}"] = run(20000, 25, 50)
        runs[f"two-step c={c}"] = run(3000, 0, 400)
        runs[f"two-step c={c}"]["cpu_us_per_request"] = {"mock": 280.0}
        runs[f"shim c={c}"] = run(1500, 140, 550)
        runs[f"shim c={c}"]["cpu_us_per_request"]["mock"] = 300.0
    runs["shim c=64"]["rps"] = 1350.0  # 90% of c=16's
    if with_peer:
        runs["litellm c=16"] = run(150, 1260, 90_000)
        runs["litellm c=16"]["cpu_us_per_request"]["upstream"] = 60.0
    stream = {
        "mb": 128,
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
            "layers": [
                ("uvicorn: HTTP parsing", 0.3),
                ("aiohttp: the upstream connections", 0.25),
                ("aiohttp: writing upstream requests", 0.1),
                ("tenacity", 0.05),
            ],
        },
        "peer": {"name": "litellm", "version": "1.0", "packages": ["litellm[proxy]"]}
        if with_peer
        else None,
        "load": [1.5, 2.5, 2.0],
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
            "concurrency": [1, 16, 64],
            "peer_concurrency": 16,
            "peer": "litellm" if with_peer else None,
            "load_before": [1.25, 1.0, 1.0],
            "load_after": [2.25, 1.75, 1.5],
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
        "main (tts-shim:1);_request (aiohttp/client.py:9) 1\n"
    )
    summary = summarise_profile(raw)
    assert summary["samples"] == 4
    assert summary["self"][0] == ("send (httptools_impl.py)", 0.75)
    assert summary["layers"][0][1] == 0.75
    assert "uvicorn" in summary["layers"][0][0]
    assert summary["layers"][1] == ("aiohttp: the upstream connections, requests and replies", 0.25)


def test_report_states_each_target(tmp_path: Path) -> None:
    text = report.markdown(results())
    assert "| CPU per speech request ≤ 6x the trivial floor | 5.60x at c=16" in text
    assert "p50 at c=1 ≤ 1.5x the two-step call | 1.38x" in text
    assert "peak RSS growth streaming 128 MB < 8 MiB | 2.0 MiB | yes" in text
    assert "p99 1.10 ms (p50 0.55 ms); 1350 req/s, 90% of c=16's 1500 | yes |" in text
    assert "Test CPU, 2 cores" in text


def test_report_flags_a_collapse_at_c64() -> None:
    collapsed = results()
    collapsed["runs"]["shim c=64"]["rps"] = 150.0  # what httpx's own transport did
    text = report.markdown(collapsed)
    assert "150 req/s, 10% of c=16's 1500 | **no** |" in text
    assert "req/s fell to 10% of c=16's" in text


def test_report_states_the_peer_ratio_from_the_same_run() -> None:
    text = report.markdown(results())
    assert (
        "| at least 4x less CPU per speech request than the LiteLLM proxy, c=16, same run "
        "| 9.00x (LiteLLM proxy 1,260 µs, shim 140 µs) | yes |"
    ) in text
    assert "| LiteLLM proxy | 1,260 | 9.00x | 150 | 0 | 90.00 | 180.00 | 60 " in text
    assert "1.25 before the run, 1.50-2.50 during it (median 2.00), 2.25 after" in text


def test_report_without_a_peer_says_it_was_not_measured() -> None:
    text = report.markdown(results(with_peer=False))
    assert "not measured in this run (`--peer litellm`)" in text
    assert "## The peer" not in text


def test_profile_reading_turns_shares_into_microseconds() -> None:
    text = report.markdown(results())
    # 140 µs a request: the aiohttp layers hold 35% of it, the writes 10%, tenacity 5%.
    assert "**The upstream client** (35%, ~49 µs)" in text
    assert "socket writes included,\n  10%, ~14 µs." in text
    assert "`bench/micro.py`) (5%, ~7 µs); **the access log line**\n  (0%, ~0 µs)" in text


def test_peer_config_routes_the_speech_model_to_the_given_endpoint(tmp_path: Path) -> None:
    written = json.loads(peer.write_config(tmp_path, "http://127.0.0.1:9").read_text())
    (model,) = written["model_list"]
    assert model["model_name"] == "tts-1"
    assert model["litellm_params"]["model"] == "openai/tts-1"
    assert model["litellm_params"]["api_base"] == "http://127.0.0.1:9/v1"
    assert written["general_settings"]["master_key"] == peer.MASTER_KEY
    command = peer.command(Path("/venv/bin/litellm"), tmp_path / "config.yaml")
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "{port}" in command


def test_peer_install_is_skipped_when_the_proxy_is_there(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "litellm").touch()
    assert peer.ensure_installed(tmp_path) == tmp_path / "bin" / "litellm"


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report.chart(results(), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
