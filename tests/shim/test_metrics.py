"""``GET /metrics`` read by Prometheus's own text parser, checked against the mock's journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shim.clients import Client, Limits
from shim.context import RequestContext
from shim.metrics import Metrics
from shim.prices import Prices
from shim.testing import MockUpstream
from tests.shim.conftest import CLIENT_TOKEN, parse, total

KEYS = f"""\
[keys.app]
key = "{CLIENT_TOKEN}"

[keys.tight]
key = "sk-tight-key-0001"
requests_per_minute = 1
"""


def _keys_file(tmp_path: Path) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(KEYS)
    return str(path)


async def test_metrics_after_a_mixed_run_match_the_mocks_journal(
    shim: Any, upstream: MockUpstream, tmp_path: Path
) -> None:
    client = shim(keys_file=_keys_file(tmp_path), tts_retries=1)
    speech_bytes = 0
    texts = ["One.", "Two words.", "Three words here."]
    for text in texts:
        response = await client.post(
            "/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": "alloy"}
        )
        assert response.status_code == 200
        speech_bytes += len(response.content)
    response = await client.post(
        "/v1/audio/speech",
        json={"model": "tts-1-hd", "input": "Streamed.", "stream_format": "sse"},
    )
    assert response.status_code == 200
    speech_bytes += len(response.content)
    upstream.scenario([{"status": 503}])  # retried once, then generated
    response = await client.post("/v1/audio/speech", json={"model": "tts-1-hd", "input": "Again."})
    assert response.status_code == 200
    speech_bytes += len(response.content)
    response = await client.post("/v1/audio/speech", json={"model": "tts-1", "input": ""})
    assert response.status_code == 400
    speech_bytes += len(response.content)
    chat = await client.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini-tts",
            "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"},
            "messages": [{"role": "user", "content": "Chat says hello."}],
        },
    )
    assert chat.status_code == 200
    tight = {"authorization": "Bearer sk-tight-key-0001"}
    body = {"model": "tts-1", "input": "Tight."}
    allowed = await client.post("/v1/audio/speech", json=body, headers=tight)
    refused = await client.post("/v1/audio/speech", json=body, headers=tight)
    assert (allowed.status_code, refused.status_code) == (200, 429)
    speech_bytes += len(allowed.content) + len(refused.content)

    metrics = await client.get("/metrics", headers={"authorization": ""})
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    samples = parse(metrics.text)

    generated = [e for e in upstream.journal if e["route"] == "tts" and e["status"] < 300]
    failed = [e for e in upstream.journal if e["route"] == "tts" and e["status"] >= 400]
    downloads = [e for e in upstream.journal if e["route"] == "audio" and e["status"] < 300]
    assert len(generated) == 7
    assert len(failed) == 1
    ok = total(samples, "tts_shim_upstream_calls_total", kind="generation", outcome="ok")
    assert ok == len(generated)
    assert total(
        samples, "tts_shim_upstream_calls_total", kind="generation", outcome="service_unavailable"
    ) == len(failed)
    assert total(samples, "tts_shim_upstream_retries_total", kind="generation") == 1
    assert total(samples, "tts_shim_upstream_calls_total", kind="download", outcome="ok") == len(
        downloads
    )
    prices = Prices()
    for model in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts"):
        chars = sum(
            len(e["json"]["text"]) for e in generated if e["json"]["model"] == f"openai/{model}"
        )
        assert chars > 0
        assert total(samples, "tts_shim_characters_total", model=model) == chars
        assert total(samples, "tts_shim_usd_total", model=model) == pytest.approx(
            prices.usd(model, chars)
        )
    assert total(samples, "tts_shim_characters_total", key="tight") == len("Tight.")
    speech = "/v1/audio/speech"
    assert total(samples, "tts_shim_requests_total", route=speech, status="200") == 6
    assert total(samples, "tts_shim_requests_total", route=speech, status="400") == 1
    assert total(samples, "tts_shim_requests_total", route=speech, status="429") == 1
    assert (
        total(samples, "tts_shim_requests_total", route="/v1/chat/completions", status="200") == 1
    )
    assert total(samples, "tts_shim_limited_requests_total", key="tight") == 1
    assert total(samples, "tts_shim_request_duration_seconds_count", route=speech) == 8
    assert total(samples, "tts_shim_time_to_first_byte_seconds_count", route=speech) == 8
    assert total(samples, "tts_shim_bytes_streamed_total", route=speech) == speech_bytes
    assert total(samples, "tts_shim_slots_in_use") == 0
    assert total(samples, "tts_shim_queue_length") == 0


async def test_the_metrics_key_guards_metrics_and_usage(shim: Any) -> None:
    client = shim(metrics_key="sk-metrics-0001")

    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/usage")).status_code == 401
    authorised = {"authorization": "Bearer sk-metrics-0001"}
    response = await client.get("/metrics", headers=authorised)
    assert response.status_code == 200
    assert "tts_shim_requests_total" in response.text
    assert (await client.get("/usage", headers=authorised)).status_code == 200


def test_cache_results_become_hits_misses_and_dollars_saved() -> None:
    metrics = Metrics(Prices())
    record = RequestContext("POST", "/v1/audio/speech", status=200)
    record.model, record.client = "tts-1-hd", Client("app", Limits())
    record.cache_result(True, 1000)
    record.cache_result(True, 500)
    record.cache_result(False, 200)

    metrics.observe(record, "/v1/audio/speech")
    samples = parse(metrics.exposition().decode())

    assert total(samples, "tts_shim_cache_hits_total", model="tts-1-hd") == 2
    assert total(samples, "tts_shim_cache_misses_total", model="tts-1-hd") == 1
    assert total(samples, "tts_shim_cache_saved_usd_total", key="app") == pytest.approx(0.045)
