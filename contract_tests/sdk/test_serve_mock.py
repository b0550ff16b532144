"""``tts-shim serve --mock``: a new user's first run, as a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import openai
import pytest

from contract_tests.conftest import decode
from shim.testing import free_port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on port {port} within {limit} s")


@pytest.fixture
def served() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIMLAPI_", "TTS_SHIM_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shim", "serve", "--mock", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_serve_mock_speaks_with_no_key_and_exits_cleanly(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = served
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)

    audio = client.audio.speech.create(
        model="tts-1-hd", voice="coral", input="Hello from the mock.", response_format="mp3"
    ).content

    codec, rate, seconds = decode(audio, "mp3")
    assert codec.startswith("mp3")
    assert rate == 24_000
    assert seconds > 0.5
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert proc.stdout is not None
    log = proc.stdout.read().decode()
    assert "unused" not in log  # the client's key is never logged
