"""The plugin's own tests run small test files in a scratch directory, as a user would.

``pytester`` runs them in this process and afterwards forgets every module they
imported. Forgetting is harmful here: a module imported again is a second copy, whose
exception classes the first copy's ``except`` clauses do not catch (and NumPy, an
extension, cannot be imported twice at all). So before any run, :func:`_warm_up`
drives the same code paths once, importing everything the runs will need.
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from mockserver import BackgroundServer, MockConfig
from mockserver import create_app as create_mock_app
from shim import Config, create_app
from shim.testing import aimlapi_mock


def pytest_configure(config: pytest.Config) -> None:
    # ``pytest_plugins`` is only allowed in the root conftest; this keeps pytester (and
    # its fixtures) to the runs that collect these tests.
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


def _speak(base_url: str) -> None:
    with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as client:
        with pytest.raises(openai.APIError):  # the queued fault
            client.audio.speech.create(model="tts-1", voice="nova", input="Hi")
        client.audio.speech.create(model="tts-1", voice="nova", input="Hi")

    async def speak_async() -> None:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0) as client:
            await client.audio.speech.create(model="tts-1", voice="nova", input="Hi")

    asyncio.run(speak_async())


@pytest.fixture(scope="session", autouse=True)
def _warm_up() -> None:
    mock_app = create_mock_app(MockConfig())
    with BackgroundServer(mock_app) as mock:
        shim = BackgroundServer(
            create_app(Config(upstream_url=mock.url, tts_retries=0, cache=False))
        )
        with shim:
            mock_app.state.scenario.push([{"route": "tts", "fault": "reset", "times": 1}])
            _speak(shim.url + "/v1")
    with aimlapi_mock(steps=[{"fault": "reset"}]):
        with httpx.Client() as http, pytest.raises(httpx.RemoteProtocolError):
            http.post("https://api.aimlapi.com/v1/tts", json={}, headers={"authorization": "k"})

        async def post() -> None:
            async with httpx.AsyncClient() as http:
                await http.post("https://api.aimlapi.com/v1/tts", json={})

        asyncio.run(post())


@pytest.fixture(autouse=True)
def _quiet_ini(pytester: pytest.Pytester) -> None:
    # A user's project would set this; without it pytest-asyncio warns on every run.
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
