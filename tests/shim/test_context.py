"""One context per request (shim/context.py): the gate, the handlers and the data path
write on it, the access log, the metrics and the billing read it, whatever order the
middleware run in."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from shim.logs import ACCESS_LOGGER
from shim.prices import Prices
from shim.testing import MockUpstream
from tests.shim.conftest import CLIENT_TOKEN, _RunningApp, generations, parse, total

KEYS = f"""\
[keys.app]
key = "{CLIENT_TOKEN}"
usd_per_day = 0.0005
"""
SPEECH = {"model": "tts-1", "input": "Twelve chars"}  # $0.00018 at $0.015 per 1K


@pytest.mark.parametrize("order", ["as built", "reversed"])
async def test_billing_metrics_and_the_access_log_do_not_depend_on_middleware_order(
    shim: Any, upstream: MockUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture, order: str
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    keys = tmp_path / "keys.toml"
    keys.write_text(KEYS)
    client = shim(keys_file=str(keys))
    transport = client._transport
    assert isinstance(transport, _RunningApp)
    if order == "reversed":  # before the first request: the stack is built then
        transport.shim_app.user_middleware.reverse()

    answers = [await client.post("/v1/audio/speech", json=SPEECH) for _ in range(3)]
    statuses = [answer.status_code for answer in answers]

    # $0.00018 each against $0.0005 a day: two fit, the third is refused by the bill.
    assert statuses == [200, 200, 429]
    assert generations(upstream) == 2
    usage = (await client.get("/v1/usage")).json()
    assert usage["key"] == "app"
    assert usage["day"]["characters"] == 24
    assert usage["day"]["usd"] == pytest.approx(Prices().usd("tts-1", 24))
    samples = parse((await client.get("/metrics")).text)
    assert total(samples, "tts_shim_usd_total", key="app") == pytest.approx(
        Prices().usd("tts-1", 24)
    )
    assert total(samples, "tts_shim_limited_requests_total", key="app") == 1
    assert total(samples, "tts_shim_upstream_calls_total", kind="generation", outcome="ok") == 2
    speech = "/v1/audio/speech"
    assert total(samples, "tts_shim_requests_total", route=speech, status="200") == 2
    assert total(samples, "tts_shim_requests_total", route=speech, status="429") == 1
    # The access line's request id is the one the client got.
    lines = [r.access for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    spoken = [line for line in lines if line["route"] == speech]
    assert [line["status"] for line in spoken] == statuses
    assert all(line["request_id"].startswith("req_") for line in spoken)
    assert spoken[2]["request_id"] == answers[2].headers["x-request-id"]
    assert spoken[0]["upstream_ms"] >= 0
    assert spoken[0]["cache"] == "BYPASS"
