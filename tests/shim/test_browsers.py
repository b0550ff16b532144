"""The browser gate on its own: Host check, Origin refusal, CORS, in-process."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from shim.browsers import EXPOSED_HEADERS, TARGET_HOST, BrowserGate, _split_host
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


async def _direct(
    config: Config, headers: list[tuple[bytes, bytes]], **scope: Any
) -> tuple[int, bytes, Inner]:
    """Call the gate with a scope of its own (what httpx cannot send: no Host, two
    Hosts, an absolute-form target); the status, the body and the app behind it."""
    inner = Inner()
    messages: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        messages.append(message)

    request = {"type": "http", "method": "GET", "path": "/v1/models", "headers": headers}
    request.update({"server": ("127.0.0.1", 8000), "scheme": "http", **scope})
    await BrowserGate(inner, config)(request, receive, send)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return messages[0]["status"], body, inner


async def test_a_request_without_host_passes() -> None:
    # HTTP/1.0 without Host: no browser sends that, so it cannot be DNS rebinding.
    status, _, _ = await _direct(Config(), [])

    assert status == 200


OURS = (b"host", b"127.0.0.1:8000")
FOREIGN = (b"host", b"evil.example")


@pytest.mark.parametrize("hosts", [[FOREIGN, OURS], [OURS, FOREIGN], [OURS, OURS]])
@pytest.mark.parametrize("settings", [{}, {"allowed_hosts": ("*",)}, {"host": "0.0.0.0"}])
async def test_two_host_headers_are_a_400_with_or_without_the_check(
    hosts: list[tuple[bytes, bytes]], settings: dict[str, Any]
) -> None:
    # The check would read one of them and the app (Starlette: the first) maybe another.
    status, body, inner = await _direct(Config(**settings), hosts)

    assert status == 400
    assert json.loads(body)["error"] == {
        "message": "The request has 2 Host headers; send exactly one.",
        "type": "invalid_request_error",
        "param": None,
        "code": "duplicate_host",
    }
    assert inner.calls == 0


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("evil.example", 400),
        ("evil.example:8000", 400),
        ("127.0.0.1", 400),  # the default port: not the one the shim is on
        ("127.0.0.1:8000", 200),
        ("localhost:8000", 200),
        (None, 200),  # an absolute-form target naming no host (``*``): the Host decides
    ],
)
async def test_an_absolute_form_target_must_name_the_shim(target: str | None, status: int) -> None:
    got, body, inner = await _direct(Config(), [OURS], **{TARGET_HOST: target})

    assert got == status
    assert inner.calls == (1 if status == 200 else 0)
    if status == 400:
        error = json.loads(body)["error"]
        assert error["code"] == "host_not_allowed"
        assert target is not None
        assert target in error["message"]


@pytest.mark.parametrize("settings", [{"allowed_hosts": ("*",)}, {"host": "0.0.0.0"}])
async def test_a_foreign_absolute_form_target_passes_with_the_check_off(
    settings: dict[str, Any],
) -> None:
    status, _, inner = await _direct(Config(**settings), [OURS], **{TARGET_HOST: "evil.example"})

    assert status == 200
    assert inner.calls == 1


async def test_an_allowed_host_may_be_named_in_the_request_line() -> None:
    config = Config(host="0.0.0.0", allowed_hosts=("tts.internal",))

    allowed, _, _ = await _direct(config, [OURS], **{TARGET_HOST: "tts.internal:9"})
    refused, _, _ = await _direct(config, [OURS], **{TARGET_HOST: "evil.example"})

    assert (allowed, refused) == (200, 400)


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
