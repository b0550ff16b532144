"""Who gets in: client keys on every ``/v1`` route, none on health, and no start-up
that would let strangers spend the server-side key. Real sockets and processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

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
    with httpx.Client(base_url=guarded.url) as client:
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
            method, guarded.url + path, json=body, headers={"authorization": header}
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

    response = httpx.request(method, shim.url + path, json=body)

    catalogue = method == "GET" and path.startswith(CATALOG_PATHS)
    assert response.status_code == (200 if catalogue else 401), response.text
    assert SERVER_KEY not in response.text
    assert routes(tts_mock, "tts") == []


@pytest.mark.parametrize("path", OPEN_ROUTES)
def test_health_and_the_document_need_no_key(guarded: ShimServer, path: str) -> None:
    response = httpx.get(guarded.url + path)

    assert response.status_code == 200
    assert SERVER_KEY not in response.text


def test_pass_through_needs_a_bearer_token(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream
) -> None:
    shim = tts_shim_factory()

    refused = httpx.post(shim.url + "/v1/audio/speech", json=SPEECH)
    served = httpx.post(
        shim.url + "/v1/audio/speech", json=SPEECH, headers={"authorization": "Bearer sk-own"}
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

    assert httpx.get(served.url + "/healthz").status_code == 200
    served.terminate()
    assert served.proc.wait(20) == 0


def test_a_port_in_use_is_a_clear_failure(serve_process: Callable[..., ServeProcess]) -> None:
    first = serve_process()

    clash = serve_process("--port", str(first.port), wait=False)  # the last --port wins

    assert clash.proc.wait(20) != 0
    assert "address already in use" in clash.log.lower()
    assert httpx.get(first.url + "/healthz").status_code == 200
