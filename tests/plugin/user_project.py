"""A user's test file, run by ``python3 scripts/dev.py test`` in a scratch project.

There, tts-shim is installed from a freshly built wheel into a virtual environment of
its own (``.venv-wheel-smoke``), and this file is copied, as ``test_user_project.py``,
to a directory outside the repository: it proves that the plugin and its helpers work
from an installed package, loaded through the ``pytest11`` entry point. It is not
collected in the repository itself (its name does not start with ``test_``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest

import shim


def test_the_package_comes_from_the_wheel(request: pytest.FixtureRequest) -> None:
    location = Path(shim.__file__).resolve()
    assert "site-packages" in location.parts, location
    assert not (location.parents[1] / "contract_tests").exists()
    assert request.config.pluginmanager.has_plugin("tts_shim")  # via the entry point


def test_my_app_speaks(tts_shim: shim.testing.ShimServer) -> None:
    client = openai.OpenAI(base_url=tts_shim.base_url, api_key="test")
    audio = client.audio.speech.create(model="tts-1-hd", voice="coral", input="Hi")
    assert tts_shim.upstream.requests[-1]["json"]["text"] == "Hi"
    assert audio.content


@pytest.mark.tts_mock(steps=[{"status": 429, "times": 2}])
def test_my_app_sees_a_rate_limit(tts_shim: shim.testing.ShimServer) -> None:
    client = openai.OpenAI(base_url=tts_shim.base_url, api_key="test", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.audio.speech.create(model="tts-1-hd", voice="coral", input="Hi")


def test_my_httpx_code_without_sockets(aimlapi_mock: shim.testing.MockUpstream) -> None:
    async def generate() -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.post(
                "https://api.aimlapi.com/v1/tts",
                json={"model": "openai/tts-1", "text": "Hi"},
                headers={"authorization": "Bearer k"},
            )

    reply = asyncio.run(generate())
    assert reply.status_code == 201
    assert httpx.get(reply.json()["audio"]["url"]).content
    assert [e["route"] for e in aimlapi_mock.journal] == ["tts", "audio"]
