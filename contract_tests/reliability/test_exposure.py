"""Who gets in: client keys on every ``/v1`` route, none on health, and no start-up
that would let strangers spend the server-side key. Real sockets and processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import ServeProcess, listening, routes
from shim.keys import CATALOG_PATHS
from shim.testing import MockUpstream, ShimServer

SERVER_KEY = "sk-exposure-server-9a1f"
CLIENT_KEY = "ck-exposure-client-4c2e"
SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Who goes there?"}
CHAT = {"model": "tts-1", "messages": [{"role": "user", "content": "Who goes there?"}]}

V1_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/audio/speech", SPEECH),
    ("POST", "/v1/chat/completions", CHAT),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/tts-1", None),
    ("GET", "/v1/audio/voices", None),
    ("GET", "/v1/audio/models", None),
    ("GET", "/v1/unknown", None),
]
OPEN_ROUTES = ["/healthz", "/readyz", "/openapi.json"]

BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"authorization": ""},
    {"authorization": "Bearer"},
    {"authorization": f"Basic {CLIENT_KEY}"},
    {"authorization": f"Bearer {CLIENT_KEY}x"},
    {"authorization": f"Bearer {CLIENT_KEY[:-1]}"},
    {"authorization": f"Bearer {SERVER_KEY}"},  # the server key is not a client key
    {"authorization": CLIENT_KEY},
    {"x-api-key": CLIENT_KEY},
]


@pytest.fixture
def guarded(tts_shim_factory: Callable[..., ShimServer]) -> ShimServer:
    # private_catalog: the model and voice lists need a key too (by default they do not).
    return tts_shim_factory(
        upstream_key=SERVER_KEY,
        client_keys=(CLIENT_KEY, "ck-second-0002"),
        private_catalog=True,
    )


@pytest.mark.parametrize(("method", "path", "body"), V1_ROUTES)
def test_every_v1_route_refuses_without_a_client_key(
    guarded: ShimServer, tts_mock: MockUpstream, method: str, path: str, body: Any
) -> None:
    with httpx.Client(base_url=guarded.url, verify=LOOPBACK_TLS) as client:
        for headers in BAD_CREDENTIALS:
            response = client.request(method, path, json=body, headers=headers)

            assert response.status_code == 401, (headers, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key"
            assert CLIENT_KEY not in response.text
            assert SERVER_KEY not in response.text
    assert routes(tts_mock, "tts") == []  # refused before anything was spent


@pytest.mark.parametrize(("method", "path", "body"), V1_ROUTES)
def test_every_v1_route_admits_a_client_key(
    guarded: ShimServer, tts_mock: MockUpstream, method: str, path: str, body: Any
) -> None:
    for header in (f"Bearer {CLIENT_KEY}", "bearer ck-second-0002"):
        response = httpx.request(
            method,
            guarded.url + path,
            json=body,
            headers={"authorization": header},
            verify=LOOPBACK_TLS,
        )

        assert response.status_code == (404 if path == "/v1/unknown" else 200)
    spoken = routes(tts_mock, "tts")
    # The server key pays; the client's key never goes upstream.
    assert all(e["headers"]["authorization"].endswith(SERVER_KEY[-4:]) for e in spoken)
    assert all(CLIENT_KEY[-4:] not in e["headers"]["authorization"] for e in spoken)


@pytest.mark.parametrize(("method", "path", "body"), V1_ROUTES)
def test_by_default_only_the_catalogue_answers_without_a_key(
    tts_shim_factory: Callable[..., ShimServer],
    tts_mock: MockUpstream,
    method: str,
    path: str,
    body: Any,
) -> None:
    shim = tts_shim_factory(upstream_key=SERVER_KEY, client_keys=(CLIENT_KEY,))

    response = httpx.request(method, shim.url + path, json=body, verify=LOOPBACK_TLS)

    catalogue = method == "GET" and path.startswith(CATALOG_PATHS)
    assert response.status_code == (200 if catalogue else 401), response.text
    assert SERVER_KEY not in response.text
    assert routes(tts_mock, "tts") == []


@pytest.mark.parametrize("path", OPEN_ROUTES)
def test_health_and_the_document_need_no_key(guarded: ShimServer, path: str) -> None:
    response = httpx.get(guarded.url + path, verify=LOOPBACK_TLS)

    assert response.status_code == 200
    assert SERVER_KEY not in response.text


def test_pass_through_needs_a_bearer_token(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream
) -> None:
    shim = tts_shim_factory()

    refused = httpx.post(shim.url + "/v1/audio/speech", json=SPEECH, verify=LOOPBACK_TLS)
    served = httpx.post(
        shim.url + "/v1/audio/speech",
        json=SPEECH,
        headers={"authorization": "Bearer sk-own"},
        verify=LOOPBACK_TLS,
    )

    assert refused.status_code == 401
    assert served.status_code == 200
    (generation,) = routes(tts_mock, "tts")
    assert generation["headers"]["authorization"] == "Bearer ****-own"


def test_an_exposed_server_key_is_refused_at_start_up(
    serve_process: Callable[..., ServeProcess],
) -> None:
    served = serve_process("--host", "0.0.0.0", env={"AIMLAPI_KEY": SERVER_KEY}, wait=False)

    assert served.proc.wait(20) == 2
    assert "--allow-open" in served.log
    assert SERVER_KEY not in served.log
    assert not listening(served.port)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--allow-open",), {"AIMLAPI_KEY": SERVER_KEY}),
        ((), {"AIMLAPI_KEY": SERVER_KEY, "TTS_SHIM_API_KEYS": CLIENT_KEY}),
        ((), {}),  # no server key: nothing of ours to spend
    ],
)
def test_exposure_is_allowed_when_it_is_safe_or_asked_for(
    serve_process: Callable[..., ServeProcess], args: tuple[str, ...], env: dict[str, str]
) -> None:
    served = serve_process("--host", "0.0.0.0", *args, env=env)

    assert httpx.get(served.url + "/healthz", verify=LOOPBACK_TLS).status_code == 200
    served.terminate()
    assert served.proc.wait(20) == 0


def test_a_port_in_use_is_a_clear_failure(serve_process: Callable[..., ServeProcess]) -> None:
    first = serve_process()

    clash = serve_process("--port", str(first.port), wait=False)  # the last --port wins

    assert clash.proc.wait(20) != 0
    [line] = clash.log.splitlines()  # one line, no traceback
    assert line.startswith(f"Error: cannot listen on 127.0.0.1:{first.port}: ")
    assert "address already in use" in line.lower()
    assert httpx.get(first.url + "/healthz", verify=LOOPBACK_TLS).status_code == 200


# -- client keys without a server key ---------------------------------------------------

OWN_KEY = "sk-own-aiml-key-7f3e"  # a client's own AI/ML key, sent in the key header


def test_client_keys_without_a_server_key_refuse_to_start(
    serve_process: Callable[..., ServeProcess],
) -> None:
    # Before: it started, and sent each client's *shim* key to the AI/ML API as the key.
    served = serve_process(env={"TTS_SHIM_API_KEYS": CLIENT_KEY}, wait=False)

    assert served.proc.wait(20) == 2
    assert "AIMLAPI_KEY" in served.log
    assert "--upstream-key-header" in served.log
    assert CLIENT_KEY not in served.log
    assert not listening(served.port)


def test_the_key_header_carries_each_clients_own_key(
    serve_process: Callable[..., ServeProcess], tts_mock: MockUpstream
) -> None:
    served = serve_process(
        "--upstream-url",
        tts_mock.url,
        "--upstream-key-header",
        "X-AIMLAPI-Key",
        env={"TTS_SHIM_API_KEYS": CLIENT_KEY},
    )
    url = served.url + "/v1/audio/speech"
    shim_key = {"authorization": f"Bearer {CLIENT_KEY}"}

    paid = httpx.post(
        url, json=SPEECH, headers={**shim_key, "x-aimlapi-key": OWN_KEY}, verify=LOOPBACK_TLS
    )
    no_own_key = httpx.post(url, json=SPEECH, headers=shim_key, verify=LOOPBACK_TLS)
    no_shim_key = httpx.post(
        url, json=SPEECH, headers={"x-aimlapi-key": OWN_KEY}, verify=LOOPBACK_TLS
    )

    assert paid.status_code == 200
    assert no_own_key.status_code == 401
    assert "X-AIMLAPI-Key".lower() in no_own_key.json()["error"]["message"].lower()
    assert no_shim_key.status_code == 401
    (generation,) = routes(tts_mock, "tts")  # only the call with both keys was paid
    assert generation["headers"]["authorization"] == f"Bearer ****{OWN_KEY[-4:]}"
    assert generation["headers"].get("x-aimlapi-key") is None  # not relayed as a header
    served.terminate()
    assert served.proc.wait(20) == 0
    assert OWN_KEY not in served.log
    assert CLIENT_KEY not in served.log


def test_the_key_header_and_a_server_key_are_one_too_many(
    serve_process: Callable[..., ServeProcess],
) -> None:
    served = serve_process(
        "--upstream-key-header", "X-AIMLAPI-Key", env={"AIMLAPI_KEY": SERVER_KEY}, wait=False
    )

    assert served.proc.wait(20) == 2
    assert "not both" in served.log
    assert SERVER_KEY not in served.log


def test_the_openai_sdk_sends_its_own_key_in_the_key_header(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream
) -> None:
    shim = tts_shim_factory(client_keys=(CLIENT_KEY,), upstream_key_header="X-AIMLAPI-Key")
    client = openai.OpenAI(
        base_url=shim.base_url,
        api_key=CLIENT_KEY,
        default_headers={"X-AIMLAPI-Key": OWN_KEY},
        max_retries=0,
    )

    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="Mine to pay.")

    assert audio.content
    (generation,) = routes(tts_mock, "tts")
    assert generation["headers"]["authorization"] == f"Bearer ****{OWN_KEY[-4:]}"
