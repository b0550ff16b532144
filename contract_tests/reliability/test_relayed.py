"""What the shim relays from upstream, on real sockets: headers it cannot trust, and
replies that are not audio (the trust issue's "Keys" and "audio checks")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from shim.testing import MockUpstream, ShimServer

KEY = "sk-relayed-client-key-0001"
BODY = {"model": "tts-1", "input": "Relayed."}


def _speak(shim: ShimServer, **fields: Any) -> httpx.Response:
    return httpx.post(
        shim.base_url + "/audio/speech",
        json={**BODY, **fields},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
        verify=LOOPBACK_TLS,
    )


@pytest.mark.parametrize(
    ("sent", "seconds", "ms"),
    [("2.500", "3", "2500"), ("inf", None, None), ("9" * 301, None, None), ("86400", "3600", None)],
)
def test_retry_after_from_upstream_is_whole_capped_seconds(
    tts_shim_factory: Callable[..., ShimServer],
    tts_mock: MockUpstream,
    sent: str,
    seconds: str | None,
    ms: str | None,
) -> None:
    shim = tts_shim_factory(tts_retries=0)
    tts_mock.scenario([{"status": 429, "headers": {"retry-after": sent}}])

    response = _speak(shim)

    assert response.status_code == 429
    assert response.headers.get("retry-after") == seconds
    if ms is not None:
        assert response.headers["retry-after-ms"] == ms
    assert len(tts_mock.requests) == 1


def test_an_upstream_that_echoes_the_key_as_request_id_does_not_leak_it(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream
) -> None:
    shim = tts_shim_factory()
    tts_mock.scenario([{"headers": {"x-request-id": KEY}}])

    response = _speak(shim)

    assert response.status_code == 200
    assert KEY not in str(response.headers.raw)
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("fmt", "step"),
    [
        (
            "pcm",
            {"body": "<html><body>Sign in</body></html>", "headers": {"content-type": "text/html"}},
        ),
        ("mp3", {"body": "ID3"}),
    ],
    ids=["html-as-pcm", "three-byte-id3"],
)
def test_what_is_not_audio_is_a_502_paid_once(
    tts_shim_factory: Callable[..., ShimServer],
    tts_mock: MockUpstream,
    fmt: str,
    step: dict[str, Any],
) -> None:
    shim = tts_shim_factory(audio_retries=1)
    tts_mock.scenario([{"route": "audio", "status": 200, "times": 2, **step}])

    response = _speak(shim, response_format=fmt)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "bad_upstream_audio"
    assert response.headers["x-should-retry"] == "false"
    assert len(tts_mock.requests) == 1  # one generation
