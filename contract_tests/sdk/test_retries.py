"""OpenAI side, retries: what the SDK's own retry loop does with the shim's replies.

The SDK retries 408, 409, 429, 5xx and connection errors unless ``x-should-retry``
says otherwise, waiting ``retry-after`` when it is reasonable. The shim here makes no
retries of its own (``tts_retries=0``), so every generation in the mock's journal is
one the SDK asked for; the SDK's waits are recorded instead of slept, so nothing here
depends on a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import openai
import openai._base_client
import pytest

from contract_tests.conftest import SDK, SDK_VERSION
from shim.testing import ShimServer


class _Module:
    """A module with its ``sleep`` replaced."""

    def __init__(self, module: ModuleType, sleep: Callable[[float], Any]) -> None:
        self._module = module
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


@pytest.fixture
def sdk_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every wait the SDK takes before a retry, in seconds (sync ``time.sleep`` and async
    ``anyio.sleep`` in ``openai._base_client``, in every supported release)."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def async_sleep(seconds: float) -> None:
        waits.append(seconds)

    base = openai._base_client
    monkeypatch.setattr(base, "time", _Module(base.time, sleep))
    monkeypatch.setattr(base, "anyio", _Module(base.anyio, async_sleep))
    return waits


@pytest.fixture(params=["sync", "async"])
async def retrying_sdk(request: pytest.FixtureRequest, tts_shim_factory: Any) -> Any:
    """The SDK with its default two retries, on a shim that retries nothing itself."""
    shim: ShimServer = tts_shim_factory(tts_retries=0)
    client = SDK(request.param, shim, max_retries=2)
    yield client
    await client.aclose()


async def test_a_rate_limit_is_retried_after_the_retry_after_given(
    retrying_sdk: SDK, tts_mock: Any, sdk_waits: list[float]
) -> None:
    tts_mock.scenario([{"status": 429, "headers": {"retry-after": "7"}}])

    audio = await retrying_sdk.speech(input="Hi", response_format="wav")

    assert audio.startswith(b"RIFF")
    assert sdk_waits == [7.0]
    assert [e["status"] for e in tts_mock.requests] == [429, 201]


async def test_retry_after_ms_reaches_the_sdk_as_seconds(
    retrying_sdk: SDK, tts_mock: Any, sdk_waits: list[float]
) -> None:
    tts_mock.scenario([{"status": 503, "headers": {"retry-after-ms": "2500"}}])

    await retrying_sdk.speech(input="Hi")

    assert sdk_waits == [2.5]
    assert len(tts_mock.requests) == 2


async def test_a_long_retry_after_is_honoured_up_to_the_sdks_cap(
    retrying_sdk: SDK, tts_mock: Any, sdk_waits: list[float]
) -> None:
    # Past the shim's --max-retry-wait, so the wait is left to the client. openai>=2.52.0
    # waits up to 120 s as told; older releases, up to 60 s, and back off instead.
    tts_mock.scenario([{"status": 429, "headers": {"retry-after": "100"}}])

    await retrying_sdk.speech(input="Hi")

    (wait,) = sdk_waits
    if SDK_VERSION >= (2, 52, 0):
        assert wait == 100.0
    else:
        assert 0 < wait <= 8.0  # the SDK's own backoff: 0.5 s doubling, at most 8 s
    assert len(tts_mock.requests) == 2


async def test_server_errors_are_retried_with_backoff_until_success(
    retrying_sdk: SDK, tts_mock: Any, sdk_waits: list[float]
) -> None:
    tts_mock.scenario([{"status": 500}, {"status": 502}])

    audio = await retrying_sdk.speech(input="Hi", response_format="wav")

    assert audio.startswith(b"RIFF")
    assert len(sdk_waits) == 2
    assert all(0 < wait <= 8.0 for wait in sdk_waits)
    assert [e["status"] for e in tts_mock.requests] == [500, 502, 201]


async def test_a_connection_dropped_after_the_request_is_not_paid_twice(
    retrying_sdk: SDK, tts_mock: Any, sdk_waits: list[float]
) -> None:
    # The API may have billed the generation before it hung up: neither the shim nor
    # the SDK (x-should-retry: false) sends it again.
    tts_mock.scenario([{"fault": "reset", "times": 3}])

    with pytest.raises(openai.InternalServerError) as caught:
        await retrying_sdk.speech(input="Hi", response_format="wav")

    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert sdk_waits == []
    assert len(tts_mock.requests) == 1


async def test_retries_give_up_after_max_retries_with_the_last_error(
    retrying_sdk: SDK, tts_mock: Any, sdk_waits: list[float]
) -> None:
    tts_mock.scenario([{"status": 503, "times": 3}])

    with pytest.raises(openai.InternalServerError) as caught:
        await retrying_sdk.speech(input="Hi")

    assert caught.value.status_code == 503
    assert len(sdk_waits) == 2
    assert len(tts_mock.requests) == 3
    # The error names the last upstream request, so support can find it.
    assert caught.value.request_id == tts_mock.requests[-1]["request_id"]


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404])
async def test_client_errors_are_final(
    retrying_sdk: SDK, tts_mock: Any, sdk_waits: list[float], status: int
) -> None:
    tts_mock.scenario([{"status": status}])

    with pytest.raises(openai.APIStatusError) as caught:
        await retrying_sdk.speech(input="Hi")

    assert caught.value.status_code == status
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert sdk_waits == []
    assert len(tts_mock.requests) == 1


@pytest.mark.parametrize(
    "steps",
    [
        [{"shape": "metadata-only"}],  # billed, but no audio to fetch
        [{"route": "audio", "status": 404, "times": 3}],  # the download fails for good
    ],
    ids=["no-audio-in-reply", "download-failed"],
)
async def test_a_502_after_a_billed_generation_is_not_retried(
    retrying_sdk: SDK, tts_mock: Any, sdk_waits: list[float], steps: list[dict[str, Any]]
) -> None:
    # The SDK would retry a 502, and pay again: x-should-retry: false stops it.
    tts_mock.scenario(steps)

    with pytest.raises(openai.InternalServerError) as caught:
        await retrying_sdk.speech(input="Hi")

    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert sdk_waits == []
    assert len(tts_mock.requests) == 1


async def test_rate_limit_retry_after_reaches_the_sdk(tts_shim: ShimServer, sdk: SDK) -> None:
    tts_shim.upstream.scenario([{"status": 429, "headers": {"retry-after": "42"}}])

    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.speech(input="Hi")
    assert caught.value.response.headers["retry-after"] == "42"
