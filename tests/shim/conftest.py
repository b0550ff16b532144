"""Fixtures: the shim app, in-process, in front of the mock AI/ML API on loopback.

Tests reach the shim through ``httpx.ASGITransport``; the shim reaches the project's one
fake upstream, :mod:`mockserver`, over a real socket (its client is aiohttp), on the
test process's loopback server (:mod:`tests.upstream`). Faults and odd replies are
queued as scenario steps (``upstream.scenario([...])``); what the shim sent is in
``upstream.journal``.
"""

from __future__ import annotations

import base64
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from shim import Config, create_app
from shim.state import State
from shim.testing import MockUpstream
from tests.upstream import mock_upstream

#: The bearer token the test clients send (passed through to the mock).
CLIENT_TOKEN = "sk-client-key-1234"


@pytest.fixture
def upstream() -> MockUpstream:
    """A fresh mock AI/ML API and CDN (journal and scenario queue empty)."""
    return mock_upstream()


def generations(upstream: MockUpstream) -> int:
    """How many ``POST /v1/tts`` calls (billed generations) the mock received."""
    return sum(entry["route"] == "tts" for entry in upstream.journal)


class _RunningApp(httpx.ASGITransport):
    """``httpx.ASGITransport`` that starts the app's lifespan before its first
    request, as a server would (``ASGITransport`` itself never runs it), and keeps the
    ASGI messages the app sends (:func:`last_response`)."""

    def __init__(self, app: Starlette, stack: contextlib.AsyncExitStack) -> None:
        super().__init__(self._recording)
        self.shim_app = app
        self.sent: list[Message] = []
        self._stack = stack
        self._started = False

    async def _recording(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def record(message: Message) -> None:
            self.sent.append(message)
            await send(message)

        await self.shim_app(scope, receive, record)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._started:
            self._started = True
            app = self.shim_app
            await self._stack.enter_async_context(app.router.lifespan_context(app))
        return await super().handle_async_request(request)


def sent_bodies(upstream: MockUpstream) -> list[Any]:
    """The JSON bodies the shim posted to ``/v1/tts``, oldest first."""
    return [entry["json"] for entry in upstream.requests]


ShimFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def shim(upstream: MockUpstream) -> AsyncIterator[ShimFactory]:
    """``shim(**config)`` -> an ``httpx.AsyncClient`` on a shim app in front of
    ``upstream``; the app starts with the client's first request."""
    async with contextlib.AsyncExitStack() as stack:

        def factory(**settings: Any) -> httpx.AsyncClient:
            settings.setdefault("max_retry_wait", 0.01)
            settings.setdefault("cache", False)  # a test that wants one asks for it
            settings.setdefault("upstream_url", upstream.url)
            app = create_app(Config(**settings))
            client = httpx.AsyncClient(
                transport=_RunningApp(app, stack),
                base_url="http://shim",
                headers={"authorization": f"Bearer {CLIENT_TOKEN}"},
            )
            stack.push_async_callback(client.aclose)
            return client

        yield factory


def last_response(client: httpx.AsyncClient) -> tuple[Message, list[Message]]:
    """The ASGI start message and body messages of the last response the shim behind a
    ``shim()`` client sent."""
    transport = client._transport
    assert isinstance(transport, _RunningApp)
    sent = transport.sent
    begins = [i for i, message in enumerate(sent) if message["type"] == "http.response.start"]
    start, *rest = sent[begins[-1] :]
    return start, [message for message in rest if message["type"] == "http.response.body"]


def inline_audio(audio: bytes, prefix: str = "") -> dict[str, Any]:
    """A scenario step: a generation reply carrying ``audio`` inline, base64-encoded
    (after ``prefix``, such as a ``data:`` URL's), so all of it arrives at once."""
    return {"status": 200, "body": {"audio": prefix + base64.b64encode(audio).decode()}}


Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """Every sample of a ``/metrics`` text by its name (``..._total``, ``..._bucket``...),
    read by prometheus_client's own parser."""
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), sample.value))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels``."""
    return sum(
        value
        for found, value in samples.get(name, [])
        if all(found.get(k) == v for k, v in labels.items())
    )


def state_of(client: httpx.AsyncClient) -> State:
    """The running shim's state behind a ``shim()`` client (after its first request)."""
    transport = client._transport
    assert isinstance(transport, _RunningApp)
    state: State = transport.shim_app.state.shim
    return state
