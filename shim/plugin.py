"""pytest plugin: a mock AI/ML API, and a shim in front of it, on loopback.

Installed with the package (``pytest11`` entry point ``tts_shim``)::

    def test_my_app_speaks(tts_shim):
        client = openai.OpenAI(base_url=tts_shim.base_url, api_key="test")
        client.audio.speech.create(model="tts-1-hd", voice="coral", input="Hi")
        assert tts_shim.upstream.requests[-1]["json"]["text"] == "Hi"

The servers start once per session (real uvicorn servers on 127.0.0.1, in a
background thread); the journal and scenario queue are cleared around every test,
so tests stay independent. ``@pytest.mark.tts_mock(steps=[...])`` queues scenario
steps for one test. ``tts_shim_factory(**settings)`` starts a shim with other
settings (server key, retries, timeouts) for one test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from starlette.types import ASGIApp

from mockserver import BackgroundServer, MockConfig
from mockserver import create_app as create_mock_app
from shim.app import create_app
from shim.config import Config

__all__ = ["MockUpstream", "ShimServer"]


@dataclasses.dataclass
class MockUpstream:
    """A running mock of the AI/ML API and its CDN."""

    #: Root URL, e.g. ``http://127.0.0.1:54321``; the API is at ``url + "/v1/tts"``.
    url: str
    app: ASGIApp

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The journal: every API and CDN request so far, oldest first."""
        entries: list[dict[str, Any]] = self.app.state.journal.entries()  # type: ignore[attr-defined]
        return entries

    def scenario(self, steps: list[dict[str, Any]]) -> None:
        """Queue steps the next requests consume (see the README's scenario API)."""
        self.app.state.scenario.push(steps)  # type: ignore[attr-defined]

    def reset(self) -> None:
        """Forget the journal and any queued steps."""
        self.app.state.journal.clear()  # type: ignore[attr-defined]
        self.app.state.scenario.clear()  # type: ignore[attr-defined]


@dataclasses.dataclass
class ShimServer:
    """A running shim whose upstream is :attr:`upstream`."""

    url: str
    config: Config
    upstream: MockUpstream
    #: The shim's ASGI app, for tests that look at its state (``app.state.shim``).
    app: ASGIApp

    @property
    def base_url(self) -> str:
        """What to pass as ``openai.OpenAI(base_url=...)``."""
        return self.url + "/v1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tts_mock(steps): queue scenario steps on the mock AI/ML API for this test",
    )


def _start_shim(stack: ExitStack, mock: MockUpstream, **settings: Any) -> ShimServer:
    settings.setdefault("upstream_url", mock.url)
    config = Config(**settings)
    app = create_app(config)
    server = stack.enter_context(BackgroundServer(app))
    return ShimServer(server.url, config, mock, app)


@pytest.fixture(scope="session")
def _tts_mock_session() -> Iterator[MockUpstream]:
    app = create_mock_app(MockConfig())
    with BackgroundServer(app) as server:
        yield MockUpstream(server.url, app)


@pytest.fixture(scope="session")
def _tts_shim_session(_tts_mock_session: MockUpstream) -> Iterator[ShimServer]:
    with ExitStack() as stack:
        yield _start_shim(stack, _tts_mock_session)


@pytest.fixture
def tts_mock(
    _tts_mock_session: MockUpstream, request: pytest.FixtureRequest
) -> Iterator[MockUpstream]:
    """The mock AI/ML API, with an empty journal and the marker's steps queued."""
    mock = _tts_mock_session
    mock.reset()
    marker = request.node.get_closest_marker("tts_mock")
    if marker is not None:
        steps = marker.kwargs.get("steps", marker.args[0] if marker.args else [])
        mock.scenario(list(steps))
    yield mock
    mock.reset()


@pytest.fixture
def tts_shim(_tts_shim_session: ShimServer, tts_mock: MockUpstream) -> ShimServer:
    """A shim on loopback in front of ``tts_mock``; clients' bearer tokens pass through."""
    return _tts_shim_session


@pytest.fixture
def tts_shim_factory(tts_mock: MockUpstream) -> Iterator[Callable[..., ShimServer]]:
    """``tts_shim_factory(**settings)`` starts a shim with other :class:`shim.Config`
    settings, in front of ``tts_mock``, for this test only."""
    with ExitStack() as stack:
        yield lambda **settings: _start_shim(stack, tts_mock, **settings)
