"""Keys never appear in logs, error bodies, health output or the CDN request.

Known keys (client keys, the server key, a pass-through token) go through success
and every error path; everything that comes out (each response's headers and body,
the whole log, the mock's record of what reached the CDN) is searched for them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import ServeProcess
from shim.logs import JSONFormatter
from shim.testing import MockUpstream, ShimServer
from tests.figures import record

SERVER_KEY = "sk-server-REDACTME-5f2c9a71"
CLIENT_KEYS = ("ck-client-REDACTME-0a1b2c3d", "ck-client-REDACTME-9e8d7c6b")
PASS_TOKEN = "sk-pass-REDACTME-77aa88bb"
WRONG_KEY = "ck-wrong-REDACTME-13572468"
SECRETS = (SERVER_KEY, *CLIENT_KEYS, PASS_TOKEN, WRONG_KEY)

SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Secrets stay secret."}
CHAT = {"model": "tts-1", "messages": [{"role": "user", "content": "Secrets stay secret."}]}

#: (scenario steps, method, path, body) for each path through the shim.
EXCHANGES: list[tuple[list[dict[str, Any]], str, str, Any]] = [
    ([], "POST", "/v1/audio/speech", SPEECH),
    ([], "POST", "/v1/audio/speech", {**SPEECH, "stream_format": "sse"}),
    ([], "POST", "/v1/audio/speech", {**SPEECH, "response_format": "flac"}),
    ([], "POST", "/v1/chat/completions", CHAT),
    ([], "POST", "/v1/chat/completions", {**CHAT, "stream": True}),
    ([], "GET", "/v1/models", None),
    ([], "GET", "/v1/models/openai/tts-1-hd", None),
    ([], "GET", "/v1/models/nope", None),
    ([], "GET", "/v1/audio/voices", None),
    ([], "GET", "/v1/audio/models", None),
    ([], "POST", "/v1/audio/speech", {"model": "tts-1"}),
    ([], "POST", "/v1/audio/speech", "not json"),
    ([], "POST", "/v1/audio/speech", {"model": "tts-1", "input": "x" * 2_000_000}),
    ([], "DELETE", "/v1/models", None),
    ([], "GET", "/nowhere", None),
    ([{"status": 401, "message": "Invalid key {key}"}], "POST", "/v1/audio/speech", SPEECH),
    ([{"status": 403, "message": "key {key} has no credits"}], "POST", "/v1/audio/speech", SPEECH),
    ([{"status": 500, "times": 2}], "POST", "/v1/audio/speech", SPEECH),
    ([{"fault": "reset", "times": 2}], "POST", "/v1/audio/speech", SPEECH),
    ([{"fault": "garbage", "times": 2}], "POST", "/v1/audio/speech", SPEECH),
    ([{"fault": "truncated", "times": 2}], "POST", "/v1/audio/speech", SPEECH),
    ([{"route": "audio", "fault": "truncated"}], "POST", "/v1/audio/speech", SPEECH),
    (
        [{"route": "audio", "fault": "truncated"}],
        "POST",
        "/v1/chat/completions",
        {**CHAT, "stream": True},
    ),
    ([{"route": "audio", "fault": "reset", "times": 3}], "POST", "/v1/audio/speech", SPEECH),
    ([{"route": "audio", "status": 404}], "POST", "/v1/audio/speech", SPEECH),
    ([{"audio_url": "http://203.0.113.7/a.mp3"}], "POST", "/v1/audio/speech", SPEECH),
    ([], "GET", "/healthz", None),
    ([], "GET", "/readyz", None),
    ([], "GET", "/openapi.json", None),
]


def _exchange(
    base: str,
    push: Callable[[list[dict[str, Any]]], None],
    key: str,
    exchanges: list[tuple[list[dict[str, Any]], str, str, Any]],
    *,
    token: str,
) -> list[str]:
    """Run every exchange with ``token`` as the bearer; return all that came back."""
    seen: list[str] = []
    with httpx.Client(base_url=base, timeout=20, verify=LOOPBACK_TLS) as client:
        for steps, method, path, body in exchanges:
            push([_fill(step, key) for step in steps])
            content = body if isinstance(body, str) else json.dumps(body) if body else None
            with client.stream(
                method,
                path,
                params={"debug_key": token},  # a key in the query string is not logged
                content=content,
                headers={"authorization": f"Bearer {token}"},
            ) as response:
                parts: list[bytes] = []
                with contextlib.suppress(httpx.HTTPError):  # a cut transfer: keep what came
                    parts.extend(response.iter_raw())
                seen.append(f"{response.status_code} {response.headers!r} {b''.join(parts)!r}")
    return seen


def _fill(step: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v.format(key=key) if isinstance(v, str) else v for k, v in step.items()}


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_a_real_process_never_writes_a_key(serve_process: Callable[..., ServeProcess]) -> None:
    served = serve_process(
        "--mock",
        "--log-level",
        "debug",
        "--tts-retries",
        "1",
        env={"AIMLAPI_KEY": SERVER_KEY, "TTS_SHIM_API_KEYS": ",".join(CLIENT_KEYS)},
    )
    seen: list[str] = []
    for token in (*CLIENT_KEYS, WRONG_KEY):
        seen += _exchange(served.url, served.scenario, SERVER_KEY, EXCHANGES, token=token)
    journal = served.mock_journal()
    served.terminate()
    assert served.proc.wait(20) == 0
    log = served.log

    assert any(s.startswith("200 ") for s in seen)
    assert any(s.startswith("401 ") for s in seen)
    assert sum(line["logger"] == "tts_shim.access" for line in served.log_lines()) >= len(seen)
    for line in log.splitlines():
        json.loads(line)  # one JSON object a line, nothing else
    assert _leaks(log) == []
    assert _leaks("\n".join(seen)) == []
    downloads = [entry for entry in journal if entry["route"] == "audio"]
    assert downloads
    assert all("authorization" not in entry["headers"] for entry in downloads)
    assert _leaks(json.dumps(downloads)) == []
    record(
        "redaction_process",
        exchanges=len(seen),
        log_lines=len(log.splitlines()),
        secrets_searched=len(SECRETS),
        leaks=0,
    )


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    """Everything logged in this process, formatted by the shim's JSON formatter with no
    keys to scrub: what the code writes, not what scrubbing would hide."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JSONFormatter())
    test_thread = threading.current_thread().name

    def from_the_shim(record: logging.LogRecord) -> bool:
        # Left out: this test's own httpx client, which logs the URLs it requests, query
        # included; and the mock upstream, which logs the steps this test gives it.
        if record.name.startswith("mockserver"):
            return False
        return not (
            record.threadName == test_thread and record.name.startswith(("httpx", "httpcore"))
        )

    handler.addFilter(from_the_shim)
    root = logging.getLogger()
    names = ("tts_shim", "uvicorn", "uvicorn.error", "httpx", "httpcore", "aiohttp")
    levels = {name: logging.getLogger(name).level for name in names}
    old_root = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_root)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("keys", ["pass-through", "server-and-client-keys"])
