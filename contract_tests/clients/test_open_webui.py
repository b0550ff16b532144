"""Open WebUI's text-to-speech calls, exactly as it makes them, with client keys set.

Open WebUI (Admin Panel > Settings > Audio, engine "OpenAI") is configured with an API
base URL and key. Against any base URL but OpenAI's it reads the voice and model lists
with plain GETs (``requests.get``; older releases send no ``Authorization``, newer ones
send the configured key) and falls back to a built-in list, silently, on any error.
Speech is an aiohttp ``POST {base}/audio/speech`` with the JSON body
``{"model", "input", "voice"}`` (plus its optional extra parameters), the key as a
bearer token, and the reply saved as a file; on an error it reads ``error.message``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS, decode
from shim.testing import MockUpstream, ShimServer

SERVER_KEY = "sk-openwebui-server-7e21"
CLIENT_KEY = "ck-openwebui-client-5d0c"


def _get(url: str, key: str | None) -> Any:
    """``requests.get(url, headers=headers)``, ``raise_for_status()``, ``.json()``, as
    Open WebUI does it (httpx here: requests is not among the project's packages)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(url, headers=headers, verify=LOOPBACK_TLS)
    response.raise_for_status()
    return response.json()


async def _speech(base: str, key: str, payload: dict[str, Any]) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.post(url=f"{base}/audio/speech", json=payload, headers=headers) as r,
    ):
        return r.status, await r.read()


@pytest.fixture
def shim(tts_shim_factory: Callable[..., ShimServer]) -> ShimServer:
    return tts_shim_factory(upstream_key=SERVER_KEY, client_keys=(CLIENT_KEY,))


@pytest.mark.parametrize("key", [None, CLIENT_KEY], ids=["no-key", "with-key"])
def test_the_voice_and_model_lists_reach_open_webui(shim: ShimServer, key: str | None) -> None:
    voices_list = _get(f"{shim.base_url}/audio/voices", key).get("voices", [])
    available_voices = {voice["id"]: voice["name"] for voice in voices_list}
    available_models = _get(f"{shim.base_url}/audio/models", key).get("models", [])

    # The shim's lists, not Open WebUI's fall-back (which would offer marin and cedar).
    assert set(available_voices) == {
        "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
        "verse",
    }  # fmt: skip
    assert available_voices["coral"] == "Coral"
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= {m["id"] for m in available_models}


def test_open_webui_speaks_with_its_key(shim: ShimServer, tts_mock: MockUpstream) -> None:
    payload = {"model": "tts-1-hd", "input": "Hello from Open WebUI.", "voice": "nova"}

    status, audio = asyncio.run(_speech(shim.base_url, CLIENT_KEY, payload))

    assert status == 200
    codec, rate, seconds = decode(audio, "mp3")  # Open WebUI saves it as .mp3
    assert codec.startswith("mp3")
    assert rate == 24_000
    assert seconds > 0.5
    (generation,) = tts_mock.requests
    assert generation["json"]["text"] == payload["input"]
    assert generation["headers"]["authorization"] == f"Bearer ****{SERVER_KEY[-4:]}"


def test_open_webui_without_the_key_gets_an_error_it_can_show(
    shim: ShimServer, tts_mock: MockUpstream
) -> None:
    payload = {"model": "tts-1-hd", "input": "Hello.", "voice": "nova"}

    status, body = asyncio.run(_speech(shim.base_url, "not-a-client-key", payload))

    assert status == 401
    assert json.loads(body)["error"]["message"]  # "External: <message>" in Open WebUI
    assert tts_mock.requests == []
