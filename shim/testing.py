"""Helpers for testing code that talks to the shim or to the AI/ML API, offline.

Two ways to put the bundled mock of the AI/ML API (:mod:`mockserver`) under your code:

* the pytest fixtures (:mod:`shim.plugin`: ``tts_mock``, ``tts_shim``,
  ``tts_shim_factory``, ``aimlapi_mock``), which run real servers on loopback;
* :func:`aimlapi_mock`, which needs no socket at all: it routes your **httpx**
  traffic for ``https://api.aimlapi.com`` and ``https://cdn.aimlapi.com`` to the mock
  application in-process, through `respx <https://lundberg.github.io/respx/>`_::

      from shim.testing import aimlapi_mock

      def test_my_client_fetches_the_audio():
          with aimlapi_mock() as upstream:
              upstream.scenario([{"status": 429}])  # the first call is rate limited
              audio = my_code_that_calls_aimlapi("Hi")  # uses httpx, sync or async
          assert upstream.requests[-1]["json"]["text"] == "Hi"

Both hand out the same :class:`MockUpstream` handle (journal and scenario queue), and
both run the same mock code: there is no second implementation to drift.

Importing this module is cheap: the mock, Starlette, httpx and respx are imported only
when a helper is used. Two helpers need a package that ``pip install tts-shim`` does not
bring: :func:`aimlapi_mock` needs respx (``pip install 'tts-shim[testing]'``), and
:func:`decode_audio` with ``samples=True`` needs numpy (``pip install numpy``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import io
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx
    import numpy as np
    import numpy.typing as npt
    from anyio.from_thread import BlockingPortal
    from starlette.types import ASGIApp

    from mockserver import MockConfig
    from shim.config import Config

__all__ = [
    "AIMLAPI_URL",
    "CDN_URL",
    "DecodedAudio",
    "MockUpstream",
    "ShimServer",
    "aimlapi_mock",
    "decode_audio",
    "free_port",
]

#: The AI/ML API root and its CDN, the hosts :func:`aimlapi_mock` answers for.
AIMLAPI_URL = "https://api.aimlapi.com"
CDN_URL = "https://cdn.aimlapi.com"


@dataclasses.dataclass
class MockUpstream:
    """A mock of the AI/ML API and its CDN, and what it has seen.

    ``url`` is the API root (``http://127.0.0.1:<port>`` for the loopback fixtures,
    ``https://api.aimlapi.com`` under :func:`aimlapi_mock`); the generation endpoint
    is ``url + "/v1/tts"``. ``app`` is the mock's ASGI application.
    """

    url: str
    app: ASGIApp

    @property
    def journal(self) -> list[dict[str, Any]]:
        """Every request the mock received (API and CDN), oldest first.

        Each entry is a dict: ``method``, ``path``, ``query``, ``route`` (``"tts"`` for
        ``POST /v1/tts``, ``"audio"`` for a CDN download, ``"other"``), ``headers``
        (lower-case names, keys masked to their last four characters), ``json`` (the
        parsed body or ``None``), ``status`` (the reply's) and ``step`` (the scenario
        step it used, or ``None``). The entries are copies: keep or change them freely.
        """
        entries: list[dict[str, Any]] = self.app.state.journal.entries()  # type: ignore[attr-defined]
        return entries

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The requests to the API itself (CDN downloads left out), oldest first.

        So ``requests[-1]["json"]`` is the last body your code (or the shim) posted to
        ``/v1/tts``, even though a download of the audio followed it.
        """
        return [entry for entry in self.journal if entry["route"] != "audio"]

    @property
    def downloads(self) -> list[dict[str, Any]]:
        """The audio downloads from the CDN, oldest first."""
        return [entry for entry in self.journal if entry["route"] == "audio"]

    def scenario(self, steps: Iterable[Mapping[str, Any]]) -> None:
        """Queue steps that the next requests consume, after any already queued.

        A step is a dict such as ``{"status": 429}``, ``{"shape": "url-string"}`` or
        ``{"route": "audio", "fault": "reset"}`` (the README's "Scenarios" lists every
        key). Raises :class:`mockserver.ScenarioError`, naming the step and key, for a
        malformed one; then nothing is queued.
        """
        self.app.state.scenario.push(list(steps))  # type: ignore[attr-defined]

    def reset(self) -> None:
        """Forget the journal and any queued steps."""
        self.app.state.journal.clear()  # type: ignore[attr-defined]
        self.app.state.scenario.clear()  # type: ignore[attr-defined]


@dataclasses.dataclass
class ShimServer:
    """A running shim whose upstream is :attr:`upstream`."""

    #: Root URL, e.g. ``http://127.0.0.1:54321``.
    url: str
    config: Config
    upstream: MockUpstream
    #: The shim's ASGI app, for tests that look at its state (``app.state.shim``).
    app: ASGIApp

    @property
    def base_url(self) -> str:
        """What to pass as ``openai.OpenAI(base_url=...)``: the root plus ``/v1``."""
        return self.url + "/v1"


# -- small helpers for tests ------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class DecodedAudio:
    """What a real decoder (FFmpeg, through PyAV) made of some audio."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    #: Samples per channel.
    frames: int
    #: The first channel as floats in [-1, 1), when asked for (needs numpy, which the
    #: package does not depend on).
    samples: npt.NDArray[np.float64] | None = None

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def decode_audio(data: bytes, fmt: str, *, samples: bool = False) -> DecodedAudio:
    """Decode ``data`` (in OpenAI format ``fmt``; raw ``pcm``/``pcm16`` is read as 24 kHz
    s16le mono, as documented) with PyAV. Raises PyAV's error if it is not audio.

    ``samples=True`` also returns the samples as floats (:attr:`DecodedAudio.samples`),
    which needs numpy: without it, an ``ImportError`` that says so, before decoding.
    """
    import av

    if samples:
        try:
            import numpy as np
        except ImportError as exc:
            raise ImportError(
                "shim.testing.decode_audio(samples=True) needs numpy: pip install numpy"
            ) from exc

    options: dict[str, Any] = {}
    if fmt in ("pcm", "pcm16"):
        options = {"format": "s16le", "options": {"sample_rate": "24000", "ch_layout": "mono"}}
    pieces = []
    frames = 0
    with av.open(io.BytesIO(data), **options) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            frames += frame.samples
            if samples:
                pieces.append(frame.to_ndarray())
        codec = stream.codec_context
        decoded = DecodedAudio(
            container.format.name, codec.name, codec.sample_rate, codec.layout.nb_channels, frames
        )
    if samples:
        # Planar formats give (channels, n); packed ones (1, n * channels).
        first = np.concatenate([piece[0] for piece in pieces]).astype(np.float64)
        if pieces and pieces[0].dtype.kind == "i":
            first /= float(np.iinfo(pieces[0].dtype).max) + 1
        decoded.samples = first
    return decoded


# -- aimlapi_mock: respx routes into the in-process mock -------------------------------

_LOOPBACK = ("127.0.0.1", "localhost", "::1")

#: True while respx resolves a request from an async client (see ``_router_class``).
_ASYNC_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tts_shim_async_request", default=False
)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


class _Forwarder:
    """respx side effect: send the request to the mock app, from sync or async code.

    Async clients are served in their own event loop. A sync client may be called from
    a thread whose loop is busy running the caller (a sync call inside an async test),
    so sync requests run on a private loop in a helper thread, started on first use.
    """

    def __init__(self, app: ASGIApp) -> None:
        import httpx

        self.transport = httpx.ASGITransport(app)
        self._stack = contextlib.ExitStack()
        self._portal: BlockingPortal | None = None
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> Any:
        if _ASYNC_REQUEST.get():
            return self._send(request)  # a coroutine: respx awaits it
        request.read()
        return self._portal_for_sync().call(self._send, request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        import httpx

        await request.aread()
        response = await self.transport.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=content,
            request=request,
            extensions=response.extensions,
        )

    def _portal_for_sync(self) -> BlockingPortal:
        from anyio.from_thread import start_blocking_portal

        with self._lock:
            if self._portal is None:
                self._portal = self._stack.enter_context(start_blocking_portal())
            return self._portal

    def close(self) -> None:
        with self._lock:
            self._portal = None
            self._stack.close()


def _router_class() -> Any:
    """A ``respx.MockRouter`` that tells side effects whether the client is async.

    respx awaits a side effect's coroutine only for async clients; for sync ones it
    must get a response. Both entry points are overridden to record which is which.
    """
    import respx

    class _Router(respx.MockRouter):
        def handler(self, request: httpx.Request) -> httpx.Response:
            token = _ASYNC_REQUEST.set(False)
            try:
                return super().handler(request)
            finally:
                _ASYNC_REQUEST.reset(token)

        async def async_handler(self, request: httpx.Request) -> httpx.Response:
            token = _ASYNC_REQUEST.set(True)
            try:
                return await super().async_handler(request)
            finally:
                _ASYNC_REQUEST.reset(token)

    return _Router


@contextlib.contextmanager
def aimlapi_mock(
    config: MockConfig | None = None,
    *,
    api_url: str = AIMLAPI_URL,
    cdn_url: str = CDN_URL,
    steps: Iterable[Mapping[str, Any]] = (),
    assert_all_mocked: bool = True,
) -> Iterator[MockUpstream]:
    """Route httpx requests for the AI/ML API and its CDN to a fresh in-process mock.

    Inside the ``with`` block every request an ``httpx.Client`` or
    ``httpx.AsyncClient`` sends to ``api_url`` or ``cdn_url`` (any path) is answered by
    :func:`mockserver.create_app` (built from ``config``, its audio links pointing at
    ``cdn_url``), with no socket. The handle's journal and scenario work as for the
    ``tts_mock`` fixture; ``steps`` are queued before the block runs.

    Requests to loopback addresses go through (the ``tts_shim`` fixture's servers are
    there). Requests to other hosts are left to any other respx router that is active;
    with none, they fail with respx's "not mocked" error, so nothing reaches the network
    by accident (``assert_all_mocked=False`` makes respx answer them with an empty 200
    instead).

    Limits: only httpx over its own transports is intercepted (respx patches httpcore).
    The shim's own upstream client is aiohttp, which respx does not patch: to test
    through a shim, use the ``tts_shim`` fixture (a shim in front of the ``tts_mock``
    server, both on loopback). Replies are buffered, not streamed.
    """
    try:
        import respx  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "shim.testing.aimlapi_mock needs respx: pip install 'tts-shim[testing]'"
        ) from exc
    from mockserver import MockConfig
    from mockserver import create_app as create_mock_app

    config = config or MockConfig()
    if config.cdn_url is None:
        config = dataclasses.replace(config, cdn_url=cdn_url)
    app = create_mock_app(config)
    upstream = MockUpstream(api_url.rstrip("/"), app)
    upstream.scenario(steps)

    forward = _Forwarder(app)
    router = _router_class()(assert_all_called=False, assert_all_mocked=assert_all_mocked)
    for url in dict.fromkeys((api_url, config.cdn_url or cdn_url)):
        scheme, host, port = _origin(url)
        router.route(scheme=scheme, host=host, port=port).mock(side_effect=forward)
    # Loopback is not the network: the plugin's own servers (tts_shim) stay reachable.
    router.route(host__in=_LOOPBACK).pass_through()
    try:
        with router:
            yield upstream
    finally:
        forward.close()
