"""AI/ML side, requests: the shim sends exactly the documented ``POST /v1/tts`` body and
headers, whatever the OpenAI side asked, and nothing of the client's reaches the CDN.

Every request is read from the mock's journal and validated against
``aimlapi_tts.schema.json`` (undocumented keys forbidden).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract_tests.conftest import LOOPBACK_TLS, SDK
from contract_tests.upstream.schema import check_request
from mockserver import FORMATS, VOICES
from shim.testing import ShimServer

MODELS = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"]


def _sent(journal: Any) -> dict[str, Any]:
    """The one generation request the shim made, checked against the schema."""
    (call,) = journal("tts")
    assert call["method"] == "POST"
    assert call["path"] == "/v1/tts"
    assert call["query"] == ""
    check_request(call["json"], call["headers"])
    body: dict[str, Any] = call["json"]
    return body


async def test_every_field_reaches_the_upstream_as_documented(sdk: SDK, journal: Any) -> None:
    await sdk.call(
        "audio.speech.create",
        model="gpt-4o-mini-tts",
        voice="ballad",
        input="Mapped.",
        instructions="Speak like a pirate.",
        response_format="aac",
        speed=1.25,
        stream_format="sse",
        extra_body={"unknown_future_field": 1},
    )

    assert _sent(journal) == {
        "model": "openai/gpt-4o-mini-tts",
        "text": "Mapped.",
        "voice": "ballad",
        "style": "Speak like a pirate.",
        "response_format": "aac",
        "speed": 1.25,
    }


@pytest.mark.parametrize("model", MODELS + ["openai/" + m for m in MODELS])
def test_every_model_is_sent_with_its_prefix(
    tts_shim: ShimServer, journal: Any, model: str
) -> None:
    with openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-test-key-0000") as client:
        client.audio.speech.create(model=model, voice="alloy", input="Hi", response_format="pcm")

    assert _sent(journal)["model"] == "openai/" + model.removeprefix("openai/")


@pytest.mark.parametrize("voice", VOICES)
def test_every_voice_is_sent_as_is(tts_shim: ShimServer, journal: Any, voice: str) -> None:
    with openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-test-key-0000") as client:
        client.audio.speech.create(model="tts-1", voice=voice, input="Hi", response_format="pcm")

    assert _sent(journal)["voice"] == voice


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_asked_for_as_is(tts_shim: ShimServer, journal: Any, fmt: str) -> None:
    with openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-test-key-0000") as client:
        client.audio.speech.create(model="tts-1", voice="echo", input="Hi", response_format=fmt)

    assert _sent(journal)["response_format"] == fmt


@pytest.mark.parametrize(
    ("fmt", "upstream_format"),
    [
        ("wav", "wav"),
        ("mp3", "mp3"),
        ("aac", "aac"),
        ("flac", "flac"),
        ("opus", "opus"),
        ("pcm16", "pcm"),
    ],
)
async def test_chat_completions_send_the_documented_body(
    sdk: SDK, journal: Any, fmt: str, upstream_format: str
) -> None:
    await sdk.call(
        "chat.completions.create",
        model="tts-1",
        modalities=["text", "audio"],
        audio={"voice": "verse", "format": fmt},
        messages=[{"role": "user", "content": "Read this."}],
    )

    assert _sent(journal) == {
        "model": "openai/tts-1",
        "text": "Read this.",
        "voice": "verse",
        "response_format": upstream_format,
    }


# What a valid OpenAI speech request may hold; the shim must turn every one of them into
# a documented /v1/tts body with the same meaning.
SPEECH_REQUESTS = st.fixed_dictionaries(
    {
        "model": st.sampled_from(MODELS + ["openai/" + m for m in MODELS]),
        "input": st.text(
            st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
        ).filter(str.strip),
        "voice": st.sampled_from(VOICES),
    },
    optional={
        "instructions": st.text(max_size=30),
        "response_format": st.sampled_from(FORMATS),
        "speed": st.floats(0.25, 4.0) | st.integers(1, 4),
        "stream_format": st.sampled_from(["audio", "sse"]),
        "extra": st.dictionaries(st.sampled_from(["x_a", "x_b", "seed"]), st.integers()),
    },
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(request=SPEECH_REQUESTS)
def test_any_valid_speech_request_becomes_a_documented_body(
    tts_shim: ShimServer, request: dict[str, Any]
) -> None:
    tts_shim.upstream.reset()
    body = {**request.pop("extra", {}), **request}
    with httpx.Client(base_url=tts_shim.base_url, timeout=30, verify=LOOPBACK_TLS) as http:
        response = http.post(
            "/audio/speech", json=body, headers={"authorization": "Bearer sk-test-key-0000"}
        )
        response.read()

    assert response.status_code == 200, response.text
    (call,) = [e for e in tts_shim.upstream.journal if e["route"] == "tts"]
    check_request(call["json"], call["headers"])
    sent = call["json"]
    assert sent["model"] == "openai/" + request["model"].removeprefix("openai/")
    assert sent["text"] == request["input"]
    assert sent["voice"] == request["voice"]
    assert sent.get("style", "") == request.get("instructions", "")
    assert sent.get("response_format", "mp3") == request.get("response_format", "mp3")
    assert sent.get("speed", 1.0) == pytest.approx(request.get("speed", 1.0))


async def test_the_cdn_never_sees_a_key_or_the_clients_headers(
    tts_shim: ShimServer, journal: Any
) -> None:
    client = openai.OpenAI(
        base_url=tts_shim.base_url,
        api_key="sk-test-key-0000",
        organization="org-secret",
        default_headers={"x-app-secret": "hush"},
    )
    with client:
        client.audio.speech.create(model="tts-1-hd", voice="alloy", input="Hi")

    tts = _sent(journal)  # the documented headers only: nothing of the SDK's own
    (call,) = journal("tts")
    (cdn,) = journal("audio")
    assert tts["text"] == "Hi"
    assert call["headers"]["authorization"] == "Bearer ****0000"  # passed through, masked
    assert "x-app-secret" not in call["headers"]
    assert "authorization" not in cdn["headers"]
    assert not {name for name in cdn["headers"] if name.startswith(("x-stainless", "openai-"))}
    for secret in ("sk-test-key", "org-secret", "hush"):
        assert secret not in json.dumps(cdn)


async def test_server_key_mode_sends_the_servers_key(tts_shim_factory: Any, journal: Any) -> None:
    shim = tts_shim_factory(upstream_key="aiml-server-key-4242")
    sdk = SDK("sync", shim, api_key="anything-the-client-says")

    await sdk.speech(input="Hi")
    _sent(journal)
    (tts,) = journal("tts")
    assert tts["headers"]["authorization"] == "Bearer ****4242"
    await sdk.aclose()
