"""Generation latency: the setting's syntax, and the wait the mock takes before replying.

No clock is read: the mock's ``anyio.sleep`` is replaced by a recorder (``sleeps``), so
the tests check the computed wait, not how long anything took.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mockserver import MockConfig, MockConfigError, create_app
from mockserver import cli as cli_module
from mockserver.latency import (
    NO_LATENCY,
    PRESETS,
    GenerationLatency,
    LatencyError,
    parse_latency,
)
from mockserver.scenario import ScenarioError, parse_step

from .conftest import AUTH, ROOT, TEXT, body


@pytest.mark.parametrize(
    ("text", "fixed_ms", "per_char_ms"),
    [
        ("0", 0, 0),
        ("0ms", 0, 0),
        ("250ms", 250, 0),
        ("1.5s", 1500, 0),
        ("2ms/char", 0, 2),
        ("0.3s+4ms/char", 300, 4),
        ("4ms/char + 0.3s", 300, 4),
        ("0.001s/char", 0, 1),
        (" .5S ", 500, 0),
        ("realistic", 300, 4),
        ("Realistic", 300, 4),
    ],
)
def test_syntax(text: str, fixed_ms: float, per_char_ms: float) -> None:
    latency = parse_latency(text)
    assert (latency.fixed_ms, latency.per_char_ms) == pytest.approx((fixed_ms, per_char_ms))


@pytest.mark.parametrize(
    "text",
    ["", "fast", "3", "-1ms", "1min", "4ms/word", "1s+2s", "1ms/char+2ms/char", "1s+", "1e3ms",
     "601s", "2s/char"],
)  # fmt: skip
def test_bad_syntax_says_what_is_accepted(text: str) -> None:
    with pytest.raises(LatencyError, match=r"expected|must be"):
        parse_latency(text)


def test_seconds_for_a_text() -> None:
    latency = parse_latency("0.3s+4ms/char")
    assert latency.seconds(0) == pytest.approx(0.3)
    assert latency.seconds(3000) == pytest.approx(12.3)
    assert NO_LATENCY.seconds(4096) == 0
    assert not NO_LATENCY
    assert latency


@pytest.mark.parametrize("text", ["0", "250ms", "2ms/char", "0.3s+4ms/char", "0.25s+0.5ms/char"])
def test_text_form_round_trips(text: str) -> None:
    latency = parse_latency(text)
    assert parse_latency(str(latency)) == latency


def test_realistic_preset_is_documented_in_the_mock_page() -> None:
    assert PRESETS["realistic"] == GenerationLatency(300, 4)
    page = (Path(__file__).parents[2] / "docs" / "mock.md").read_text()
    assert "--generation-latency" in page
    assert "`realistic`" in page


def test_config_takes_text_or_a_value_and_defaults_to_none() -> None:
    assert MockConfig().generation_latency == NO_LATENCY
    config = MockConfig(generation_latency="0.3s+4ms/char")  # type: ignore[arg-type]
    assert config.generation_latency == GenerationLatency(300, 4)
    assert MockConfig(generation_latency=GenerationLatency(5, 0)).generation_latency.fixed_ms == 5
    hash(config)
    with pytest.raises(MockConfigError, match="generation_latency"):
        MockConfig(generation_latency="slow")  # type: ignore[arg-type]


def test_cli_flag_and_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[MockConfig] = []
    monkeypatch.setattr(
        cli_module.uvicorn, "run", lambda app, **_: captured.append(app.state.config)
    )
    monkeypatch.delenv("TTS_MOCK_GENERATION_LATENCY", raising=False)
    runner = CliRunner()
    assert runner.invoke(cli_module.main, ["--generation-latency", "realistic"]).exit_code == 0
    env = {"TTS_MOCK_GENERATION_LATENCY": "1s+1ms/char"}
    assert runner.invoke(cli_module.main, [], env=env).exit_code == 0
    assert runner.invoke(cli_module.main, []).exit_code == 0
    assert [c.generation_latency for c in captured] == [
        GenerationLatency(300, 4),
        GenerationLatency(1000, 1),
        NO_LATENCY,
    ]
    bad = runner.invoke(cli_module.main, ["--generation-latency", "soon"])
    assert bad.exit_code == 2
    assert "generation_latency" in bad.output
    assert len(captured) == 3


def test_scenario_step_key() -> None:
    step = parse_step({"latency": "2s+1ms/char"})
    assert step.latency == GenerationLatency(2000, 1)
    assert step.to_json() == {"route": "tts", "latency": "2000ms+1ms/char", "times": 1}
    assert parse_step({}).latency is None
    with pytest.raises(ScenarioError, match=r"step\.latency: expected '0'"):
        parse_step({"latency": "later"})
    with pytest.raises(ScenarioError, match=r"step\.latency: expected a string"):
        parse_step({"latency": 5})
    with pytest.raises(ScenarioError, match="apply to route 'tts' only"):
        parse_step({"route": "audio", "latency": "1s"})


# -- the wait, over HTTP in-process ------------------------------------------------------


@pytest.fixture
async def slow_client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(MockConfig(generation_latency="0.3s+4ms/char"))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=ROOT) as client:
        yield client


async def tts(client: httpx.AsyncClient, **overrides: Any) -> httpx.Response:
    return await client.post("/v1/tts", json=body(**overrides), headers=AUTH)


async def test_reply_waits_for_the_computed_generation_time(
    slow_client: httpx.AsyncClient, sleeps: list[float]
) -> None:
    response = await tts(slow_client, text="x" * 3000)
    assert response.status_code == 201
    assert sleeps == [pytest.approx(12.3)]
    await tts(slow_client)
    assert sleeps[1] == pytest.approx(0.3 + 0.004 * len(TEXT))


async def test_binary_replies_wait_too(slow_client: httpx.AsyncClient, sleeps: list[float]) -> None:
    await slow_client.post("/__mock__/scenario", json={"steps": [{"shape": "binary"}]})
    response = await tts(slow_client, text="abcd")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert sleeps == [pytest.approx(0.316)]


async def test_audio_downloads_and_failures_do_not_wait(
    slow_client: httpx.AsyncClient, sleeps: list[float]
) -> None:
    url = (await tts(slow_client, text="a")).json()["audio"]["url"]
    assert len(sleeps) == 1
    assert (await slow_client.get(url)).status_code == 200
    assert (await tts(slow_client, voice="bob")).status_code == 400
    no_key = await slow_client.post("/v1/tts", json=body())
    assert no_key.status_code == 401
    await slow_client.post("/__mock__/scenario", json={"steps": [{"status": 503}]})
    assert (await tts(slow_client)).status_code == 503
    assert len(sleeps) == 1


async def test_step_latency_replaces_the_setting_for_one_reply(
    slow_client: httpx.AsyncClient, sleeps: list[float]
) -> None:
    steps = [{"latency": "1s+10ms/char"}, {"latency": "0"}, {"latency": "5ms", "delay_ms": 200}]
    await slow_client.post("/__mock__/scenario", json={"steps": steps})
    for _ in range(4):
        assert (await tts(slow_client, text="x" * 100)).status_code == 201
    # 1 + 0.01 * 100; nothing; delay_ms then the step's latency; the setting again.
    assert sleeps == pytest.approx([2.0, 0.2, 0.005, 0.7])


async def test_default_is_no_wait(client: httpx.AsyncClient, sleeps: list[float]) -> None:
    assert (await tts(client, text="x" * 4096)).status_code == 201
    assert sleeps == []
