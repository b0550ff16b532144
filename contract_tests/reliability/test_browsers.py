"""Web pages: a page on another site cannot make a visitor's browser spend credits,
DNS rebinding finds no shim, and pages the operator trusts get proper CORS.

The set-up is the README's default: loopback, ``AIMLAPI_KEY`` on the server, no client
keys. Real uvicorn servers on loopback; the mock's journal counts what was paid.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import ServeProcess, routes
from shim.testing import MockUpstream, ShimServer
from tests.figures import record

SERVER_KEY = "sk-browsers-server-5d1c"
CLIENT_KEY = "ck-browsers-client-88a0"
SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Who sent this page?"}
CHAT = {"model": "tts-1", "messages": [{"role": "user", "content": "Who sent this page?"}]}
TRUSTED = "https://app.example"
EVIL = "https://evil.example"
#: What a page's ``fetch`` sends without a preflight: a "simple" cross-origin POST.
SIMPLE = {"content-type": "text/plain;charset=UTF-8"}
#: Headers the OpenAI JS SDK adds, which a preflight must allow.
SDK_HEADERS = "authorization, content-type, x-stainless-lang, x-stainless-retry-count"


def _host(shim: ShimServer) -> str:
    return shim.url.split("://", 1)[1]


def _port(shim: ShimServer | ServeProcess) -> int:
    return int(shim.url.rsplit(":", 1)[1])


@pytest.fixture
def default(tts_shim_factory: Callable[..., ShimServer]) -> ShimServer:
    return tts_shim_factory(upstream_key=SERVER_KEY)


# -- pages on other sites -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"), [("/v1/audio/speech", SPEECH), ("/v1/chat/completions", CHAT)]
)
@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:1", TRUSTED])
def test_a_cross_origin_post_is_refused_before_anything_is_paid(
    default: ShimServer, tts_mock: MockUpstream, path: str, body: object, origin: str
) -> None:
    # Before: a 200 with the audio, and a paid generation, for any page on any site.
    response = httpx.post(
        default.url + path,
        content=json.dumps(body),
        headers={**SIMPLE, "origin": origin},
        verify=LOOPBACK_TLS,
    )

    assert response.status_code == 403
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "origin_not_allowed"
    assert "--cors-origin" in error["message"]
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["x-request-id"].startswith("req_")
    assert routes(tts_mock, "tts") == []  # zero generations
    record("cross_origin_post", path=path, origin=origin, status=403, upstream_calls=0)


def test_every_route_and_method_refuses_a_foreign_origin(
    default: ShimServer, tts_mock: MockUpstream
) -> None:
    with httpx.Client(
        base_url=default.url, headers={"origin": EVIL}, verify=LOOPBACK_TLS
    ) as client:
        answers = [
            client.get("/v1/models"),
            client.get("/healthz"),
            client.options(
                "/v1/audio/speech",
                headers={"access-control-request-method": "POST"},
            ),
            client.post("/v1/audio/speech", json=SPEECH),
        ]

    assert [a.status_code for a in answers] == [403] * len(answers)
    assert routes(tts_mock, "tts") == []


def test_requests_without_an_origin_are_served_as_before(
    default: ShimServer, tts_mock: MockUpstream
) -> None:
    response = httpx.post(default.url + "/v1/audio/speech", json=SPEECH, verify=LOOPBACK_TLS)

    assert response.status_code == 200
    assert response.content
    assert "access-control-allow-origin" not in response.headers
    assert len(routes(tts_mock, "tts")) == 1


# -- pages the operator trusts ------------------------------------------------------


@pytest.mark.parametrize("client_keys", [(), (CLIENT_KEY,)])
def test_a_trusted_origin_gets_cors(
    tts_shim_factory: Callable[..., ShimServer],
    tts_mock: MockUpstream,
    client_keys: tuple[str, ...],
) -> None:
    # Before: OPTIONS was a 405, and no Access-Control-* header was ever sent.
    shim = tts_shim_factory(
        upstream_key=SERVER_KEY, client_keys=client_keys, cors_origins=(TRUSTED,)
    )
    auth = {"authorization": f"Bearer {CLIENT_KEY}"} if client_keys else {}

    # The preflight carries no Authorization, even when client keys are required.
    preflight = httpx.options(
        shim.url + "/v1/audio/speech",
        headers={
            "origin": TRUSTED,
            "access-control-request-method": "POST",
            "access-control-request-headers": SDK_HEADERS,
        },
        verify=LOOPBACK_TLS,
    )
    spoken = httpx.post(
        shim.url + "/v1/audio/speech",
        json=SPEECH,
        headers={"origin": TRUSTED, **auth},
        verify=LOOPBACK_TLS,
    )
    listed = httpx.get(
        shim.url + "/v1/models", headers={"origin": TRUSTED, **auth}, verify=LOOPBACK_TLS
    )

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == TRUSTED
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == SDK_HEADERS
    assert "origin" in preflight.headers["vary"].lower()
    for response in (spoken, listed):
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == TRUSTED
        assert "origin" in response.headers["vary"].lower()
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed
        assert "x-should-retry" in exposed
    assert spoken.content
    assert len(routes(tts_mock, "tts")) == 1  # the preflight paid nothing


def test_a_trusted_origin_is_matched_exactly(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream
) -> None:
    shim = tts_shim_factory(upstream_key=SERVER_KEY, cors_origins=("HTTPS://App.Example:443/",))

    near_misses = ["http://app.example", "https://app.example:8443", "https://app.example.evil"]
    answers = [
        httpx.post(
            shim.url + "/v1/audio/speech",
            json=SPEECH,
            headers={"origin": origin},
            verify=LOOPBACK_TLS,
        )
        for origin in [*near_misses, TRUSTED]
    ]

    assert [a.status_code for a in answers] == [403, 403, 403, 200]
    assert len(routes(tts_mock, "tts")) == 1


# -- Host: DNS rebinding --------------------------------------------------------------


def test_a_foreign_host_is_refused_on_loopback(default: ShimServer, tts_mock: MockUpstream) -> None:
    # Before: any Host was served, so a rebound name reached the shim as same-origin.
    port = _port(default)
    with httpx.Client(base_url=default.url, verify=LOOPBACK_TLS) as client:
        foreign = [
            client.post("/v1/audio/speech", json=SPEECH, headers={"host": f"evil.example:{port}"}),
            client.post("/v1/audio/speech", json=SPEECH, headers={"host": "evil.example"}),
            client.get("/healthz", headers={"host": f"localhost:{port + 1}"}),
            client.get("/healthz", headers={"host": "localhost"}),
        ]
        own = [
            client.get("/healthz", headers={"host": f"127.0.0.1:{port}"}),
            client.get("/healthz", headers={"host": f"localhost:{port}"}),
            client.get("/healthz", headers={"host": f"LOCALHOST:{port}"}),
        ]

    assert [r.status_code for r in foreign] == [421] * len(foreign)
    for refused in foreign:
        assert refused.json()["error"]["code"] == "host_not_allowed"
        assert "--allowed-host" in refused.json()["error"]["message"]
    assert [r.status_code for r in own] == [200] * len(own)
    assert routes(tts_mock, "tts") == []


def test_allowed_hosts_add_names(
    tts_shim_factory: Callable[..., ShimServer], tts_mock: MockUpstream
) -> None:
    shim = tts_shim_factory(upstream_key=SERVER_KEY, allowed_hosts=("tts.internal", "a.b:81"))
    port = _port(shim)

    def status(host: str) -> int:
        return httpx.get(
            shim.url + "/healthz", headers={"host": host}, verify=LOOPBACK_TLS
        ).status_code

    assert status(f"tts.internal:{port}") == 200
    assert status("tts.internal") == 200  # named without a port: any port
    assert status("a.b:81") == 200
    assert status(f"a.b:{port}") == 421
    assert status(f"evil.example:{port}") == 421
    assert status(_host(shim)) == 200  # the defaults stay


def test_a_non_loopback_bind_checks_host_only_when_asked(
    serve_process: Callable[..., ServeProcess],
) -> None:
    # No server key: nothing of ours to spend, so a wildcard bind starts.
    open_bind = serve_process("--host", "0.0.0.0")
    checked = serve_process("--host", "0.0.0.0", "--allowed-host", "tts.internal")

    def status(served: ServeProcess, host: str) -> int:
        return httpx.get(
            served.url + "/healthz", headers={"host": host}, verify=LOOPBACK_TLS
        ).status_code

    assert status(open_bind, "evil.example") == 200  # a proxy's Host, say: not checked
    assert status(checked, "evil.example") == 421
    assert status(checked, f"tts.internal:{_port(checked)}") == 200
    assert status(checked, f"127.0.0.1:{_port(checked)}") == 200  # the address it was reached on


# -- no redirects built from Host --------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/audio/speech/"), ("POST", "/v1/chat/completions/")]
)
def test_a_trailing_slash_is_a_404_not_a_redirect(
    default: ShimServer, tts_mock: MockUpstream, method: str, path: str
) -> None:
    # Before: a 307 whose Location was built from the Host header.
    response = httpx.request(method, default.url + path, json=SPEECH, verify=LOOPBACK_TLS)

    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"]["message"].startswith("Unknown request URL")
    assert routes(tts_mock, "tts") == []