def test_in_process_nothing_logs_a_key_even_unscrubbed(
    tts_mock: MockUpstream,
    tts_shim_factory: Callable[..., ShimServer],
    captured_log: io.StringIO,
    keys: str,
) -> None:
    if keys == "pass-through":
        shim = tts_shim_factory(tts_retries=1, max_retry_wait=0.01)
        tokens, upstream_key = [PASS_TOKEN], PASS_TOKEN
    else:
        shim = tts_shim_factory(
            tts_retries=1, max_retry_wait=0.01, upstream_key=SERVER_KEY, client_keys=CLIENT_KEYS
        )
        tokens, upstream_key = [*CLIENT_KEYS, WRONG_KEY], SERVER_KEY

    seen: list[str] = []
    for token in tokens:
        seen += _exchange(shim.url, tts_mock.scenario, upstream_key, EXCHANGES, token=token)

    log = captured_log.getvalue()
    assert "tts_shim.access" in log
    assert _leaks(log) == []
    assert _leaks("\n".join(seen)) == []
    downloads = [entry for entry in tts_mock.journal if entry["route"] == "audio"]
    assert downloads
    assert all("authorization" not in entry["headers"] for entry in downloads)
    record(f"redaction_{keys}", exchanges=len(seen), log_lines=len(log.splitlines()), leaks=0)
