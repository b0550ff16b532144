"""``aimlapi_mock``: a user's httpx traffic for the AI/ML API, answered in-process."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CLIENT_CODE = '''
import asyncio
import httpx

KEY = {"authorization": "Bearer my-aiml-key-5678"}
BODY = {"model": "openai/tts-1-hd", "text": "Hi", "voice": "coral", "response_format": "wav"}


def speak_sync():
    """What a user's own AI/ML client might do: generate, then download."""
    with httpx.Client() as http:
        reply = http.post("https://api.aimlapi.com/v1/tts", json=BODY, headers=KEY)
        reply.raise_for_status()
        return http.get(reply.json()["audio"]["url"]).content


async def speak_async():
    async with httpx.AsyncClient() as http:
        reply = await http.post("https://api.aimlapi.com/v1/tts", json=BODY, headers=KEY)
        reply.raise_for_status()
        return (await http.get(reply.json()["audio"]["url"])).content
'''


def test_the_fixture_serves_sync_and_async_clients(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(client=CLIENT_CODE)
    pytester.makepyfile(
        """
        import asyncio
        from client import speak_async, speak_sync

        def test_sync(aimlapi_mock):
            assert speak_sync().startswith(b"RIFF")
            assert aimlapi_mock.url == "https://api.aimlapi.com"
            (call,) = aimlapi_mock.requests
            (download,) = aimlapi_mock.downloads
            assert call["json"]["text"] == "Hi"
            assert call["headers"]["authorization"] == "Bearer ****5678"
            assert call["headers"]["host"] == "api.aimlapi.com"
            assert download["headers"]["host"] == "cdn.aimlapi.com"

        def test_async(aimlapi_mock):
            assert asyncio.run(speak_async()).startswith(b"RIFF")
            assert [e["route"] for e in aimlapi_mock.journal] == ["tts", "audio"]

        def test_a_sync_call_from_async_code(aimlapi_mock):
            async def main():
                return await speak_async(), speak_sync()  # a blocking call in a running loop
            first, second = asyncio.run(main())
            assert first == second
        """
    )

    pytester.runpytest().assert_outcomes(passed=3)


def test_the_marker_and_scenario_drive_errors_and_faults(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(client=CLIENT_CODE)
    pytester.makepyfile(
        """
        import asyncio
        import httpx, pytest
        from client import speak_async, speak_sync

        @pytest.mark.tts_mock(steps=[{"status": 429, "headers": {"retry-after": "3"}}])
        def test_rate_limited(aimlapi_mock):
            with pytest.raises(httpx.HTTPStatusError) as caught:
                speak_sync()
            assert caught.value.response.status_code == 429
            assert caught.value.response.headers["retry-after"] == "3"
            assert caught.value.response.json()["message"] == "Too Many Requests"
            assert speak_sync().startswith(b"RIFF")  # the step is used up

        def test_a_dropped_connection(aimlapi_mock):
            aimlapi_mock.scenario([{"fault": "reset"}])
            with pytest.raises(httpx.RemoteProtocolError):
                asyncio.run(speak_async())

        @pytest.mark.tts_mock(shape="url-string")
        def test_shape(aimlapi_mock):
            with pytest.raises(TypeError):  # this client only knows {"audio": {"url": ...}}
                speak_sync()

        def test_each_test_gets_a_fresh_mock(aimlapi_mock):
            assert aimlapi_mock.journal == []
            assert speak_sync().startswith(b"RIFF")
        """
    )

    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=4)


def test_only_loopback_and_other_routers_see_other_hosts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx, pytest, respx

        def test_elsewhere(aimlapi_mock):
            with pytest.raises(AssertionError, match="not mocked"):
                httpx.get("https://example.com/")
            assert aimlapi_mock.journal == []

        def test_alongside_a_users_own_router(aimlapi_mock):
            with respx.mock(assert_all_called=False) as router:
                router.get("https://example.com/").respond(204)
                assert httpx.get("https://example.com/").status_code == 204
                r = httpx.post("https://api.aimlapi.com/v1/tts", json={"text": "Hi"},
                               headers={"authorization": "Bearer k"})
            assert r.status_code == 400  # the mock's own validation: no model
            assert len(aimlapi_mock.requests) == 1

        def test_loopback_goes_through(aimlapi_mock, tts_mock):
            r = httpx.post(tts_mock.url + "/v1/tts", json={"model": "openai/tts-1", "text": "x"},
                           headers={"authorization": "Bearer k"})
            assert r.status_code == 201
            assert len(tts_mock.requests) == 1
            assert aimlapi_mock.journal == []
        """
    )

    pytester.runpytest().assert_outcomes(passed=3)
