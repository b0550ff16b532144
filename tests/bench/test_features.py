"""bench/features.py's bookkeeping, on made-up figures (the timed runs are not tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import features


def figures(split_3000_ms: float = 1300.0, generations: int = 1) -> dict[str, Any]:
    cpu = {"server": 700.0, "mock": 500.0, "loadgen": 20.0}
    cache_row = {
        "size": "~1 MB",
        "format": "pcm",
        "bytes": 1_001_616,
        "ttfb_ms": {"hit": 2.0, "miss": 306.0, "two-step": 302.0},
        "cpu_us": {"hit": cpu, "miss": cpu, "two-step": {"mock": 750.0}},
        "requests": {"hit": 4000, "miss": 160, "two-step": 160},
        "ratio": 153.0,
    }
    return {
        "machine": {"date": "2026-12-01 09:00 UTC", "cpu": "CPU", "cores": "2"},
        "settings": {"reps": 3, "cpu_seconds": 3.0, "load_before": [1.0], "load_after": [1.0],
                     "wall_s": 200},
        "cache": [cache_row],
        "single_flight": {"requests": 20, "generations": generations, "ok": 20,
                          "identical": True, "x_cache": {"HIT": 19, "MISS": 1}, "wall_s": 0.5},
        "long_text": [
            {"chars": 3000, "split_ms": split_3000_ms, "unsplit_ms": 12_300.0,
             "ratio": split_3000_ms / 12_300.0},
            {"chars": 20000, "split_ms": 1300.0, "unsplit_ms": None},
        ],
    }  # fmt: skip


@pytest.mark.parametrize("length", [300, 1000, 4096, 20000])
def test_prose_is_exactly_as_long_as_asked_and_has_sentences(length: int) -> None:
    text = features.prose(length)
    assert len(text) == length
    assert text.count(". ") >= length // 200


def test_section_states_each_target() -> None:
    text = features.section(figures())
    assert "| 153x | yes |" in text
    assert "**1 generation** in the mock's journal (one: yes)" in text
    assert "**11%** of the unsplit one (target < 25%: yes)" in text
    assert "| 20,000 | 1.30 s | refused | - |" in text


def test_section_flags_missed_targets() -> None:
    text = features.section(figures(split_3000_ms=4000.0, generations=2))
    assert "**2 generations**" in text
    assert "(one: **no**)" in text
    assert "(target < 25%: **no**)" in text


def test_section_is_replaced_in_place_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nrun.py's report\n")
    features.write_section(path, features.section(figures()))
    features.write_section(path, features.section(figures(split_3000_ms=2000.0)))
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nrun.py's report\n\n<!-- features -->")
    assert text.count("<!-- features -->") == 1
    assert "**16%**" in text
    assert "**11%**" not in text


def test_chart_is_a_png(tmp_path: Path) -> None:
    features.chart(figures(), tmp_path / "long-text.png")
    assert (tmp_path / "long-text.png").read_bytes().startswith(b"\x89PNG")
