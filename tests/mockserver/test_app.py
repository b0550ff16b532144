"""The app over HTTP, in-process: shapes, errors, auth, the CDN, scenarios and the journal."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import av
import httpx
import pytest
from starlette.applications import Starlette

from mockserver import MockConfig, create_app, pricing
from mockserver.audio import FORMATS, MAX_ENCODED_DURATION_MS, speech_duration
from mockserver.errors import DOCUMENTED_MESSAGES, FREE_TIER_MESSAGE

from .conftest import AUTH, KEY, ROOT, TEXT, body, decode

URL = re.compile(
    r"^(?P<root>http://[^/]+)/generations/(?P<voice>[a-z]+)/"
    r"(?P<stamp>\d{13})-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"\.(?P<ext>[a-z0-9]+)\?duration_ms=(?P<ms>\d+)$"
)
ERROR_KEYS = {"message", "path", "requestId", "statusCode", "timestamp"}


async def tts(client: httpx.AsyncClient, **overrides: Any) -> httpx.Response:
    return await client.post("/v1/tts", json=body(**overrides), headers=AUTH)


async def push(client: httpx.AsyncClient, *steps: dict[str, Any]) -> httpx.Response:
    response = await client.post("/__mock__/scenario", json={"steps": list(steps)})
    assert response.status_code == 200, response.text
    return response


async def journal(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/__mock__/requests")
    assert response.status_code == 200
    assert set(response.json()) == {"requests"}
    entries: list[dict[str, Any]] = response.json()["requests"]
    return entries


def assert_error(response: httpx.Response, status: int, path: str = "/v1/tts") -> str:
    """Check the AI/ML error body; return its message."""
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert set(data) == ERROR_KEYS
    assert data["statusCode"] == status
    assert data["path"] == path
    assert data["requestId"] == response.headers["x-request-id"]
    assert datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    message: str = data["message"]
    return message


# -- success shapes ----------------------------------------------------------------------


async def test_default_shape_is_the_doc_pages_url_object(client: httpx.AsyncClient) -> None:
    response = await tts(client, voice="nova")
    assert response.status_code == 201
    data = response.json()
    assert list(data) == ["audio"]
    assert list(data["audio"]) == ["url"]
    match = URL.match(data["audio"]["url"])
    assert match is not None, data
    assert (match["root"], match["voice"], match["ext"]) == (ROOT, "nova", "mp3")
    assert int(match["ms"]) == round(speech_duration(TEXT) * 1000)


@pytest.mark.parametrize("config", [MockConfig(response_shape="url-string")])
async def test_url_string_shape_reports_usage(client: httpx.AsyncClient) -> None:
    response = await tts(client, model="openai/tts-1-hd", response_format="opus")
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"audio", "meta"}
    assert URL.match(data["audio"])
    assert data["audio"].split("?")[0].endswith(".opus")
    assert data["meta"] == {"usage": pricing.usage("openai/tts-1-hd", TEXT)}


def test_pricing_is_per_thousand_characters() -> None:
    assert pricing.usage("openai/tts-1-hd", "a" * 1000) == {
        "credits_used": 60_000,
        "usd_spent": 0.03,
    }
    assert pricing.usage("openai/tts-1", "a" * 1000)["usd_spent"] == 0.015
    assert pricing.usage("openai/gpt-4o-mini-tts", "a" * 2000)["usd_spent"] == 0.03


@pytest.mark.parametrize("config", [MockConfig(response_shape="binary")])
async def test_binary_shape_sends_wav_whatever_was_asked(client: httpx.AsyncClient) -> None:
    response = await tts(client, response_format="mp3")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert "content-length" not in response.headers
    decoded = decode(response.content, "wav")
    assert decoded.codec == "pcm_s16le"
    assert decoded.duration == pytest.approx(speech_duration(TEXT), abs=0.01)


@pytest.mark.parametrize("config", [MockConfig(response_shape="metadata-only")])
async def test_metadata_only_shape_has_no_audio_reference(client: httpx.AsyncClient) -> None:
    response = await tts(client, model="openai/tts-1-hd")
    assert response.status_code == 201
    data = response.json()
    assert list(data) == ["metadata"]
    meta = data["metadata"]
    assert set(meta) == {
        "transaction_key",
        "request_id",
        "sha256",
        "created",
        "duration",
        "channels",
        "models",
        "model_info",
    }
    assert meta["request_id"] == response.headers["x-request-id"]
    assert meta["sha256"] == hashlib.sha256(TEXT.encode()).hexdigest()
    assert meta["duration"] == speech_duration(TEXT)
    assert meta["channels"] == 1
    (model_id,) = meta["models"]
    assert meta["model_info"][model_id]["name"] == "openai/tts-1-hd"
    assert "http" not in response.text


@pytest.mark.parametrize("config", [MockConfig(cdn_url="http://cdn.mock.test:9000/")])
async def test_cdn_url_setting_moves_the_links(client: httpx.AsyncClient) -> None:
    url = (await tts(client)).json()["audio"]["url"]
    assert url.startswith("http://cdn.mock.test:9000/generations/alloy/")


async def test_links_follow_the_requests_own_root(app: Starlette) -> None:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.other:8443") as c:
        url = (await tts(c)).json()["audio"]["url"]
    assert url.startswith("https://api.other:8443/generations/")


# -- authentication ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
    ],
)
async def test_missing_or_malformed_key_gets_the_documented_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/tts", json=body(), headers=headers)
    assert assert_error(response, 401) == DOCUMENTED_MESSAGES[401]
    assert response.json()["message"].startswith("This request requires a valid API key.")


async def test_any_bearer_token_is_accepted_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/tts", json=body(), headers={"Authorization": "bearer x"})
    assert response.status_code == 201


@pytest.mark.parametrize("config", [MockConfig(api_keys=("key-one", "key-two"))])
async def test_api_keys_restrict_tokens(client: httpx.AsyncClient) -> None:
    for key, status in [("key-one", 201), ("key-two", 201), ("key-three", 401), ("key-on", 401)]:
        response = await client.post(
            "/v1/tts", json=body(), headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == status, key


async def test_authentication_comes_before_validation(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/tts", json={"voice": "bob"})
    assert response.status_code == 401


# -- validation over HTTP --------------------------------------------------------------------


async def test_bad_body_gets_the_documented_400(client: httpx.AsyncClient) -> None:
    message = assert_error(await tts(client, voice="bob"), 400)
    assert message.startswith("Body validation error! Invalid enum value. Expected 'alloy' |")
    assert message.endswith("received 'bob' at \"voice\"")


@pytest.mark.parametrize(
    ("content", "detail"),
    [(b"not json", "received invalid JSON"), (b"[1, 2]", "Expected object, received array")],
)
async def test_body_that_is_not_a_json_object(
    client: httpx.AsyncClient, content: bytes, detail: str
) -> None:
    response = await client.post(
        "/v1/tts", content=content, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert detail in assert_error(response, 400)


async def test_oversized_body_gets_413(client: httpx.AsyncClient) -> None:
    response = await tts(client, text="a" * (2 * 1024 * 1024))
    assert assert_error(response, 413) == "request entity too large"


# -- documented errors, as scenario steps ----------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 429, 500, 502, 503, 504])
async def test_each_documented_status_has_its_documented_body(
    client: httpx.AsyncClient, status: int
) -> None:
    await push(client, {"status": status})
    response = await tts(client)
    assert assert_error(response, status) == DOCUMENTED_MESSAGES[status]
    if status == 429:
        assert response.headers["retry-after"] == "1"
    else:
        assert "retry-after" not in response.headers


def test_documented_messages() -> None:
    assert DOCUMENTED_MESSAGES[400] == "Body validation error!"
    assert DOCUMENTED_MESSAGES[403].startswith("You've run out of credits.")
    assert (DOCUMENTED_MESSAGES[502], DOCUMENTED_MESSAGES[503]) == (
        "Bad Gateway",
        "Service unavailable",
    )
    assert DOCUMENTED_MESSAGES[504] == "Generation timeout"


async def test_step_message_headers_and_body_override(client: httpx.AsyncClient) -> None:
    await push(
        client,
        {"status": 429, "message": FREE_TIER_MESSAGE, "headers": {"Retry-After": "7"}},
        {"status": 500, "body": {"error": "custom"}},
        {"status": 502, "body": "<html>proxy</html>"},
    )
    first = await tts(client)
    assert assert_error(first, 429) == FREE_TIER_MESSAGE
    assert first.headers["retry-after"] == "7"
    second = await tts(client)
    assert (second.status_code, second.json()) == (500, {"error": "custom"})
    third = await tts(client)
    assert (third.status_code, third.text) == (502, "<html>proxy</html>")


async def test_error_steps_apply_whatever_the_request(client: httpx.AsyncClient) -> None:
    await push(client, {"status": 503})
    response = await client.post("/v1/tts", json={}, headers={})
    assert_error(response, 503)


async def test_unknown_paths_get_the_ai_ml_404(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/v1/models"), ("GET", "/v1/tts"), ("POST", "/v2/tts")]:
        response = await client.request(method, path)
        assert assert_error(response, 404, path) == f"Cannot {method} {path}"


async def test_unexpected_errors_get_the_ai_ml_500(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("mockserver.app.parse_speech_request", explode)
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
        response = await tts(client)
    assert response.status_code == 500
    assert response.json()["message"] == "Internal server error"


async def test_every_reply_carries_a_request_id(client: httpx.AsyncClient) -> None:
    url = (await tts(client)).json()["audio"]["url"]
    responses = [
        await tts(client, voice="bob"),
        await client.get(url),
        await client.get("/nowhere"),
        await client.get("/__mock__/requests"),
    ]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids)
    assert len(set(ids)) == len(ids)


# -- the CDN -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_cdn_serves_each_format_chunked(client: httpx.AsyncClient, fmt: str) -> None:
    text = "Short clip."
    url = (await tts(client, text=text, response_format=fmt)).json()["audio"]["url"]
    assert url.split("?")[0].endswith("." + fmt)
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == FORMATS[fmt].content_type
    assert "content-length" not in response.headers
    decoded = decode(response.content, fmt)
    assert decoded.channels == 1
    assert decoded.duration == pytest.approx(speech_duration(text), abs=0.1)
    assert decoded.rms > 0.05


async def test_speed_two_halves_the_duration(client: httpx.AsyncClient) -> None:
    durations = []
    for speed in (1, 2):
        url = (await tts(client, response_format="wav", speed=speed)).json()["audio"]["url"]
        durations.append(decode((await client.get(url)).content, "wav").duration)
    assert durations[1] == pytest.approx(durations[0] / 2, abs=0.002)


async def test_voices_differ_through_the_cdn(client: httpx.AsyncClient) -> None:
    clips = []
    for voice in ("onyx", "shimmer"):
        url = (await tts(client, voice=voice, response_format="pcm")).json()["audio"]["url"]
        clips.append((await client.get(url)).content)
    assert len(clips[0]) == len(clips[1])
    assert clips[0] != clips[1]


async def test_cdn_needs_no_key_and_the_journal_shows_who_sent_one(
    client: httpx.AsyncClient,
) -> None:
    url = (await tts(client)).json()["audio"]["url"]
    assert (await client.get(url)).status_code == 200
    assert (await client.get(url, headers=AUTH)).status_code == 200
    audio = [e for e in await journal(client) if e["route"] == "audio"]
    assert ["authorization" in e["headers"] for e in audio] == [False, True]


async def test_the_real_example_link_works(client: httpx.AsyncClient) -> None:
    path = "/generations/hedgehog/1760948051400-99effd93-a38a-43d5-b4e4-76b42afb6e67.mp3"
    response = await client.get(path)
    assert response.headers["content-type"] == "audio/mpeg"
    assert decode(response.content, "mp3").duration == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(
    "path",
    [
        "/generations/alloy/1760948051400-99effd93.mp4",
        "/generations/alloy/not-a-name.mp3",
        "/generations/alloy/1760948051400-99effd93.mp3?duration_ms=abc",
        "/generations/alloy/1760948051400-99effd93.mp3?duration_ms=0",
        f"/generations/alloy/1-9.mp3?duration_ms={MAX_ENCODED_DURATION_MS + 1}",
        "/generations/al.loy/1-9.mp3",
    ],
)
async def test_cdn_unknown_objects_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert assert_error(response, 404, path.split("?")[0]).startswith("Not Found")


async def test_cdn_serves_long_pcm_beyond_the_compressed_cap(client: httpx.AsyncClient) -> None:
    # HEAD: ASGITransport would buffer the whole body (test_server.py streams one).
    ms = MAX_ENCODED_DURATION_MS + 1000
    assert (await client.head(f"/generations/echo/1-2.pcm?duration_ms={ms}")).status_code == 200
    assert (await client.head(f"/generations/echo/1-2.mp3?duration_ms={ms}")).status_code == 404


async def test_cdn_head_sends_headers_only(client: httpx.AsyncClient) -> None:
    response = await client.head("/generations/alloy/1-2.flac?duration_ms=500")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-type"] == "audio/flac"


# -- scenario steps that shape success -------------------------------------------------------


async def test_step_shape_overrides_the_default_once(client: httpx.AsyncClient) -> None:
    await push(client, {"shape": "url-string"}, {"shape": "metadata-only"})
    assert "meta" in (await tts(client)).json()
    assert "metadata" in (await tts(client)).json()
    assert "url" in (await tts(client)).json()["audio"]


async def test_step_audio_url_replaces_the_link(client: httpx.AsyncClient) -> None:
    await push(client, {"audio_url": "https://elsewhere.test/a.mp3"})
    assert (await tts(client)).json() == {"audio": {"url": "https://elsewhere.test/a.mp3"}}


async def test_step_audio_format_on_tts_changes_the_link(client: httpx.AsyncClient) -> None:
    await push(client, {"audio_format": "wav"})
    url = (await tts(client, response_format="mp3")).json()["audio"]["url"]
    assert url.split("?")[0].endswith(".wav")
    response = await client.get(url)
    assert response.headers["content-type"] == "audio/wav"
    assert decode(response.content, "wav").codec == "pcm_s16le"


async def test_step_audio_format_on_the_cdn_ignores_the_extension(
    client: httpx.AsyncClient,
) -> None:
    url = (await tts(client, response_format="mp3")).json()["audio"]["url"]
    await push(client, {"route": "audio", "audio_format": "flac"})
    response = await client.get(url)
    assert response.headers["content-type"] == "audio/flac"
    assert decode(response.content, "flac").codec == "flac"
    assert (await client.get(url)).headers["content-type"] == "audio/mpeg"


async def test_step_status_and_headers_on_success(client: httpx.AsyncClient) -> None:
    await push(client, {"status": 200, "headers": {"X-Extra": "yes"}})
    response = await tts(client)
    assert (response.status_code, response.headers["x-extra"]) == (200, "yes")
    assert "url" in response.json()["audio"]


async def test_success_steps_still_check_the_request(client: httpx.AsyncClient) -> None:
    await push(client, {"shape": "url-string"})
    assert (await client.post("/v1/tts", json=body())).status_code == 401
    assert (await tts(client)).json()["audio"]["url"]  # the step was used up


async def test_steps_are_consumed_in_order_with_times(client: httpx.AsyncClient) -> None:
    await push(client, {"status": 500, "times": 2}, {"status": 503}, {"shape": "url-string"})
    statuses = [(await tts(client)).status_code for _ in range(5)]
    assert statuses == [500, 500, 503, 200, 201]


async def test_audio_steps_do_not_block_tts_steps(client: httpx.AsyncClient) -> None:
    await push(client, {"route": "audio", "status": 404}, {"status": 502})
    assert (await tts(client)).status_code == 502
    url = (await tts(client)).json()["audio"]["url"]
    assert_error(await client.get(url), 404, url.split("?")[0].removeprefix(ROOT))
    assert (await client.get(url)).status_code == 200


async def test_delay_ms_waits_before_replying(
    client: httpx.AsyncClient, sleeps: list[float]
) -> None:
    await push(client, {"delay_ms": 1500}, {"route": "audio", "delay_ms": 250, "status": 503})
    url = (await tts(client)).json()["audio"]["url"]
    assert sleeps == [1.5]
    assert (await client.get(url)).status_code == 503
    assert sleeps == [1.5, 0.25]


# -- faults, in-process (the socket versions are in test_server.py) ----------------------------


@pytest.mark.parametrize("route", ["tts", "audio"])
async def test_reset_in_process_raises_a_connection_error(
    client: httpx.AsyncClient, route: str
) -> None:
    await push(client, {"route": route, "fault": "reset"})
    if route == "tts":
        request = client.build_request("POST", "/v1/tts", json=body(), headers=AUTH)
    else:
        request = client.build_request("GET", "/generations/alloy/1-2.mp3")
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await client.send(request)


async def test_truncated_in_process_raises_a_connection_error(client: httpx.AsyncClient) -> None:
    await push(client, {"fault": "truncated"})
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        await tts(client)


async def test_cut_in_process_raises_a_connection_error(client: httpx.AsyncClient) -> None:
    await push(client, {"route": "audio", "fault": "cut", "cut_after": 100})
    with pytest.raises(httpx.RemoteProtocolError, match="received 100 bytes"):
        await client.get("/generations/alloy/1-2.mp3")


async def test_ranges_in_process(client: httpx.AsyncClient) -> None:
    whole = await client.get("/generations/alloy/1-2.mp3")
    part = await client.get("/generations/alloy/1-2.mp3", headers={"range": "bytes=5-9"})
    assert part.status_code == 206
    assert part.content == whole.content[5:10]


async def test_garbage_on_tts_is_a_200_that_is_not_json(client: httpx.AsyncClient) -> None:
    await push(client, {"fault": "garbage"})
    response = await tts(client)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_garbage_on_audio_is_not_audio(client: httpx.AsyncClient) -> None:
    url = (await tts(client)).json()["audio"]["url"]
    await push(client, {"route": "audio", "fault": "garbage"})
    response = await client.get(url)
    assert (response.status_code, response.headers["content-type"]) == (200, "audio/mpeg")
    with pytest.raises(av.error.FFmpegError):
        decode(response.content, "mp3")


@pytest.mark.parametrize(
    ("fmt", "signature"),
    [
        ("mp3", b"ID3"),
        ("opus", b"OggS"),
        ("aac", b"\xff\xf1"),
        ("flac", b"fLaC"),
        ("wav", b"RIFF\xff\xff\xff\xffWAVE"),
        ("pcm", b""),
    ],
)
async def test_signature_junk_is_the_signature_then_html(
    client: httpx.AsyncClient, fmt: str, signature: bytes
) -> None:
    url = (await tts(client, response_format=fmt)).json()["audio"]["url"]
    real = (await client.get(url)).content
    await push(client, {"route": "audio", "fault": "signature-junk"})
    response = await client.get(url)

    assert response.status_code == 200
    assert response.headers["content-type"] == FORMATS[fmt].content_type
    assert real.startswith(signature)  # what the real clip starts with, too
    assert response.content.startswith(signature + b"<!DOCTYPE html>")
    if signature:  # raw PCM has no framing for a decoder to refuse
        with pytest.raises(av.error.FFmpegError):
            decode(response.content, fmt)


async def test_signature_junk_sends_the_steps_body_as_the_junk(client: httpx.AsyncClient) -> None:
    url = (await tts(client, response_format="flac")).json()["audio"]["url"]
    await push(client, {"route": "audio", "fault": "signature-junk", "body": "not audio"})
    assert (await client.get(url)).content == b"fLaCnot audio"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_junk_tail_is_the_first_half_then_html_after_delay_ms(
    client: httpx.AsyncClient, sleeps: list[float], fmt: str
) -> None:
    url = (await tts(client, response_format=fmt)).json()["audio"]["url"]
    real = (await client.get(url)).content
    await push(client, {"route": "audio", "fault": "junk-tail", "delay_ms": 300})
    response = await client.get(url)

    assert response.status_code == 200
    assert response.headers["content-type"] == FORMATS[fmt].content_type
    assert "content-length" not in response.headers
    half = len(real) // 2
    assert response.content[:half] == real[:half]
    assert response.content[half:].startswith(b"<!DOCTYPE html>")
    assert response.content[half:].endswith(b"</html>\n")
    assert sleeps == [0.3]  # between the halves: nothing waited before the reply


async def test_slow_body_dribbles_over_delay_ms(
    client: httpx.AsyncClient, sleeps: list[float]
) -> None:
    url = (await tts(client)).json()["audio"]["url"]
    whole = (await client.get(url)).content
    await push(client, {"route": "audio", "fault": "slow-body", "delay_ms": 2000})
    assert (await client.get(url)).content == whole
    assert len(sleeps) == 20
    assert sum(sleeps) == pytest.approx(2.0)


# -- control routes and the journal ------------------------------------------------------------


async def test_scenario_routes(client: httpx.AsyncClient) -> None:
    reply = await push(client, {"status": 500, "times": 2}, {"route": "audio", "fault": "reset"})
    assert reply.json() == {"queued": 2, "pending": 2}
    await tts(client)
    shown = (await client.get("/__mock__/scenario")).json()
    assert shown == {
        "steps": [
            {"route": "tts", "status": 500, "times": 1},
            {"route": "audio", "fault": "reset", "times": 1},
        ]
    }
    assert (await client.delete("/__mock__/scenario")).json() == {"steps": []}
    assert (await tts(client)).status_code == 201


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (b'{"steps": [{"fault": "boom"}]}', "steps[0].fault"),
        (b'{"steps": [{"status": 500, "colour": "red"}]}', "unknown key(s) 'colour'"),
        (b'[{"status": 500}]', 'exactly one key, "steps"'),
        (b"{", "not JSON"),
    ],
)
async def test_bad_scenarios_get_a_clear_400(
    client: httpx.AsyncClient, payload: bytes, complaint: str
) -> None:
    response = await client.post("/__mock__/scenario", content=payload)
    message = assert_error(response, 400, "/__mock__/scenario")
    assert message.startswith("Invalid scenario: ")
    assert complaint in message
    assert (await client.get("/__mock__/scenario")).json() == {"steps": []}


@pytest.mark.parametrize("config", [MockConfig(max_steps=2)])
async def test_the_queue_is_bounded_over_http(client: httpx.AsyncClient) -> None:
    response = await client.post("/__mock__/scenario", json={"steps": [{}, {}, {}]})
    assert "too many steps" in assert_error(response, 400, "/__mock__/scenario")


async def test_journal_records_every_api_and_cdn_request(client: httpx.AsyncClient) -> None:
    await push(client, {"route": "audio", "status": 503})
    url = (await tts(client, voice="coral")).json()["audio"]["url"]
    await client.get(url)
    await client.post("/v1/tts", content=b"oops", headers={"Authorization": "Bearer abcdefgh"})
    await client.get("/elsewhere?x=1")
    entries = await journal(client)

    assert [(e["method"], e["route"], e["status"]) for e in entries] == [
        ("POST", "tts", 201),
        ("GET", "audio", 503),
        ("POST", "tts", 400),
        ("GET", "other", 404),
    ]
    first, cdn, bad, other = entries
    assert first["path"] == "/v1/tts"
    assert first["json"] == body(voice="coral")
    assert first["headers"]["authorization"] == "Bearer ****" + KEY[-4:]
    assert KEY not in json.dumps(entries)
    assert first["headers"]["content-type"] == "application/json"
    assert first["step"] is None
    assert first["request_id"]
    assert cdn["path"] == url.removeprefix(ROOT).split("?")[0]
    assert cdn["query"] == url.split("?")[1]
    assert cdn["json"] is None
    assert cdn["step"] == {"route": "audio", "status": 503, "times": 1}
    assert bad["json"] is None
    assert bad["headers"]["authorization"] == "Bearer ****efgh"
    assert (other["path"], other["query"]) == ("/elsewhere", "x=1")
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)


async def test_only_the_cdn_route_counts_as_audio(client: httpx.AsyncClient) -> None:
    await push(client, {"route": "audio", "status": 500})
    assert_error(await client.get("/generations/a/b/c.mp3"), 404, "/generations/a/b/c.mp3")
    assert [e["route"] for e in await journal(client)] == ["other"]
    assert (await client.get("/__mock__/scenario")).json()["steps"] != []  # not consumed


@pytest.mark.parametrize("config", [MockConfig(journal_size=3)])
async def test_journal_is_bounded_over_http(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await client.get(f"/n{n}")
    assert [e["path"] for e in await journal(client)] == ["/n2", "/n3", "/n4"]


async def test_reset_clears_journal_and_queue(client: httpx.AsyncClient) -> None:
    await push(client, {"status": 500})
    await client.get("/something")
    response = await client.post("/__mock__/reset")
    assert response.status_code == 200
    assert await journal(client) == []
    assert (await client.get("/__mock__/scenario")).json() == {"steps": []}
    assert (await tts(client)).status_code == 201


async def test_state_objects_are_the_ones_the_routes_use(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    app.state.scenario.push([{"status": 504}])
    assert (await tts(client)).status_code == 504
    assert [e["status"] for e in app.state.journal.entries()] == [504]
    app.state.journal.clear()
    assert await journal(client) == []
    assert app.state.config == MockConfig()
    assert app.state.audio_cache is not None


async def test_audio_is_cached_between_requests(app: Starlette, client: httpx.AsyncClient) -> None:
    url = (await tts(client, response_format="aac")).json()["audio"]["url"]
    first = (await client.get(url)).content
    assert len(app.state.audio_cache) == 1
    assert (await client.get(url)).content == first


@pytest.fixture
async def two_apps() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(create_app()), base_url=ROOT) as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(create_app()), base_url=ROOT) as b,
    ):
        yield a, b


async def test_apps_do_not_share_state(
    two_apps: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, b = two_apps
    await push(a, {"status": 500})
    assert (await tts(b)).status_code == 201
    assert (await tts(a)).status_code == 500
    assert len(await journal(b)) == 1
