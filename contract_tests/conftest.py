"""Contract tests: the real ``openai`` SDK and the AI/ML API's documents, held to the shim.

``sdk/`` is the OpenAI side (what the SDK, sync and async, sends and accepts);
``upstream/`` is the AI/ML side (what the shim sends to ``POST /v1/tts``, and every reply
the documents describe). The servers come from the package's own pytest plugin
(``tts_mock``, ``tts_shim``, ``tts_shim_factory``), the same fixtures users get.

Live mode: ``pytest contract_tests --live`` runs the cases marked ``live`` against the
real AI/ML API through a shim that holds ``AIMLAPI_KEY``; every other case needs the
mock's scenario or journal and is deselected (without a key, the live cases that need
the API are skipped, saying so). Without ``--live`` nothing leaves loopback.
A live case declares what it costs with ``@pytest.mark.live(billed=N)``: N generations
of :data:`LIVE_TEXT`. Offline, the mock's journal checks that declaration after every
such case, so the cost stated in docs/testing.md cannot silently grow.
"""

from __future__ import annotations

import inspect
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from shim.testing import MockUpstream, ShimServer, decode_audio

HERE = Path(__file__).resolve().parent

#: The real API's root, used only with ``--live``.
AIMLAPI_URL = "https://api.aimlapi.com"
#: What every billed live case speaks: short, so a live run costs next to nothing.
LIVE_TEXT = "Hi"
#: AI/ML's price for ``tts-1-hd``, US dollars per 1,000 characters of input.
PRICE_PER_1K_CHARACTERS = 0.030
_LIVE_PLAN = pytest.StashKey[int]()
_LIVE_BILLED = pytest.StashKey[list[int]]()
_OFFLINE_ONLY = pytest.StashKey[int]()

#: The installed SDK's version, for cases that depend on it.
SDK_VERSION = tuple(int(part) for part in openai.__version__.split(".")[:3] if part.isdigit())
#: The oldest ``openai`` release the README claims to support: the first whose
#: ``audio.speech.create`` takes ``stream_format`` (``instructions`` came in 1.68.0).
OLDEST_SDK = (1, 91, 0)


def sdk_at_least(version: tuple[int, ...], feature: str) -> pytest.MarkDecorator:
    """Skip a case the installed SDK is too old for, naming the version it needs."""
    wanted = ".".join(map(str, version))
    return pytest.mark.skipif(
        version > SDK_VERSION,
        reason=f"needs openai>={wanted} ({feature}); installed {openai.__version__}",
    )


