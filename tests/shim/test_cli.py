from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shim.cache import AudioStore, DiskAudioStore, RedisAudioStore, connect
from shim.cli import main, settings_page
from tests.redis_server import RedisServer


def test_serve_help_names_every_environment_variable() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])

    assert result.exit_code == 0
    for variable in (
        "TTS_SHIM_HOST",
        "TTS_SHIM_PORT",
        "AIMLAPI_BASE_URL",
        "AIMLAPI_KEY",
        "TTS_SHIM_API_KEYS",
        "TTS_SHIM_AUDIO_ORIGINS",
        "TTS_SHIM_ALLOW_OPEN",
        "TTS_SHIM_MOCK",
        "TTS_SHIM_TTS_RETRIES",
        "TTS_SHIM_DEADLINE",
    ):
        assert variable in result.output


def test_exposed_server_key_is_refused_at_start_up() -> None:
    result = CliRunner().invoke(
        main, ["serve", "--host", "0.0.0.0"], env={"AIMLAPI_KEY": "secret-server-key"}
    )

    assert result.exit_code == 2
    assert "--allow-open" in result.output
    assert "secret-server-key" not in result.output


def test_mock_subcommand_is_registered() -> None:
    result = CliRunner().invoke(main, ["mock", "--help"])

    assert result.exit_code == 0
    assert "--port" in result.output


def test_serve_help_names_the_cache_options() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])

    assert result.exit_code == 0
    for text in (
        "--no-cache",
        "--cache-dir",
        "--cache-max-bytes",
        "--cache-ttl",
        "--redis-url",
        "TTS_SHIM_REDIS_URL",
        "TTS_SHIM_CACHE_DIR",
    ):
        assert text in result.output


def test_cache_stats_and_clear_on_the_embedded_cache(tmp_path: Path) -> None:
    asyncio.run(_fill(DiskAudioStore(tmp_path, max_bytes=10**8, ttl=60)))
    runner = CliRunner()

    stats = runner.invoke(main, ["cache", "stats", "--cache-dir", str(tmp_path)])
    refused = runner.invoke(main, ["cache", "clear", "--cache-dir", str(tmp_path)], input="n\n")
    cleared = runner.invoke(
        main, ["cache", "clear", "--yes"], env={"TTS_SHIM_CACHE_DIR": str(tmp_path)}
    )
    after = runner.invoke(main, ["cache", "stats", "--cache-dir", str(tmp_path)])

    assert stats.exit_code == 0
    assert "entries: 2" in stats.output
    assert refused.exit_code == 1
    assert cleared.exit_code == 0
    assert "removed 2 entries" in cleared.output
    assert "entries: 0" in after.output


def test_cache_stats_and_clear_on_redis() -> None:
    with RedisServer() as server:
        store = RedisAudioStore(connect(server.url), ttl=60)
        asyncio.run(_fill(store))
        runner = CliRunner()
        env = {"TTS_SHIM_REDIS_URL": server.url}

        stats = runner.invoke(main, ["cache", "stats"], env=env)
        cleared = runner.invoke(main, ["cache", "clear", "--yes"], env=env)
        after = runner.invoke(main, ["cache", "stats"], env=env)
        server.stop()
        down = runner.invoke(main, ["cache", "stats"], env=env)

    assert stats.exit_code == 0
    assert "entries: 2\nbytes: 3000" in stats.output
    assert "removed 2 entries" in cleared.output
    assert "entries: 0" in after.output
    assert down.exit_code == 1
    assert "Redis" in down.output


async def _fill(store: AudioStore) -> None:
    for digest, size in (("a" * 64, 1000), ("b" * 64, 2000)):
        async with store.writer(digest) as writer:
            await writer.write(b"x" * size)
            assert await writer.commit()
    await store.aclose()


def _serve_arguments(monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    """What ``tts-shim serve ARGS`` would run the server with (the server is not run)."""
    import shim.server

    seen: dict[str, Any] = {}

    def run(config: Any, *, mock: bool = False, mock_port: int = 0) -> None:
        seen.update(config=config, mock=mock, mock_port=mock_port)

    monkeypatch.setattr(shim.server, "run", run)
    for name in ("TTS_SHIM_MOCK", "TTS_SHIM_MOCK_PORT", "TTS_SHIM_PRIVATE_CATALOG"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 0, result.output
    return seen


def test_the_last_mock_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    # dev.py serve runs `tts-shim serve --mock ARGS`, so ARGS can turn the mock off.
    assert _serve_arguments(monkeypatch, "--mock", "--no-mock")["mock"] is False
    assert _serve_arguments(monkeypatch, "--mock", "--mock-port", "8100")["mock_port"] == 8100


def test_private_catalog_reaches_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _serve_arguments(monkeypatch)["config"].private_catalog is False
    assert _serve_arguments(monkeypatch, "--private-catalog")["config"].private_catalog is True


def test_keep_alive_timeout_reaches_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _serve_arguments(monkeypatch)["config"].keep_alive_timeout == 30.0
    given = _serve_arguments(monkeypatch, "--keep-alive-timeout", "12.5")
    assert given["config"].keep_alive_timeout == 12.5


def test_the_committed_settings_page_is_generated_from_serve() -> None:
    page = Path(__file__).parents[2] / "docs" / "settings.md"

    assert page.read_text() == settings_page(), "run: python scripts/settings_page.py"


def test_help_and_settings_page_list_the_same_flags_once_each() -> None:
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    page_flags = re.findall(r"`(--[a-z-]+)`", settings_page())
    help_flags = {flag for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", help_text)}

    assert len(page_flags) == len(set(page_flags))
    assert set(page_flags) == help_flags - {"--help"}
    assert {"--cache-dir", "--no-cache", "--mock", "--no-mock", "--tts-retries"} <= set(page_flags)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--tts-retries", "6"], "tts_retries"),
        (["--deadline", "0"], "deadline"),
        (["--mock-port", "70000"], "mock_port"),
    ],
)
def test_out_of_range_settings_are_usage_errors(
    monkeypatch: pytest.MonkeyPatch, args: list[str], named: str
) -> None:
    import shim.server

    def run(*_: Any, **__: Any) -> None:
        raise AssertionError("served with a bad setting")

    monkeypatch.setattr(shim.server, "run", run)
    result = CliRunner().invoke(main, ["serve", *args])

    assert result.exit_code == 2
    assert named in result.output
    assert "Traceback" not in result.output
