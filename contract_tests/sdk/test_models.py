"""OpenAI side, models and voices: the SDK's list and retrieve, and raw HTTP.

All answered by the shim itself, with no upstream call, so every case here also runs
with ``--live`` at no cost.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from contract_tests.conftest import LOOPBACK_TLS, SDK, SDK_VERSION
from shim.testing import ShimServer

pytestmark = pytest.mark.live(billed=0)

BARE_IDS = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
ALL_IDS = BARE_IDS + ["openai/" + i for i in BARE_IDS]


async def test_the_sdk_lists_every_speech_model_in_both_forms(sdk: SDK) -> None:
    page = await sdk.call("models.list")

    assert sorted(m.id for m in page.data) == sorted(ALL_IDS)
    assert {m.object for m in page.data} == {"model"}
    assert {m.owned_by for m in page.data} == {"openai"}
    assert all(m.created > 1_600_000_000 for m in page.data)


@pytest.mark.parametrize("model_id", ALL_IDS)
async def test_the_sdk_retrieves_each_model(sdk: SDK, model_id: str) -> None:
    model = await sdk.call("models.retrieve", model_id)

    assert model.id == model_id
    assert model.object == "model"
    assert model.owned_by == "openai"


def test_the_sdk_finds_a_prefixed_id_however_it_sends_the_slash(tts_shim: ShimServer) -> None:
    client = openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-test-key-0000")
    with client:
        raw = client.models.with_raw_response.retrieve("openai/tts-1-hd")

    # openai>=2.30.0 percent-encodes path parameters; older releases send the slash.
    sent = b"openai%2Ftts-1-hd" if SDK_VERSION >= (2, 30, 0) else b"openai/tts-1-hd"
    assert raw.http_request.url.raw_path == b"/v1/models/" + sent
    assert raw.parse().id == "openai/tts-1-hd"


@pytest.mark.parametrize(
    "path", ["/models/openai/tts-1-hd", "/models/openai%2Ftts-1-hd", "/models/openai%2ftts-1-hd"]
)
def test_raw_http_finds_the_model_with_a_raw_or_encoded_slash(
    tts_shim: ShimServer, path: str
) -> None:
    with httpx.Client(base_url=tts_shim.base_url, verify=LOOPBACK_TLS) as http:
        response = http.get(path, headers={"authorization": "Bearer sk-test-key-0000"})

    assert response.request.url.raw_path == ("/v1" + path).encode()
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": "openai/tts-1-hd",
        "object": "model",
        "created": response.json()["created"],
        "owned_by": "openai",
    }


@pytest.mark.parametrize("model_id", ["gpt-4o", "openai/whisper-1", "tts-2"])
async def test_an_unknown_model_is_not_found(sdk: SDK, model_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.call("models.retrieve", model_id)

    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


async def test_voices_are_listed_as_id_and_name(sdk: SDK) -> None:
    body = await sdk.call("get", "/audio/voices", cast_to=object)

    ids = [v["id"] for v in body["data"]]
    assert ids[0] == "alloy"
    assert {"coral", "verse", "shimmer"} <= set(ids)
    assert all(set(v) == {"id", "name"} and v["name"] for v in body["data"])
    assert body["voices"] == body["data"]
