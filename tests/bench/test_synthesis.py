"""bench/synthesis.py's bookkeeping (the timed runs are not tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import features, report, synthesis
from mockserver import audio

from .test_features import figures as features_figures

KEYS = ("periods", "render", *synthesis.FORMATS)


def figures(now_ms: float = 1.0, then_ms: float = 2.0) -> dict[str, float]:
    by_version = {"now": now_ms, "then": then_ms}
    return {f"{name}/{key}": ms for name, ms in by_version.items() for key in KEYS}


def settings(same: bool = True) -> dict[str, Any]:
    return {
        "rounds": 7,
        "seconds": 3.0,
        "same": {"samples": same, **dict.fromkeys(synthesis.FORMATS, True)},
        "machine": {"date": "2026-12-01 09:00 UTC", "cpu": "CPU", "cores": "2", "python": "3"},
    }


def test_measure_times_every_part_of_each_version() -> None:
    # One round, the current module standing in for both versions.
    measured = synthesis.measure({"now": audio, "then": audio}, rounds=1, seconds=0.5)

    assert set(measured) == {f"{name}/{key}" for name in ("now", "then") for key in KEYS}
    assert all(ms >= 0 for ms in measured.values())


def test_section_states_the_ratios_and_whether_the_output_is_the_same() -> None:
    text = synthesis.section(figures(), "abc1234", settings())

    assert text.startswith(report.SYNTHESIS_START)
    assert text.rstrip().endswith(report.SYNTHESIS_END)
    assert "| 3 s clip, opus (`encode`, periods made) | 2.0 | 1.0 | 0.50x |" in text
    assert "are identical" in text
    assert "**differs**" in synthesis.section(figures(), "abc1234", settings(same=False))


def test_run_py_rewrite_keeps_the_sections_the_other_scripts_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "markdown", lambda results: "new report\n")
    monkeypatch.setattr(report, "chart", lambda results, path: None)
    path = tmp_path / "benchmarks.md"
    path.write_text("old report\n")
    report.write_section(path, synthesis.section(figures(), "abc1234", settings()))
    report.write_section(path, features.section(features_figures()))
    report.write_section(path, synthesis.section(figures(then_ms=4.0), "abc1234", settings()))

    report.write({}, tmp_path)

    kept = path.read_text()
    assert kept.startswith("new report\n")
    assert "old report" not in kept
    assert kept.count(report.SYNTHESIS_START) == kept.count(report.FEATURES_START) == 1
    assert "0.25x" in kept  # the synthesis section as last written
    assert "0.50x" not in kept
    assert "**11%**" in kept  # the features section
