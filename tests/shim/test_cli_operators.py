"""``tts-shim usage`` against a running shim, and the ``--price`` option."""

from __future__ import annotations

import json

import httpx
from click.testing import CliRunner

from shim.cli import _prices, main
from shim.testing import ShimServer


def test_usage_prints_every_keys_days(tts_shim: ShimServer) -> None:
    response = httpx.post(
        tts_shim.url + "/v1/audio/speech",
        json={"model": "tts-1-hd", "input": "Counted."},
        headers={"authorization": "Bearer sk-anything-0001"},
    )
    assert response.status_code == 200

    table = CliRunner().invoke(main, ["usage", "--url", tts_shim.url, "--days", "1"])
    raw = CliRunner().invoke(main, ["usage", "--url", tts_shim.url, "--json"])

    assert table.exit_code == 0, table.output
    assert "anonymous" in table.output
    assert table.output.splitlines()[0].split() == ["day", "key", "requests", "characters", "usd"]
    report = json.loads(raw.output)
    assert len(report["days"]) == 7
    assert report["days"][0]["keys"]["anonymous"]["characters"] >= len("Counted.")


def test_usage_says_when_the_shim_cannot_be_reached() -> None:
    result = CliRunner().invoke(main, ["usage", "--url", "http://127.0.0.1:9"])

    assert result.exit_code == 1
    assert "cannot reach" in result.output


def test_prices_parse_model_equals_usd() -> None:
    assert _prices(("tts-1=0.02,tts-1-hd=0.04", "gpt-4o-mini-tts=0.01")) == {
        "tts-1": 0.02,
        "tts-1-hd": 0.04,
        "gpt-4o-mini-tts": 0.01,
    }
    result = CliRunner().invoke(main, ["serve", "--price", "tts-1=cheap"])
    assert result.exit_code == 2
    assert "expected MODEL=USD" in result.output