# -- live mode --------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tts-shim contract tests")
    group.addoption(
        "--live",
        action="store_true",
        default=False,
        help=(
            "run the contract cases marked 'live' against the real AI/ML API through the "
            "shim (needs AIMLAPI_KEY; billed, see docs/testing.md); deselect all others"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    # The ``live`` marker itself is registered in pyproject.toml.
    config.stash[_LIVE_BILLED] = []


def is_live(config: pytest.Config) -> bool:
    return bool(config.getoption("--live", default=False))


def billed(item: pytest.Item) -> int | None:
    """What a live case declares it pays for, or ``None`` for an offline-only case."""
    marker = item.get_closest_marker("live")
    if marker is None:
        return None
    count = marker.kwargs.get("billed", 0)
    if not isinstance(count, int) or count < 0:
        raise pytest.UsageError(f"{item.nodeid}: live(billed=...) must be a count, not {count!r}")
    return count


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if HERE in Path(str(item.path)).parents]
    config.stash[_LIVE_PLAN] = sum(billed(item) or 0 for item in ours)
    if not is_live(config):
        return
    # Live: the offline-only cases (they need the mock's scenario or journal) go.
    offline_only = [item for item in ours if billed(item) is None]
    if offline_only:
        config.hook.pytest_deselected(items=offline_only)
        dropped = set(offline_only)
        items[:] = [item for item in items if item not in dropped]
    config.stash[_OFFLINE_ONLY] = len(offline_only)
    if not os.environ.get("AIMLAPI_KEY", "").strip():
        no_key = pytest.mark.skip(
            reason="--live needs AIMLAPI_KEY, an AI/ML API key, in the environment; it is not set"
        )
        for item in ours:
            uses = getattr(item, "fixturenames", ())
            if billed(item) is not None and ("tts_shim" in uses or "aimlapi" in uses):
                item.add_marker(no_key)


def pytest_report_header(config: pytest.Config) -> str | None:
    if not is_live(config):
        return None
    key = "set" if os.environ.get("AIMLAPI_KEY", "").strip() else "NOT set: live cases skip"
    return (
        f"live mode: the cases marked 'live' run against {AIMLAPI_URL} through the shim "
        f"(AIMLAPI_KEY {key}); offline-only cases are deselected"
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not is_live(config):
        return
    planned = config.stash.get(_LIVE_PLAN, 0)
    spent = sum(config.stash.get(_LIVE_BILLED, []))

    def cost(generations: int) -> str:
        chars = generations * len(LIVE_TEXT)
        dollars = chars * PRICE_PER_1K_CHARACTERS / 1000
        return f"{generations} generations of {LIVE_TEXT!r}, {chars} characters, ${dollars:.5f}"

    terminalreporter.write_sep("-", "live AI/ML API cost")
    terminalreporter.write_line(
        f"{config.stash.get(_OFFLINE_ONLY, 0)} offline-only cases deselected "
        "(they need the mock's scenario or journal)"
    )
    terminalreporter.write_line(f"the collected live cases pay for {cost(planned)}")
    terminalreporter.write_line(
        f"this run paid for {cost(spent)} (at ${PRICE_PER_1K_CHARACTERS:.3f} per 1K "
        "characters, tts-1-hd; twice that at most, should failed generations be billed)"
    )


class _LiveUpstream(MockUpstream):
    """Stands in for the mock in live mode: there is no journal or scenario to use."""

    def _refuse(self) -> Any:
        pytest.fail(
            "this case reads the mock's journal or scenario, which the real API does not "
            "have: leave it unmarked (offline-only) or drop the mock-only checks",
            pytrace=False,
        )

    @property
    def journal(self) -> list[dict[str, Any]]:
        return self._refuse()  # type: ignore[no-any-return]

    def scenario(self, steps: Any) -> None:
        self._refuse()

    def reset(self) -> None:
        return None


@pytest.fixture(scope="session")
def _live_shim() -> Iterator[ShimServer]:
    from mockserver import BackgroundServer
    from shim.app import create_app
    from shim.config import Config

    key = os.environ.get("AIMLAPI_KEY", "").strip()
    if not key:
        pytest.skip("--live needs AIMLAPI_KEY, an AI/ML API key, in the environment")
    config = Config(upstream_url=AIMLAPI_URL, upstream_key=key)
    app = create_app(config)
    with BackgroundServer(app) as server:
        yield ShimServer(server.url, config, _LiveUpstream(AIMLAPI_URL, None), app)


@pytest.fixture
def tts_shim(request: pytest.FixtureRequest, tts_mock: MockUpstream) -> ShimServer:
    """The plugin's shim on the mock; with ``--live``, a shim on the real AI/ML API."""
    if is_live(request.config):
        shim: ShimServer = request.getfixturevalue("_live_shim")
        return shim
    shim = request.getfixturevalue("_tts_shim_session")
    return shim


@pytest.fixture
def aimlapi(request: pytest.FixtureRequest, tts_mock: MockUpstream) -> SimpleNamespace:
    """The AI/ML API itself, for cases that call ``/v1/tts`` directly: the mock's root and
    a dummy key offline; with ``--live``, the real root and ``AIMLAPI_KEY``."""
    if is_live(request.config):
        return SimpleNamespace(url=AIMLAPI_URL, key=os.environ["AIMLAPI_KEY"].strip())
    return SimpleNamespace(url=tts_mock.url, key="sk-test-key-0000")


@pytest.fixture(autouse=True)
def _live_cost_is_declared(request: pytest.FixtureRequest) -> Iterator[None]:
    """A live case makes exactly the billed generations it declares, each of LIVE_TEXT."""
    count = billed(request.node)
    if count is None:
        yield
        return
    if is_live(request.config):
        request.config.stash[_LIVE_BILLED].append(count)
        yield
        return
    if "tts_mock" not in request.fixturenames:
        assert count == 0, f"billed={count}, but the case uses no (mock) upstream"
        yield
        return
    mock: MockUpstream = request.getfixturevalue("tts_mock")
    yield
    # A generation is billed when it succeeds; refusals (a bad body, a bad key) are not.
    texts = [
        entry["json"]["text"]
        for entry in mock.journal
        if entry["route"] == "tts" and 200 <= (entry["status"] or 0) < 300
    ]
    assert texts == [LIVE_TEXT] * count, (
        f"a live case must make exactly billed={count} generation(s) of {LIVE_TEXT!r} "
        f"(the cost in docs/testing.md); it made {texts!r}"
    )


# -- the SDK, sync and async behind one face --------------------------------------------


#: One TLS context for the HTTP clients the suite makes (``verify=LOOPBACK_TLS``). Offline
#: every peer is plain HTTP on loopback, but an httpx client made with the defaults loads a
#: CA bundle (~40 ms of CPU), and the suite makes hundreds: the SDK's above all. It is
#: Python's default verifying context (the system's CAs), so ``--live`` runs use it too.
LOOPBACK_TLS = ssl.create_default_context()


def sdk_http_client(kind: str = "sync") -> Any:
    """The HTTP client the SDK would make for itself (its defaults: timeouts, limits,
    redirects), on the suite's one TLS context; ``kind`` is ``sync`` or ``async``."""
    cls = openai.DefaultHttpxClient if kind == "sync" else openai.DefaultAsyncHttpxClient
    return cls(verify=LOOPBACK_TLS)


class SDK:
    """One face over ``openai.OpenAI`` and ``openai.AsyncOpenAI``, so each contract
    case runs against both: ``await sdk.call("audio.speech.create", ...)``."""

    def __init__(self, kind: str, shim: ShimServer, **options: Any) -> None:
        self.kind = kind
        options.setdefault("api_key", "sk-test-key-0000")
        options.setdefault("max_retries", 0)
        options.setdefault("http_client", sdk_http_client(kind))
        cls = openai.OpenAI if kind == "sync" else openai.AsyncOpenAI
        self.client: Any = cls(base_url=shim.base_url, **options)

    def method(self, path: str) -> Any:
        target = self.client
        for name in path.split("."):
            target = getattr(target, name)
        return target

    async def call(self, path: str, *args: Any, **params: Any) -> Any:
        result = self.method(path)(*args, **params)
        return await result if inspect.isawaitable(result) else result

    async def speech(self, **params: Any) -> bytes:
        params.setdefault("model", "tts-1-hd")
        params.setdefault("voice", "coral")
        response = await self.call("audio.speech.create", **params)
        content: bytes = response.content
        return content

    async def aclose(self) -> None:
        result = self.client.close()
        if inspect.isawaitable(result):
            await result


@pytest.fixture(params=["sync", "async"])
async def sdk(request: pytest.FixtureRequest, tts_shim: ShimServer) -> Any:
    client = SDK(request.param, tts_shim)
    yield client
    await client.aclose()


def decode(data: bytes, fmt: str) -> tuple[str, int, float]:
    """(codec, sample rate, seconds) of encoded audio (:func:`shim.testing.decode_audio`)."""
    audio = decode_audio(data, fmt)
    return audio.codec, audio.sample_rate, audio.seconds


@pytest.fixture
def journal(tts_shim: ShimServer) -> Callable[..., list[dict[str, Any]]]:
    """``journal(route=None)``: the mock's journal, all of it or one route's entries."""
    return lambda route=None: [
        e for e in tts_shim.upstream.journal if route is None or e["route"] == route
    ]


def delta_audio(delta: Any) -> Any:
    """A streamed chunk's ``delta.audio``, however the installed SDK exposes it.

    openai>=3.25.0 types it (``ChoiceDeltaAudio``); older releases keep it as an extra
    field, a plain dict, and have no attribute at all when a chunk carries none.
    """
    audio = getattr(delta, "audio", None)
    if isinstance(audio, dict):
        fields = {"id": None, "data": None, "transcript": None, "expires_at": None}
        return SimpleNamespace(**{**fields, **audio})
    return audio
