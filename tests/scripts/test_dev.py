"""``python3 scripts/dev.py serve``: the quick start, as a newcomer runs it.

It runs the real script in a subprocess (the first run installs ``.venv-serve``, so the
timeouts are generous), reads the shim's start-up line, calls the address it names,
stops it with SIGTERM, and checks what its environment holds.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shim.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVE_ENV = ROOT / ".venv-serve"
#: The first run creates .venv-serve and pip-installs the package into it.
START_LIMIT = 420.0
LISTENING = re.compile(r"tts-shim listening on (http://\S+) \(upstream: (\S+?)(,[^)]*)?\)")
#: Development tools that have no place in a serving environment.
DEV_TOOLS = {"pytest", "ruff", "mypy", "hypothesis", "schemathesis", "openai", "matplotlib"}


def _lines(stream: Iterator[bytes], into: queue.Queue[str]) -> None:
    for raw in stream:
        into.put(raw.decode("utf-8", "replace").rstrip("\n"))


def _message(line: str) -> str:
    """The log line's text: JSON lines (the default format) or plain ones."""
    if line.startswith("{"):
        try:
            return str(json.loads(line).get("message", ""))
        except ValueError:
            return line
    return line


Started = tuple[subprocess.Popen[bytes], queue.Queue[str], list[str]]


@pytest.fixture
def dev_serve() -> Iterator[Callable[..., Started]]:
    """``dev_serve(*args)``: ``python3 scripts/dev.py serve ARGS`` started; its process,
    its output lines as they come, and a list to keep the ones read."""

    def start(*args: str) -> Started:
        python = shutil.which("python3") or sys.executable
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIMLAPI_", "TTS_SHIM_", "PYTHON", "VIRTUAL_ENV"))
        }
        env["TTS_SHIM_CACHE"] = "false"  # every request reaches the mock; nothing is kept
        proc = subprocess.Popen(
            [python, "scripts/dev.py", "serve", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(proc)
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        return proc, lines, []

    started: list[subprocess.Popen[bytes]] = []
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _wait_for_listening(lines: queue.Queue[str], seen: list[str]) -> re.Match[str]:
    while True:
        try:
            line = lines.get(timeout=START_LIMIT)
        except queue.Empty:
            raise AssertionError("no listening line:\n" + "\n".join(seen)) from None
        seen.append(line)
        found = LISTENING.search(_message(line))
        if found:
            return found


def test_dev_serve_passes_its_arguments_and_names_its_address(
    dev_serve: Callable[..., Started],
) -> None:
    port, mock_port = free_port(), free_port()
    proc, lines, seen = dev_serve("--port", str(port), "--mock-port", str(mock_port))

    found = _wait_for_listening(lines, seen)

    assert found.group(1) == f"http://127.0.0.1:{port}"
    assert found.group(2) == f"http://127.0.0.1:{mock_port}"
    assert "mock" in (found.group(3) or "")
    with httpx.Client(base_url=found.group(1), timeout=30) as client:
        speech = client.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "voice": "coral", "input": "Quick start."},
            headers={"authorization": "Bearer anything"},
        )
        assert speech.status_code == 200
        assert speech.headers["content-type"] == "audio/mpeg"
    # The embedded mock is on the port asked for, and it made that generation.
    journal = httpx.get(f"http://127.0.0.1:{mock_port}/__mock__/requests").json()["requests"]
    assert [e["route"] for e in journal] == ["tts", "audio"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_the_serving_environment_holds_no_test_or_lint_tools(
    dev_serve: Callable[..., Started],
) -> None:
    # Started once, so .venv-serve exists whichever test runs first.
    proc, lines, seen = dev_serve("--port", str(free_port()))
    _wait_for_listening(lines, seen)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0

    listing = subprocess.run(
        [
            str(SERVE_ENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m;"
            "print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = set(listing.stdout.split())
    assert {"tts-shim", "uvicorn", "av"} <= installed
    assert installed.isdisjoint(DEV_TOOLS), installed & DEV_TOOLS
