"""The browser gate on its own: Host check, Origin refusal, CORS, in-process."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from shim.browsers import EXPOSED_HEADERS, BrowserGate, _split_host
from shim.config import Config


class Inner:
    """The app behind the gate: answers 200 and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


def gate(**settings: Any) -> tuple[httpx.AsyncClient, Inner]:
    inner = Inner()
    app = BrowserGate(inner, Config(**settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://shim"), inner


async def test_no_origin_passes_untouched() -> None:
    client, inner = gate()

    response = await client.post("/v1/audio/speech")

    assert response.status_code == 200
    assert inner.calls == 1
    assert not any(name.startswith("access-control") for name in response.headers)


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "", "http://shim"])
async def test_any_origin_is_refused_by_default(origin: str) -> None:
    client, inner = gate()

    response = await client.post("/v1/audio/speech", headers={"origin": origin})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "origin_not_allowed"
    assert response.headers["x-should-retry"] == "false"
    assert inner.calls == 0


async def test_a_listed_origin_gets_preflight_and_headers_without_the_app() -> None:
    client, inner = gate(cors_origins=("https://app.example",))
    headers = {"origin": "https://app.example"}

    preflight = await client.options(
        "/v1/audio/speech",
        headers={
            **headers,
            "access-control-request-method": "POST",
            "access-control-request-private-network": "true",
        },
    )
    calls_after_preflight = inner.calls
    simple = await client.post("/v1/audio/speech", headers=headers)

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-private-network"] == "true"
    assert calls_after_preflight == 0
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert simple.headers["vary"] == "Origin"
    assert simple.headers["access-control-expose-headers"] == ", ".join(EXPOSED_HEADERS)


async def test_a_listed_origin_may_not_use_other_methods() -> None:
    client, _ = gate(cors_origins=("https://app.example",))

    preflight = await client.options(
        "/v1/audio/speech",
        headers={"origin": "https://app.example", "access-control-request-method": "DELETE"},
    )

    assert preflight.status_code == 400


async def test_a_star_allows_every_origin() -> None:
    client, inner = gate(cors_origins=("*",))

    response = await client.post("/x", headers={"origin": "https://anyone.example"})

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert inner.calls == 1


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("shim", True),  # the address the request came in on (httpx's test transport)
        ("shim:80", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("localhost:81", False),
        ("evil.example", False),
        ("shim.evil.example", False),
        ("[::1]", False),
        ("", False),
    ],
)
async def test_hosts_on_loopback(host: str, allowed: bool) -> None:
    client, inner = gate()

    response = await client.get("/healthz", headers={"host": host})

    assert response.status_code == (200 if allowed else 421)
    assert inner.calls == (1 if allowed else 0)


async def test_a_request_without_host_passes() -> None:
    # HTTP/1.0 without Host: no browser sends that, so it cannot be DNS rebinding.
    inner = Inner()
    messages: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "server": ("x", 1)}
    await BrowserGate(inner, Config())(scope, receive, send)

    assert messages[0]["status"] == 200


@pytest.mark.parametrize(
    ("settings", "host", "status"),
    [
        ({"host": "0.0.0.0"}, "evil.example", 200),  # off on a non-loopback bind
        ({"host": "0.0.0.0", "allowed_hosts": ("tts.internal",)}, "evil.example", 421),
        ({"host": "0.0.0.0", "allowed_hosts": ("tts.internal",)}, "tts.internal:9", 200),
        ({"allowed_hosts": ("*",)}, "evil.example", 200),
        ({"allowed_hosts": ("tts.internal:81",)}, "tts.internal:82", 421),
    ],
)
async def test_allowed_hosts(settings: dict[str, Any], host: str, status: int) -> None:
    client, _ = gate(**settings)

    response = await client.get("/healthz", headers={"host": host})

    assert response.status_code == status


@pytest.mark.parametrize(
    ("host", "split"),
    [
        ("localhost", ("localhost", None)),
        ("localhost:8000", ("localhost", "8000")),
        ("[::1]", ("[::1]", None)),
        ("[::1]:8000", ("[::1]", "8000")),
        ("name.:80", ("name", "80")),
    ],
)
def test_split_host(host: str, split: tuple[str, str | None]) -> None:
    assert _split_host(host) == split
