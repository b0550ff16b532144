"""``/v1/models``, ``/v1/models/{id}`` and the voice and speech-model lists."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from shim import Config, create_app
from shim.catalog import MODELS, UPSTREAM_VOICES
from shim.testing import free_port

BARE_IDS = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
ALL_IDS = BARE_IDS + ["openai/" + i for i in BARE_IDS]


async def test_the_list_has_every_speech_model_in_both_id_forms(shim: Any) -> None:
    response = await shim().get("/v1/models")

    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    assert sorted(m["id"] for m in listing["data"]) == sorted(ALL_IDS)
    for model in listing["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model"
        assert model["owned_by"] == "openai"
        assert model["created"] == MODELS[model["id"]].created


@pytest.mark.parametrize(
    ("path", "model_id"),
    [
        ("/v1/models/tts-1-hd", "tts-1-hd"),
        ("/v1/models/openai/tts-1-hd", "openai/tts-1-hd"),
        ("/v1/models/openai%2Ftts-1-hd", "openai/tts-1-hd"),
        ("/v1/models/openai%2ftts-1-hd", "openai/tts-1-hd"),
        ("/v1/models/openai%2Fgpt-4o-mini-tts", "openai/gpt-4o-mini-tts"),
    ],
)
async def test_a_model_is_found_with_its_slash_raw_or_encoded(
    shim: Any, path: str, model_id: str
) -> None:
    response = await shim().get(path)

    assert response.request.url.raw_path == path.encode()  # httpx sent it as written
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": model_id,
        "object": "model",
        "created": MODELS[model_id].created,
        "owned_by": "openai",
    }


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/gpt-4o",
        "/v1/models/openai/gpt-4o",
        "/v1/models/openai%2Fwhisper-1",
        "/v1/models/",
    ],
)
async def test_an_unknown_model_is_model_not_found(shim: Any, path: str) -> None:
    response = await shim().get(path)

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert error["type"] == "invalid_request_error"


async def test_voices_are_listed_as_id_and_name(shim: Any) -> None:
    response = await shim().get("/v1/audio/voices")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [v["id"] for v in body["data"]] == list(UPSTREAM_VOICES)
    assert body["data"][0] == {"id": "alloy", "name": "Alloy"}
    assert all(set(v) == {"id", "name"} for v in body["data"])
    assert body["voices"] == body["data"]  # the key Open WebUI-style front ends read


async def test_speech_models_are_listed_for_front_ends(shim: Any) -> None:
    body = (await shim().get("/v1/audio/models")).json()

    assert sorted(m["id"] for m in body["models"]) == sorted(ALL_IDS)
    assert body["data"] == body["models"]


CATALOGUE = ["/v1/models", "/v1/models/tts-1", "/v1/audio/voices", "/v1/audio/models"]


@pytest.mark.parametrize("path", CATALOGUE)
async def test_the_catalogue_answers_without_a_client_key_by_default(shim: Any, path: str) -> None:
    client = shim(client_keys=("sk-other",), upstream_key="sk-server")
    client.headers.pop("authorization")

    assert (await client.get(path)).status_code == 200
    assert (await client.head(path)).status_code == 200
    # Only reading the lists is open: anything else on /v1 still needs a key.
    assert (await client.post(path, json={})).status_code == 401
    assert (await client.get("/v1/modelsx")).status_code == 401


@pytest.mark.parametrize("path", CATALOGUE)
async def test_a_private_catalogue_needs_a_client_key(shim: Any, path: str) -> None:
    client = shim(client_keys=("sk-other",), upstream_key="sk-server", private_catalog=True)
    client.headers.pop("authorization")

    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers={"authorization": "Bearer sk-other"})).status_code == 200


async def test_the_catalogue_never_calls_upstream(shim: Any, upstream: Any) -> None:
    client = shim()
    for path in ("/v1/models", "/v1/models/tts-1", "/v1/audio/voices", "/v1/audio/models"):
        await client.get(path)

    assert upstream.requests == []


# -- through a real socket: the server, not the test client, decodes the path ----------


@pytest.fixture(params=["h11", "httptools"])
def served(request: pytest.FixtureRequest) -> Iterator[str]:
    """The shim under uvicorn on a loopback port; yields its root URL."""
    # The upstream is a closed port: a catalogue answer that went upstream would be a 502.
    app = create_app(Config(cache=False, upstream_url=f"http://127.0.0.1:{free_port()}"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections wait in the backlog until uvicorn accepts them
    server = uvicorn.Server(
        uvicorn.Config(app, http=request.param, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


@pytest.mark.parametrize("path", ["/v1/models/openai/tts-1-hd", "/v1/models/openai%2Ftts-1-hd"])
def test_a_real_server_decodes_an_encoded_slash(served: str, path: str) -> None:
    with httpx.Client(base_url=served, timeout=10) as client:
        response = client.get(path)

    assert response.request.url.raw_path == path.encode()
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "openai/tts-1-hd"


def test_a_real_server_answers_unknown_models_with_404(served: str) -> None:
    with httpx.Client(base_url=served, timeout=10) as client:
        response = client.get("/v1/models/openai%2Fgpt-4o")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
