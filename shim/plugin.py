"""pytest plugin: a mock AI/ML API, and a shim in front of it, for your own tests.

Installed with the package (``pytest11`` entry point ``tts_shim``), so after
``pip install tts-shim`` a test can write::

    def test_my_app_speaks(tts_shim):
        client = openai.OpenAI(base_url=tts_shim.base_url, api_key="test")
        client.audio.speech.create(model="tts-1-hd", voice="coral", input="Hi")
        assert tts_shim.upstream.requests[-1]["json"]["text"] == "Hi"

Fixtures
    ``tts_mock``
        :class:`~shim.testing.MockUpstream`: the mock AI/ML API and CDN on loopback
        (``url``, ``requests``, ``downloads``, ``journal``, ``scenario(steps)``).
    ``tts_shim``
        :class:`~shim.testing.ShimServer`: a shim on loopback in front of ``tts_mock``
        (``base_url`` ends in ``/v1``; ``upstream`` is the ``tts_mock`` handle). Clients'
        bearer tokens pass through to the mock, which accepts any. It never sleeps on an
        upstream ``Retry-After`` (``max_retry_wait=0``): a 429 reaches the client at once.
    ``tts_shim_factory``
        ``tts_shim_factory(**settings)`` starts another shim, with other
        :class:`shim.Config` settings (a server key, retries, timeouts), in front of
        ``tts_mock``; it stops when the test ends. It too has ``max_retry_wait=0`` and
        ``cache=False`` unless given.
    ``aimlapi_mock``
        The same handle, for code that calls the AI/ML API itself with httpx: its
        requests to ``https://api.aimlapi.com`` and ``https://cdn.aimlapi.com`` are
        answered in-process, without sockets (:func:`shim.testing.aimlapi_mock`;
        needs respx).

Scope and reset
    The loopback servers start once per test session (per worker under
    pytest-xdist), on the first test that asks for them, and stop at its end. The
    handles are function-scoped: the journal and the scenario queue are emptied before
    and after every test, so a step one test queued and did not use never leaks into the
    next. ``aimlapi_mock`` builds a fresh mock app for each test.

Marker
    ``@pytest.mark.tts_mock(steps=[...], shape=...)`` prepares the mock for one test:
    ``steps`` (a list of scenario steps, or one step as a dict; also accepted as the only
    positional argument) are queued first, then ``shape`` makes every later generation
    answer in that success shape (``url-object``, ``url-string``, ``binary`` or
    ``metadata-only``). The closest marker wins (a function's over its class's or
    module's). Bad arguments fail the test at setup with a message saying what is wrong.

Importing this module costs little: the servers' modules are imported when a fixture
is first used, so having the package installed does not slow other projects' test runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

from shim.testing import MockUpstream, ShimServer

if TYPE_CHECKING:
    from mockserver import BackgroundServer

__all__ = ["MockUpstream", "ShimServer"]

MARKER = "tts_mock"
_MARKER_KEYS = ("steps", "shape")
#: Fixtures that apply the marker; a test marked without any of them is an error.
_MARKER_FIXTURES = ("tts_mock", "aimlapi_mock")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tts_mock(steps=[...], shape=None): queue scenario steps on the mock AI/ML API for "
        "this test (fixtures tts_mock, tts_shim, tts_shim_factory, aimlapi_mock)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(MARKER) is None:
        return
    fixtures = getattr(item, "fixturenames", ())
    if not any(name in fixtures for name in _MARKER_FIXTURES):
        pytest.fail(
            f"@pytest.mark.{MARKER} has no effect here: the test uses none of the fixtures "
            "tts_mock, tts_shim, tts_shim_factory or aimlapi_mock",
            pytrace=False,
        )


def marker_steps(node: pytest.Item) -> list[dict[str, Any]]:
    """The scenario steps the closest ``tts_mock`` marker asks for, checked.

    Calls :func:`pytest.fail` with a clear message for bad arguments.
    """
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return []
    where = f"@pytest.mark.{MARKER}"

    def bad(problem: str) -> Any:
        pytest.fail(f"{where}: {problem}", pytrace=False)

    unknown = sorted(set(marker.kwargs) - set(_MARKER_KEYS))
    if unknown:
        bad(f"unknown argument(s) {', '.join(unknown)}; expected steps=[...] and/or shape=...")
    if len(marker.args) > 1 or (marker.args and "steps" in marker.kwargs):
        bad("give the steps once, as the only positional argument or as steps=[...]")
    raw = marker.kwargs.get("steps", marker.args[0] if marker.args else [])
    if isinstance(raw, Mapping):
        raw = [raw]
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)):
        bad(f"steps must be a list of step dicts, got {type(raw).__name__}")

    from mockserver.config import RESPONSE_SHAPES
    from mockserver.scenario import MAX_TIMES, ScenarioError, parse_step

    steps: list[dict[str, Any]] = []
    for index, step in enumerate(raw):
        try:
            parse_step(step, f"steps[{index}]")
        except ScenarioError as exc:
            bad(str(exc))
        steps.append(dict(step))
    shape = marker.kwargs.get("shape")
    if shape is not None:
        if shape not in RESPONSE_SHAPES:
            bad(f"shape must be one of {', '.join(RESPONSE_SHAPES)}, got {shape!r}")
        steps.append({"shape": shape, "times": MAX_TIMES})
    return steps


def _start_shim(stack: ExitStack, mock: MockUpstream, **settings: Any) -> ShimServer:
    from mockserver import BackgroundServer
    from shim._http_guard import guarded
    from shim.app import create_app
    from shim.config import Config

    settings.setdefault("upstream_url", mock.url)
    # No cache unless a test asks (cache_dir=tmp_path, say): repeats must not leak
    # between tests or test runs.
    settings.setdefault("cache", False)
    # The mock's 429 says Retry-After: 1. A test shim does not sleep on it: the 429 goes
    # straight to the client (pass max_retry_wait=... to the factory to test waiting).
    settings.setdefault("max_retry_wait", 0.0)
    config = Config(**settings)
    app = create_app(config)
    # Served as `tts-shim serve` serves it: with its request-head cap and head timeout.
    served, guard = guarded(app, head_timeout=config.head_timeout)
    server: BackgroundServer = stack.enter_context(
        BackgroundServer(served, timeout_keep_alive=config.keep_alive_timeout, **guard)
    )
    return ShimServer(server.url, config, mock, app)


@pytest.fixture(scope="session")
def _tts_mock_session() -> Iterator[MockUpstream]:
    from mockserver import BackgroundServer, MockConfig
    from mockserver import create_app as create_mock_app

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
    """The mock AI/ML API on loopback: empty journal, the marker's steps queued."""
    mock = _tts_mock_session
    mock.reset()
    mock.scenario(marker_steps(request.node))
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


@pytest.fixture
def aimlapi_mock(request: pytest.FixtureRequest) -> Iterator[MockUpstream]:
    """httpx requests to the AI/ML API and its CDN, answered in-process by a fresh mock
    (with the marker's steps queued). Needs respx."""
    from shim.testing import aimlapi_mock as route_to_mock

    with route_to_mock(steps=marker_steps(request.node)) as upstream:
        yield upstream
