"""``python -m mockserver`` / ``tts-shim mock``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mockserver import MockConfig
from mockserver import cli as cli_module
from mockserver.cli import main
from shim.testing import free_port

OPTIONS = {
    "--host": "TTS_MOCK_HOST",
    "--port": "TTS_MOCK_PORT",
    "--api-key": "TTS_MOCK_API_KEYS",
    "--response-shape": "TTS_MOCK_RESPONSE_SHAPE",
    "--cdn-url": "TTS_MOCK_CDN_URL",
    "--journal-size": "TTS_MOCK_JOURNAL_SIZE",
    "--max-steps": "TTS_MOCK_MAX_STEPS",
    "--audio-cache-bytes": "TTS_MOCK_AUDIO_CACHE_BYTES",
    "--log-level": "TTS_MOCK_LOG_LEVEL",
    "--generation-latency": "TTS_MOCK_GENERATION_LATENCY",
}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run the command without a server: capture what it would have served."""
    captured: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        captured.update(kwargs, config=app.state.config)

    monkeypatch.setattr(cli_module.uvicorn, "run", fake_run)
    for env in OPTIONS.values():
        monkeypatch.delenv(env, raising=False)
    return captured


def test_help_lists_every_option_with_its_environment_variable() -> None:
    result = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for option, env in OPTIONS.items():
        assert option in result.output
        assert env in result.output
    assert "url-object" in result.output
    assert "metadata-only" in result.output


def test_defaults(served: dict[str, Any]) -> None:
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 0, result.output
    assert served["config"] == MockConfig()
    assert (served["host"], served["port"], served["log_level"]) == ("127.0.0.1", 8100, "info")


def test_flags(served: dict[str, Any]) -> None:
    args = [
        "--host", "0.0.0.0",
        "--port", "9000",
        "--api-key", "one",
        "--api-key", "two",
        "--response-shape", "binary",
        "--cdn-url", "http://localhost:9000",
        "--journal-size", "5",
        "--max-steps", "6",
        "--audio-cache-bytes", "0",
        "--log-level", "DEBUG",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert served["config"] == MockConfig(
        host="0.0.0.0",
        port=9000,
        api_keys=("one", "two"),
        response_shape="binary",
        cdn_url="http://localhost:9000",
        journal_size=5,
        max_steps=6,
        audio_cache_bytes=0,
        log_level="debug",
    )
    assert served["log_level"] == "debug"


def test_environment_variables(served: dict[str, Any]) -> None:
    env = {
        "TTS_MOCK_PORT": "9100",
        "TTS_MOCK_API_KEYS": "alpha beta",
        "TTS_MOCK_RESPONSE_SHAPE": "url-string",
        "TTS_MOCK_JOURNAL_SIZE": "7",
    }
    result = CliRunner().invoke(main, [], env=env)
    assert result.exit_code == 0, result.output
    config = served["config"]
    assert (config.port, config.api_keys) == (9100, ("alpha", "beta"))
    assert (config.response_shape, config.journal_size) == ("url-string", 7)


@pytest.mark.parametrize(
    "args",
    [
        ["--response-shape", "xml"],
        ["--port", "70000"],
        ["--journal-size", "-1"],
        ["--cdn-url", "ftp://x"],
        ["--api-key", ""],
    ],
)
def test_bad_values_are_usage_errors(served: dict[str, Any], args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert served == {}


def test_python_dash_m_serves() -> None:
    port = free_port()
    env = {**os.environ, "TTS_MOCK_PORT": str(port), "TTS_MOCK_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mockserver", "--api-key", "secret-key"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/__mock__/requests", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the mock did not start"
                time.sleep(0.05)
        payload = {"model": "openai/tts-1", "text": "Hi"}
        wrong = httpx.post(url + "/v1/tts", json=payload, headers={"Authorization": "Bearer x"})
        right = httpx.post(
            url + "/v1/tts", json=payload, headers={"Authorization": "Bearer secret-key"}
        )
        assert (wrong.status_code, right.status_code) == (401, 201)
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode is not None
