"""The mock AI/ML API and CDN on loopback, for tests of the shim.

The shim's upstream client is aiohttp, which only talks over sockets, so every mock a
test puts behind a shim is served by a real uvicorn. Starting a server costs ~2 ms and
stopping one ~100 ms, so each test process has one, started on first use, and each
mock gets its own path prefix on it: ``http://127.0.0.1:<port>/m/<n>`` is the API root
and the CDN root of mock ``n``. The prefix is taken off before the mock sees the
request, so its journal holds the paths the shim sent (``/v1/tts``).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import weakref
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from mockserver import BackgroundServer, MockConfig
from mockserver import create_app as create_mock_app
from shim.testing import MockUpstream

__all__ = ["LoopbackUpstreams", "mock_upstream"]


class LoopbackUpstreams:
    """One loopback server for many mock apps, each under ``/m/<n>``."""

    def __init__(self) -> None:
        # Weak: a mock is served for as long as its test holds it.
        self._apps: weakref.WeakValueDictionary[str, ASGIApp] = weakref.WeakValueDictionary()
        self._numbers = itertools.count(1)
        self._server = BackgroundServer(self._dispatch, lifespan="off", interface="asgi3").start()

    def mount(self, make: Callable[[str], ASGIApp]) -> tuple[str, ASGIApp]:
        """Serve ``make(root_url)`` under a new prefix; return the root URL and the app."""
        prefix = f"/m/{next(self._numbers)}"
        url = self._server.url + prefix
        app = self._apps[prefix] = make(url)
        return url, app

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        prefix = "/".join(path.split("/", 3)[:3])  # "/m/7/v1/tts" -> "/m/7"
        app = self._apps.get(prefix)
        if app is None or scope["type"] != "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"no such mock"})
            return
        raw = scope.get("raw_path")
        inner = {
            **scope,
            "path": path[len(prefix) :] or "/",
            "raw_path": raw[len(prefix) :] if isinstance(raw, bytes) else None,
        }
        await app(inner, receive, send)


_lock = threading.Lock()
_upstreams: LoopbackUpstreams | None = None


def _shared() -> LoopbackUpstreams:
    global _upstreams
    with _lock:
        if _upstreams is None:
            _upstreams = LoopbackUpstreams()
        return _upstreams


def mock_upstream(config: MockConfig | None = None) -> MockUpstream:
    """A fresh mock AI/ML API on this process's loopback server, its audio links on its
    own root (an origin the shim trusts as its upstream's)."""
    config = config or MockConfig()
    url, app = _shared().mount(
        lambda url: create_mock_app(dataclasses.replace(config, cdn_url=url))
    )
    return MockUpstream(url, app)
