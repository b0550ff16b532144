from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from shim.cache import AudioStore, DiskAudioStore, RedisAudioStore, connect
from shim.cli import main
from shim.testing import decode_audio
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


# -- start-up with a cache directory that cannot be used (real `tts-shim serve`) -------

#: The line ``serve`` logs once it answers.
_LISTENING = re.compile(r"tts-shim listening on (http://\S+) ")


def _serve_env(**variables: str) -> dict[str, str]:
    """The environment of a ``tts-shim serve`` subprocess: none of the shim's settings
    from this one, ``variables`` on top (this worktree's code stays on the path)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIMLAPI_", "TTS_SHIM_")) and name != "XDG_CACHE_HOME"
    }
    return {**env, **variables}


def _unmakeable(tmp_path: Path) -> Path:
    """A regular file: nothing can be created under it, not even by root (for whom
    permission bits stop no write)."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    return blocker


@pytest.mark.parametrize(
    ("args", "variables"),
    [
        (["--cache-dir", "{blocker}/sub"], {}),
        (["--mock"], {"TTS_SHIM_CACHE_DIR": "{blocker}"}),  # the directory is a file
    ],
)
def test_a_given_cache_directory_that_cannot_be_used_is_one_line_and_an_exit(
    tmp_path: Path, args: list[str], variables: dict[str, str]
) -> None:
    blocker = _unmakeable(tmp_path)
    args = [arg.format(blocker=blocker) for arg in args]
    variables = {name: value.format(blocker=blocker) for name, value in variables.items()}
    directory = args[-1] if "--cache-dir" in args else variables["TTS_SHIM_CACHE_DIR"]

    result = subprocess.run(
        [sys.executable, "-m", "shim", "serve", "--port", "0", *args],
        env=_serve_env(**variables),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot use the cache directory {directory}: ")
    assert "Traceback" not in result.stderr
    assert "Unclosed" not in result.stderr
    assert result.stdout == ""


def _read_lines(stream: Any, into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)  # the process closed it: it has ended


@pytest.mark.parametrize("variable", ["HOME", "XDG_CACHE_HOME"])
def test_an_unusable_default_cache_directory_warns_and_the_shim_serves_uncached(
    tmp_path: Path, variable: str
) -> None:
    blocker = _unmakeable(tmp_path)  # the home (or cache home) is a file: nothing under it
    process = subprocess.Popen(
        [sys.executable, "-m", "shim", "serve", "--mock", "--port", "0", "--log-format", "text"],
        env=_serve_env(**{variable: str(blocker)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while not (found := _LISTENING.search(seen[-1] if seen else "")):
            line = lines.get(timeout=60)
            assert line is not None, "the shim ended before it listened:\n" + "\n".join(seen)
            seen.append(line)
        response = httpx.post(
            found.group(1) + "/v1/audio/speech",
            json={"model": "tts-1", "voice": "alloy", "input": "Served without a cache."},
            timeout=30,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        reader.join(timeout=10)

    assert response.status_code == 200
    assert response.headers["x-cache"] == "BYPASS"
    assert decode_audio(response.content, "mp3").seconds > 0.5
    assert process.returncode == 0
    while (line := lines.get_nowait()) is not None:
        seen.append(line)
    warnings = [line for line in seen if "cannot use the cache directory" in line]
    assert len(warnings) == 1
    assert str(blocker) in warnings[0]
    assert "without a cache" in warnings[0]
    assert not [line for line in seen if "Traceback" in line or "Unclosed" in line]


def test_a_port_already_taken_is_one_line_and_an_exit() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "shim", "serve", "--mock", "--port", str(port), "--no-cache"],
            env=_serve_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("key", "kind"),
    [('"            "', "a space"), ('"sk-shim-bad-0002\\n"', "a line break")],
)
def test_a_keys_file_key_no_client_could_send_stops_start_up_naming_its_line(
    tmp_path: Path, key: str, kind: str
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[keys.ok]\nkey = "sk-shim-good-0001"\n\n[keys.broken]\nusd_per_day = 1.0\nkey = {key}\n'
    )

    result = subprocess.run(
        [sys.executable, "-m", "shim", "serve", "--port", "0", "--keys-file", str(keys)],
        env=_serve_env(AIMLAPI_KEY="sk-server-key-0001", TTS_SHIM_CACHE="false"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: {keys} line 6: keys.broken.key: the key has {kind}")
    assert "Traceback" not in result.stderr
    assert "sk-shim-bad" not in result.stderr
