"""The contract suite itself: offline by default, live mode safe without a key, and the
oldest SDK and the live cost stated the same everywhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

from contract_tests.conftest import LIVE_TEXT, OLDEST_SDK, PRICE_PER_1K_CHARACTERS
from shim.testing import ShimServer

ROOT = Path(__file__).resolve().parents[1]


def test_offline_everything_points_at_loopback(
    tts_shim: ShimServer, aimlapi: SimpleNamespace
) -> None:
    assert urlsplit(tts_shim.config.upstream_url).hostname == "127.0.0.1"
    assert urlsplit(aimlapi.url).hostname == "127.0.0.1"
    assert tts_shim.config.upstream_key is None


def test_the_oldest_sdk_is_stated_the_same_everywhere() -> None:
    oldest = ".".join(map(str, OLDEST_SDK))
    assert f'"openai>={oldest}"' in (ROOT / "pyproject.toml").read_text()
    assert f"openai=={oldest}" in (ROOT / "tox.ini").read_text()
    assert f"**openai {oldest}**" in (ROOT / "docs" / "testing.md").read_text()


def test_live_mode_without_a_key_skips_cleanly_and_states_its_cost() -> None:
    # No AI/ML key, and no coverage in the inner run (``patch = subprocess`` would start
    # it): it collects and skips, and the plugin code it reaches runs in every test here.
    dropped = ("AIMLAPI_KEY", "COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "contract_tests", "--live", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    out = result.stdout
    assert result.returncode == 0, out[-3000:]
    assert "--live needs AIMLAPI_KEY, an AI/ML API key, in the environment" in out
    assert re.search(r"\d+ skipped", out)
    assert re.search(r"\d+ deselected", out)
    assert "this run paid for 0 generations" in out
    planned = re.search(r"the collected live cases pay for (\d+) generations", out)
    assert planned is not None, out[-3000:]
    generations = int(planned.group(1))
    characters = generations * len(LIVE_TEXT)
    dollars = characters * PRICE_PER_1K_CHARACTERS / 1000
    docs = (ROOT / "docs" / "testing.md").read_text()
    stated = f"{generations}\ngenerations, {characters} characters per run, about ${dollars:.3f}"
    assert stated in docs or stated.replace("\n", " ") in docs, (
        f"docs/testing.md should state {stated!r}: update it with the live cases"
    )
